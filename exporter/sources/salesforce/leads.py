"""The lead funnel's records, read whole or brought up to date since the last poll.

What the funnel is built from (`FunnelRecords`): the leads created or
converted in the window, and the older ones a Status change in the window
brought to a funnel stage; the window's Status changes (LeadHistory); the first
Task or Event of each lead created in the window (on the lead, or once it is
converted on its contact, where Salesforce moves its activities).

A full read (`read_all`: the first poll, one every `full_sync_interval`, and a
backfill) asks for all of it; the first touches of the window's new leads go
200 leads to a query, so most of a full read's calls are those. The polls in
between (`read_changes`) ask only what changed since the last, less the
overlap: leads by SystemModstamp, Status changes by CreatedDate, Tasks and
Events by CreatedDate, and by id the older leads a new change brought to a
stage. What has left the window is dropped, so the records are what a full
read gives, except that a deleted lead, a Task moved to another lead or one
created with an earlier CreatedDate (a data import) counts as it was until the
next full read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from exporter.sources.crm.pipeline import Lead, lead_moved_since
from exporter.sources.salesforce import fetch
from exporter.sources.salesforce.api import SalesforceApi

StatusChange = tuple[str, Any, Any, int]  # (lead id, old status, new status, when)


@dataclass(frozen=True)
class FunnelRecords:
    since: int  # the window's start: records are of what happened after it
    leads: dict[str, dict]  # Lead records by Id
    changes: dict[str, StatusChange]  # LeadHistory row Id -> the change
    touches: dict[str, int]  # lead created in the window -> its first Task or Event


def read_all(api: SalesforceApi, since: int, statuses: dict[str, tuple[str, ...]]
             ) -> FunnelRecords:
    leads = {fetch.text(r, "Id"): r for r in fetch.leads_since(api, since)}
    changes = dict(fetch.status_changes(api, since))
    _add_reached(api, leads, set(_reached(changes, statuses)))
    new = {lead_id: record for lead_id, record in leads.items() if _created(record) > since}
    touches = fetch.first_touches(api, list(new))
    # Converting a lead moves its activities to its contact.
    contacts = {_contact(r): lead_id for lead_id, r in new.items() if _contact(r)}
    _touch(touches, new, contacts, fetch.activities_on(api, sorted(contacts), since))
    return FunnelRecords(since, leads, changes, touches)


def read_changes(api: SalesforceApi, held: FunnelRecords, since: int, changed_after: int,
                 statuses: dict[str, tuple[str, ...]]) -> FunnelRecords:
    """`held` brought to a window starting at `since`, with what changed after
    `changed_after` (the last read, less the overlap)."""
    changes = {row_id: change for row_id, change in held.changes.items() if change[3] > since}
    changes.update(fetch.status_changes(api, max(since, changed_after)))
    leads = dict(held.leads)
    for record in fetch.leads_modified(api, changed_after):
        leads[fetch.text(record, "Id")] = record
    reached = set(_reached(changes, statuses))
    leads = {lead_id: r for lead_id, r in leads.items()
             if _in_window(r, since) or lead_id in reached}
    _add_reached(api, leads, reached)
    new = {lead_id: record for lead_id, record in leads.items() if _created(record) > since}
    touches = {lead_id: at for lead_id, at in held.touches.items() if lead_id in new}
    _touch(touches, new, _owners(new), fetch.activities_since(api, changed_after))
    return FunnelRecords(since, leads, changes, touches)


def funnel(records: FunnelRecords, statuses: dict[str, tuple[str, ...]]) -> list[Lead]:
    """The leads that moved in the window, each with the times it reached a stage.

    MQL / SQL = the earliest Status change in the window to a status mapped to
    that stage; a lead created in the window whose first status is mapped
    reached that stage when it was created. Opportunity = ConvertedDate
    (midnight UTC). First touch = the earliest Task or Event on a lead created
    in the window, or on the contact it was converted to, from its creation on."""
    since = records.since
    reached = _reached(records.changes, statuses)
    first_change: dict[str, tuple[int, Any]] = {}  # lead -> (when, the status before)
    for lead_id, old, _, at in records.changes.values():
        if lead_id not in first_change or at < first_change[lead_id][0]:
            first_change[lead_id] = (at, old)
    result = []
    for lead_id, record in records.leads.items():
        created = _created(record)
        times = dict(reached.get(lead_id, {}))
        if created > since:
            # The status it was created with: before its first change, or its current one.
            initial = first_change[lead_id][1] if lead_id in first_change \
                else record.get("Status")
            for stage, values in statuses.items():
                if initial in values:
                    times[stage] = created
        converted = fetch.required(record, "ConvertedDate", fetch.timestamp) \
            if fetch.boolean(record, "IsConverted") else None
        lead = Lead(id=lead_id, created=created, mql=times.get("mql"), sql=times.get("sql"),
                    opportunity=converted,
                    first_touch=records.touches.get(lead_id) if created > since else None)
        if lead_moved_since(lead, since):
            result.append(lead)
    return result


def _reached(changes: dict[str, StatusChange], statuses: dict[str, tuple[str, ...]]
             ) -> dict[str, dict[str, int]]:
    """Lead -> {funnel stage: its earliest change to a status mapped to it}."""
    reached: dict[str, dict[str, int]] = {}
    for lead_id, _, new, at in changes.values():
        for stage, values in statuses.items():
            if new in values:
                times = reached.setdefault(lead_id, {})
                times[stage] = min(at, times.get(stage, at))
    return reached


def _add_reached(api: SalesforceApi, leads: dict[str, dict], reached: set[str]) -> None:
    """Read the leads that reached a stage in the window (`reached`) and are not held:
    older ones."""
    missing = sorted(reached - set(leads))
    leads.update({fetch.text(r, "Id"): r for r in fetch.leads_by_id(api, missing)})


def _owners(leads: dict[str, dict]) -> dict[str, str]:
    """WhoId -> the lead whose activity it is: the lead's own id, and a converted
    lead's contact."""
    owners = {lead_id: lead_id for lead_id in leads}
    owners.update({_contact(r): lead_id for lead_id, r in leads.items() if _contact(r)})
    return owners


def _touch(touches: dict[str, int], leads: dict[str, dict], owners: dict[str, str],
           activities: Iterator[tuple[str, int]]) -> None:
    """Lower each lead's first touch to the earliest of these activities on it or its
    contact, from its creation on (a contact may be older than the lead)."""
    for who, at in activities:
        lead_id = owners.get(who)
        if lead_id is not None and at >= _created(leads[lead_id]) \
                and at < touches.get(lead_id, at + 1):
            touches[lead_id] = at


def _contact(record: dict) -> str | None:
    """The contact a converted lead became; None for a lead not converted. Any other
    value is drift: skipping it would lose the lead's first touch unseen."""
    if record.get("ConvertedContactId") is None:
        return None
    return fetch.text(record, "ConvertedContactId")


def _created(record: dict) -> int:
    return fetch.required(record, "CreatedDate", fetch.timestamp)


def _in_window(record: dict, since: int) -> bool:
    """What fetch.leads_since asks: created after `since`, or converted on a later date."""
    if _created(record) > since:
        return True
    converted = fetch.timestamp(record.get("ConvertedDate"))
    return converted is not None and converted > fetch.timestamp(fetch.soql_date(since))
