"""The SOQL queries a poll sends, and the values read from their records.

- Stages: `OpportunityStage` (global in Salesforce: one list for every
  pipeline), its label and default probability (0-100) by API name.
- Opportunity fields: `sobjects/Opportunity/describe` says once whether the
  org has CurrencyIsoCode (multi-currency) and LastStageChangeDate.
- Deals: `Opportunity`, open or closed after a date; or changed after a moment.
- Leads (with the contact a converted one became): created after a moment or
  converted after a date, changed after a moment (SystemModstamp), and by id.
- Status changes: `LeadHistory` rows of Field 'Status' after a moment (OldValue
  and NewValue cannot be filtered in SOQL, so the statuses are matched here;
  the org must track the history of Lead Status).
- First touches: the earliest Task and the earliest Event of each lead, by
  aggregate SOQL. Aggregate queries have no further batches (at most 2,000
  groups), so lead ids go 200 to a query; the activities of given leads or
  contacts (a converted lead's moved to its contact) after a moment; or every
  Task and Event created after a moment.

Datetimes come as "2026-11-01T09:30:00.000+0000", dates as "2026-11-01"
(read as midnight UTC); SOQL takes them unquoted: 2026-11-01T09:30:00Z, 2026-11-01.
"""

from __future__ import annotations

import re
import time
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Iterator

from exporter.sources.base import UpstreamDataError, decimal_or_none
from exporter.sources.salesforce.api import SalesforceApi

IDS_PER_QUERY = 200  # ids in one IN (...) list: short URLs, and far below 2,000 groups
LEAD_FIELDS = ("Id", "CreatedDate", "Status", "IsConverted", "ConvertedDate", "ConvertedContactId")
DEAL_FIELDS = ("Id", "StageName", "Amount", "Probability", "CloseDate", "CreatedDate",
               "IsClosed", "IsWon")
OPTIONAL_DEAL_FIELDS = ("CurrencyIsoCode", "LastStageChangeDate")

_ID = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")


# -- SOQL literals ------------------------------------------------------------

def soql_datetime(at: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def soql_date(at: int) -> str:
    """The UTC date of a Unix time."""
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def soql_ids(ids: list[str]) -> str:
    """('id1','id2'): only well-formed record ids ever reach a query."""
    for record_id in ids:
        if not _ID.fullmatch(record_id):
            raise UpstreamDataError(f"salesforce: {record_id!r} is not a record id")
    return "(" + ",".join(f"'{record_id}'" for record_id in ids) + ")"


# -- queries ------------------------------------------------------------------

def stages(api: SalesforceApi) -> dict[str, dict]:
    """{ApiName: OpportunityStage record}, inactive stages too (deals may still sit there)."""
    fields = ("ApiName", "MasterLabel", "DefaultProbability", "IsClosed", "IsWon")
    soql = f"SELECT {', '.join(fields)} FROM OpportunityStage"
    return {text(r, "ApiName"): r for r in selected(api.query(soql), fields)}


def opportunity_fields(api: SalesforceApi) -> set[str]:
    """The names of Opportunity's fields in this org (and API version)."""
    describe = api.get(f"{api.data_path}/sobjects/Opportunity/describe")
    fields = describe.get("fields") if isinstance(describe, dict) else None
    if not isinstance(fields, list):
        raise UpstreamDataError("salesforce: the Opportunity describe has no fields")
    return {f["name"] for f in fields if isinstance(f, dict) and isinstance(f.get("name"), str)}


def org_currency(api: SalesforceApi) -> str:
    records = list(api.query("SELECT DefaultCurrencyIsoCode FROM Organization"))
    currency = records[0].get("DefaultCurrencyIsoCode") if records else None
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency):
        raise UpstreamDataError("salesforce: the Organization has no DefaultCurrencyIsoCode")
    return currency.lower()


def opportunities(api: SalesforceApi, fields: list[str], closed_after: int) -> Iterator[dict]:
    """Open opportunities, and closed ones whose CloseDate is after the date of `closed_after`."""
    yield from selected(api.query(f"SELECT {', '.join(fields)} FROM Opportunity WHERE "
                                  f"IsClosed = false OR CloseDate > {soql_date(closed_after)}"),
                        fields)


def opportunities_modified(api: SalesforceApi, fields: list[str], since: int) -> Iterator[dict]:
    """Opportunities changed after `since` (SystemModstamp: any change, by a user or
    by the system), open or closed."""
    yield from selected(api.query(f"SELECT {', '.join(fields)} FROM Opportunity WHERE "
                                  f"SystemModstamp > {soql_datetime(since)}"), fields)


def leads_since(api: SalesforceApi, since: int) -> Iterator[dict]:
    """Leads created after `since`, or converted on a date after its date."""
    yield from selected(api.query(f"SELECT {', '.join(LEAD_FIELDS)} FROM Lead "
                                  f"WHERE CreatedDate > {soql_datetime(since)} "
                                  f"OR ConvertedDate > {soql_date(since)}"), LEAD_FIELDS)


def leads_modified(api: SalesforceApi, since: int) -> Iterator[dict]:
    """Leads changed after `since` (SystemModstamp: created, or changed by a user or
    by the system)."""
    yield from selected(api.query(f"SELECT {', '.join(LEAD_FIELDS)} FROM Lead "
                                  f"WHERE SystemModstamp > {soql_datetime(since)}"), LEAD_FIELDS)


def leads_by_id(api: SalesforceApi, ids: list[str]) -> Iterator[dict]:
    for chunk in _chunks(ids):
        yield from selected(api.query(f"SELECT {', '.join(LEAD_FIELDS)} FROM Lead "
                                      f"WHERE Id IN {soql_ids(chunk)}"), LEAD_FIELDS)


def selected(records: Iterator[dict], fields: Any) -> Iterator[dict]:
    """The records, each checked to hold every field selected (null when empty: SOQL
    always sends a selected field; one that is missing is drift)."""
    for record in records:
        for field in fields:
            if field.split(".")[0] not in record:
                name = record.get("Id")
                what = f"{_type(record)} {name}" if isinstance(name, str) else \
                    f"a {_type(record)} record"
                raise UpstreamDataError(f"salesforce: {what} has no field {field}")
        yield record


def status_changes(api: SalesforceApi, since: int
                   ) -> Iterator[tuple[str, tuple[str, Any, Any, int]]]:
    """(history row id, (lead id, old status, new status, when)) of every Status
    change after `since`."""
    fields = ("Id", "LeadId", "OldValue", "NewValue", "CreatedDate")
    soql = (f"SELECT {', '.join(fields)} FROM LeadHistory "
            f"WHERE Field = 'Status' AND CreatedDate > {soql_datetime(since)}")
    for record in selected(api.query(soql), fields):
        yield text(record, "Id"), (text(record, "LeadId"), record["OldValue"],
                                   record["NewValue"], required(record, "CreatedDate", timestamp))


def first_touches(api: SalesforceApi, lead_ids: list[str]) -> dict[str, int]:
    """{lead id: the earliest CreatedDate of a Task or an Event on it}."""
    first: dict[str, int] = {}
    for chunk in _chunks(lead_ids):
        for activity in ("Task", "Event"):
            soql = (f"SELECT WhoId, MIN(CreatedDate) firstTouch FROM {activity} "
                    f"WHERE WhoId IN {soql_ids(chunk)} GROUP BY WhoId")
            for record in api.query(soql):
                who, at = text(record, "WhoId"), timestamp(record.get("firstTouch"))
                if at is not None and (who not in first or at < first[who]):
                    first[who] = at
    return first


def activities_on(api: SalesforceApi, who_ids: list[str], since: int
                  ) -> Iterator[tuple[str, int]]:
    """(WhoId, CreatedDate) of every Task and Event on these leads or contacts created
    after `since` (not grouped: a contact may have had activities before the lead
    that became it, which its earliest one would hide)."""
    for chunk in _chunks(who_ids):
        yield from _activities(api, f"WhoId IN {soql_ids(chunk)} "
                                    f"AND CreatedDate > {soql_datetime(since)}")


def activities_since(api: SalesforceApi, since: int) -> Iterator[tuple[str, int]]:
    """(WhoId, CreatedDate) of every Task and Event created after `since` on a lead
    or contact (batched, not grouped: the groups of an aggregate stop at 2,000)."""
    yield from _activities(api, f"WhoId != null AND CreatedDate > {soql_datetime(since)}")


def _activities(api: SalesforceApi, where: str) -> Iterator[tuple[str, int]]:
    """(WhoId, CreatedDate) of the Tasks, then the Events, that match `where`."""
    for activity in ("Task", "Event"):
        soql = f"SELECT WhoId, CreatedDate FROM {activity} WHERE {where}"
        for record in selected(api.query(soql), ("WhoId", "CreatedDate")):
            yield text(record, "WhoId"), required(record, "CreatedDate", timestamp)


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), IDS_PER_QUERY):
        yield ids[start:start + IDS_PER_QUERY]


# -- values -------------------------------------------------------------------

def timestamp(value: Any) -> int | None:
    """A Salesforce datetime ("2026-11-01T09:30:00.000+0000") or date ("2026-11-01",
    midnight UTC) -> Unix seconds; None for null."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise UpstreamDataError(f"salesforce: {value!r} is not a date")
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UpstreamDataError(f"salesforce: {value!r} is not a date") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp())


def decimal(value: Any, what: str) -> Decimal | None:
    """A number field (JSON number, null for none) as an exact decimal."""
    return decimal_or_none(value, f"salesforce: {what}")


def boolean(record: dict, field: str) -> bool:
    """A checkbox field: true or false, never missing (a missing IsClosed would make
    every closed deal look open)."""
    value = record.get(field)
    if not isinstance(value, bool):
        name = record.get("Id")
        raise UpstreamDataError(f"salesforce: {_type(record)} {name} has {field} {value!r}, "
                                "not true or false")
    return value


def text(record: dict, field: str) -> str:
    value = record.get(field)
    if not isinstance(value, str) or not value:
        raise UpstreamDataError(f"salesforce: a {_type(record)} record has no {field}")
    return value


def required(record: dict, field: str, read: Any) -> Any:
    value = read(record.get(field))
    if value is None:
        name = record.get("Id")
        what = f"{_type(record)} {name}" if isinstance(name, str) else f"a {_type(record)} record"
        raise UpstreamDataError(f"salesforce: {what} has no {field}")
    return value


def path_value(record: dict, path: str) -> Any:
    """A field by its SOQL path, e.g. RecordType.Name (nested objects, null on the way: None)."""
    value: Any = record
    for name in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def _type(record: dict) -> str:
    attributes = record.get("attributes")
    kind = attributes.get("type") if isinstance(attributes, dict) else None
    return kind if isinstance(kind, str) else "query"
