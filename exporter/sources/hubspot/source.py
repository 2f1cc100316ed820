"""The HubSpot source: its config, the deals and contacts it keeps between polls,
and the records it hands to the shared CRM math.

The first poll (and one every `full_sync_interval`) reads every deal through
the list endpoint and searches the contacts that were created or entered a
mapped lifecycle stage in the lead window. Later polls only search what changed
since the previous poll (`hs_lastmodifieddate` for deals, `lastmodifieddate` for
contacts) and merge it in; the periodic full read drops deleted objects, which
searches do not return. A poll that fails part-way changes nothing.

HubSpot's own pace is respected twice: client-side, requests stay under the
limits HubSpot documents (`rate_limit` for every request, under the lowest
tier's 100 per 10 seconds; `search_rate_limit` for searches, which also have
their own 5 a second per account), and when a response says the 10-second
allowance is used up (`X-HubSpot-RateLimit-Remaining: 0`) the next request
waits for the interval.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterator

from exporter import money
from exporter.config import PollLimits, Section
from exporter.http import HttpClient
from exporter.secrets import Secret
from exporter.sources.base import (
    HttpSource, Registration, Sample, UpstreamDataError, decimal_or_none, http_client,
)
from exporter.sources.crm import export
from exporter.sources.crm.export import CrmData, CrmOptions
from exporter.sources.crm.pipeline import Deal, Lead, Stage, lead_moved_since
from exporter.sources.hubspot import fetch

NAME = "hubspot"
API = "https://api.hubapi.com"
# Searches overlap the previous poll by this much: HubSpot's search index lags
# writes by a few seconds, and an object seen twice is merged by id.
OVERLAP = 300

DEAL_PROPERTIES = ["dealname", "amount", "deal_currency_code", "dealstage", "pipeline",
                   "closedate", "createdate", "hs_lastmodifieddate",
                   "hs_v2_date_entered_current_stage"]
# Read for every deal: a portal without one of them cannot give its KPIs.
REQUIRED_DEAL_PROPERTIES = ("amount", "dealstage", "pipeline", "createdate", "closedate")
SEARCH_PATH = r"^/crm/v3/objects/[^/]+/search$"  # the endpoints of the search API's own limit
FUNNEL_STAGES = ("mql", "sql", "opportunity")
DEFAULT_LIFECYCLE = {"mql": "marketingqualifiedlead", "sql": "salesqualifiedlead",
                     "opportunity": "opportunity"}


@dataclass(frozen=True)
class HubSpotConfig:
    access_token: Secret
    base_url: str = API
    pipelines: tuple[str, ...] = ()  # ids or labels; empty: every pipeline
    # funnel stage -> HubSpot lifecycle stage id (custom stages have numeric ids)
    lifecycle_stages: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_LIFECYCLE))
    poll_interval: float = 900.0
    limits: PollLimits = PollLimits(20_000, 3600.0)  # a first read of 100,000 deals and their contacts
    full_sync_interval: float = 86400.0
    max_stages: int = 40
    rate_limit: float = 9.0  # requests per second, all kinds: Free and Starter allow 100 per 10 s
    search_rate_limit: float = 4.0  # searches per second: the search API allows 5 per account
    timeout: float = 30.0


_STAGE_ID = re.compile(r"[a-z0-9_]{1,100}")


def _lifecycle(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError("must be a mapping of mql/sql/opportunity to lifecycle stage ids")
    unknown = sorted(set(value) - set(FUNNEL_STAGES), key=str)
    if unknown:
        raise ValueError(f"unknown funnel stage {unknown[0]!r} (known: {', '.join(FUNNEL_STAGES)})")
    stages = {**DEFAULT_LIFECYCLE, **{key: str(v).strip().lower() for key, v in value.items()}}
    for key, stage in stages.items():
        if not _STAGE_ID.fullmatch(stage):
            raise ValueError(f"{key}: {stage!r} is not a lifecycle stage id "
                             "(e.g. marketingqualifiedlead, or a custom stage's number)")
    return stages


def _names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or \
            not all(isinstance(v, (str, int)) and str(v).strip() for v in value):
        raise ValueError("must be a list of pipeline ids or labels, e.g. [default]")
    return tuple(str(v).strip() for v in value)


def parse_config(section: Section) -> HubSpotConfig:
    return HubSpotConfig(
        access_token=section.secret("access_token"),
        base_url=section.url("base_url", API),
        pipelines=section.convert("pipelines", (), _names),
        lifecycle_stages=section.convert("lifecycle_stages", dict(DEFAULT_LIFECYCLE), _lifecycle),
        full_sync_interval=section.duration("full_sync_interval",
                                               HubSpotConfig.full_sync_interval),
        max_stages=section.count("max_stages", HubSpotConfig.max_stages),
        search_rate_limit=section.number("search_rate_limit", HubSpotConfig.search_rate_limit,
                                         minimum=0.1),
        **section.common(HubSpotConfig),
    )


def pace(headers: Any) -> float | None:
    """Hold the next request for the rolling interval once HubSpot says none is left."""
    remaining = headers.get("X-HubSpot-RateLimit-Remaining")
    if remaining is None or remaining.strip() not in ("0", "-1"):
        return None
    try:
        return float(headers.get("X-HubSpot-RateLimit-Interval-Milliseconds") or 10_000) / 1000
    except ValueError:
        return 10.0


def make_client(source_config: HubSpotConfig, **overrides: Any) -> HttpClient:
    return http_client(NAME, source_config, headers={
        "Authorization": f"Bearer {source_config.access_token.reveal()}"},
        **{"pace": pace, "route_limits": [(SEARCH_PATH, source_config.search_rate_limit)],
           **overrides})


def stage_date_properties(stage: str) -> tuple[str, str]:
    """The contact properties holding when it entered a lifecycle stage: the current
    one, and the legacy one older portals still fill."""
    return f"hs_v2_date_entered_{stage}", f"hs_lifecyclestage_{stage}_date"


@dataclass
class _State:
    deals: dict[str, dict] = field(default_factory=dict)  # id -> properties
    contacts: dict[str, dict] = field(default_factory=dict)
    synced: int | None = None  # Unix time the last poll started
    full_at: float | None = None  # when the last full read started


class HubSpotSource(HttpSource):
    name = NAME

    def __init__(self, source_config: HubSpotConfig, fx_rates: dict[str, Decimal],
                 options: CrmOptions = CrmOptions(), *,
                 clock: Callable[[], float] = time.time, client: HttpClient | None = None):
        self.config = source_config
        self.poll_interval = source_config.poll_interval
        self.fx_rates = fx_rates
        self.options = options
        self.clock = clock
        self.client = client or make_client(source_config)
        self._state = _State()
        self._company_currency: str | None = None
        self._contact_properties = ["email", "createdate", "lastmodifieddate", "lifecyclestage",
                                    "hs_sa_first_engagement_date"]
        for stage in source_config.lifecycle_stages.values():
            self._contact_properties += stage_date_properties(stage)

    def poll(self) -> list[Sample]:
        now = int(self.clock())
        return export.samples(NAME, self.read(now), now, self.options)

    def backfill(self, steps: list[int]) -> Iterator[tuple[int, list[Sample]]]:
        """The closed deals and the lead funnel at each step (see backfill.py and
        export.BACKFILLED), from one full read whose contact searches reach the longest
        window before the first step; the last step is a poll."""
        first, now = steps[0], steps[-1]
        stages = self._stages()
        if self._company_currency is None:
            self._company_currency = _company_currency(self.client)
        since = first - export.LEAD_LOOKBACK
        state = self._full_read(now, since)
        data = self._records(stages, state, now, lead_since=since)
        for at in steps[:-1]:
            yield at, export.samples_at(NAME, data, at, self.options)
        # The poll of the last step starts from that read: only what changed since.
        self._state = state
        yield now, export.samples(NAME, self.read(now), now, self.options)

    def read(self, now: int) -> CrmData:
        """Bring the kept deals and contacts up to date, and turn them into records."""
        stages = self._stages()
        if self._company_currency is None:
            self._company_currency = _company_currency(self.client)
        state = self._state
        if state.full_at is None or now - state.full_at >= self.config.full_sync_interval:
            state = self._full_read(now)
        else:
            state = self._changes_since(state, now)
        data = self._records(stages, state, now)
        # Kept only once the records are good; contacts with nothing left in the window go.
        state.contacts = {lead.id: state.contacts[lead.id] for lead in data.leads}
        self._state = state
        return data

    # -- fetching -------------------------------------------------------------

    def _stages(self) -> _Pipelines:
        """The configured pipelines' stages, and which pipelines the portal has."""
        wanted = set(self.config.pipelines)
        found = _Pipelines()
        seen = set()
        for pipeline in fetch.pipelines(self.client):
            if not isinstance(pipeline, dict) or not isinstance(pipeline.get("id"), str) \
                    or not isinstance(pipeline.get("stages"), list):
                raise UpstreamDataError("hubspot: a deal pipeline has no id or no list of stages")
            pid, label = pipeline["id"], str(pipeline.get("label") or pipeline["id"])
            seen |= {pid, label}
            found.known.add(pid)
            if wanted and not wanted & {pid, label}:
                continue
            found.kept.add(pid)
            for stage in pipeline["stages"]:
                if not isinstance(stage, dict) or not isinstance(stage.get("id"), str):
                    raise UpstreamDataError(f"hubspot: a stage of pipeline {pid} has no id")
                found.stages[(pid, stage["id"])] = _stage(label, stage)
        for missing in sorted(wanted - seen):
            self.warn_once(f"pipeline:{missing}", "hubspot: no deal pipeline has the id or "
                            "label %r (sources.hubspot.pipelines)", missing)
        return found

    def _full_read(self, now: int, since: int | None = None) -> _State:
        deals = {d["id"]: d["properties"]
                 for d in fetch.list_objects(self.client, "deals", DEAL_PROPERTIES)}
        contacts: dict[str, dict] = {}
        since = now - export.LEAD_LOOKBACK if since is None else since
        dates = ["createdate"] + [stage_date_properties(stage)[0]
                                  for stage in self.config.lifecycle_stages.values()]
        for date_property in dates:
            for contact in fetch.search_since(self.client, "contacts", date_property, since,
                                              self._contact_properties):
                contacts[contact["id"]] = contact["properties"]
        return _State(deals, contacts, synced=now, full_at=now)

    def _changes_since(self, state: _State, now: int) -> _State:
        since = (state.synced or now) - OVERLAP
        deals = dict(state.deals)
        for deal in fetch.search_since(self.client, "deals", "hs_lastmodifieddate", since,
                                       DEAL_PROPERTIES):
            deals[deal["id"]] = deal["properties"]
        contacts = dict(state.contacts)
        for contact in fetch.search_since(self.client, "contacts", "lastmodifieddate", since,
                                          self._contact_properties):
            contacts[contact["id"]] = contact["properties"]
        return _State(deals, contacts, synced=now, full_at=state.full_at)

    # -- records --------------------------------------------------------------

    def _records(self, pipelines: _Pipelines, state: _State, now: int,
                 lead_since: int | None = None) -> CrmData:
        deals: list[Deal] = []
        unconverted: dict[str, int] = {}
        for deal_id, props in state.deals.items():
            # HubSpot sends every requested property that the portal defines, null when
            # unset: one that is missing is no longer defined, and its deals cannot be read.
            for name in REQUIRED_DEAL_PROPERTIES:
                if name not in props:
                    raise UpstreamDataError(f"hubspot: deal {deal_id} has no {name} property "
                                            "(is it still defined in the portal?)")
            pipeline_id = _text(props, "pipeline", f"deal {deal_id}")
            stage_id = _text(props, "dealstage", f"deal {deal_id}")
            if pipeline_id not in pipelines.known:
                raise UpstreamDataError(f"hubspot: deal {deal_id} is in pipeline {pipeline_id!r}, "
                                        "which the pipelines endpoint does not list")
            if pipeline_id not in pipelines.kept:
                continue  # a pipeline the config leaves out
            stage = pipelines.stages.get((pipeline_id, stage_id))
            if stage is None:
                raise UpstreamDataError(f"hubspot: deal {deal_id} is in stage {stage_id!r}, "
                                        f"which pipeline {pipeline_id!r} does not have")
            # A deal without an amount is a deal all the same: counted, adding nothing.
            amount = decimal_or_none(props["amount"], f"hubspot: the amount of deal {deal_id}")
            if amount is not None:
                currency = self._currency(props, deal_id)
                converted = money.convert(amount, currency, self.fx_rates)
                if converted is None:
                    unconverted[currency] = unconverted.get(currency, 0) + 1
                    self.warn_once(f"fx:{currency}", "hubspot: deals in %s are left out of "
                                    "amounts: fx_rates has no rate for it", currency.upper())
                amount = converted
            created = fetch.seconds(props["createdate"])
            if created is None:
                raise UpstreamDataError(f"hubspot: deal {deal_id} has no createdate")
            closed = fetch.seconds(props["closedate"]) if stage.is_closed else None
            if stage.is_closed and closed is None:
                raise UpstreamDataError(f"hubspot: deal {deal_id} is closed but has no closedate")
            deals.append(Deal(
                id=deal_id, stage=stage, amount=amount, created=created, closed=closed,
                # None for a deal that never moved (or a portal without the property):
                # it counts as entering its stage when it was created
                stage_changed=fetch.seconds(props.get("hs_v2_date_entered_current_stage"))))
        since = now - export.LEAD_LOOKBACK if lead_since is None else lead_since
        leads = [lead for lead in (self._lead(cid, props) for cid, props in state.contacts.items())
                 if lead_moved_since(lead, since)]
        return CrmData(deals, leads, unconverted)

    def _currency(self, props: dict, deal_id: str) -> str:
        """The deal's own currency, or the portal's (a single-currency portal sends none)."""
        code = props.get("deal_currency_code")
        if code in (None, ""):
            return self._company_currency
        if not isinstance(code, str) or not re.fullmatch(r"[A-Za-z]{3}", code):
            raise UpstreamDataError(f"hubspot: deal {deal_id} has currency {code!r}")
        return code.lower()

    def _lead(self, contact_id: str, props: dict) -> Lead:
        created = fetch.seconds(props.get("createdate"))
        if created is None:  # every contact has one: without it the funnel cannot be read
            raise UpstreamDataError(f"hubspot: contact {contact_id} has no createdate")

        def entered(funnel_stage: str) -> int | None:
            current, legacy = stage_date_properties(self.config.lifecycle_stages[funnel_stage])
            return fetch.seconds(props.get(current) or props.get(legacy))

        return Lead(id=contact_id, created=created, mql=entered("mql"), sql=entered("sql"),
                    opportunity=entered("opportunity"),
                    first_touch=fetch.seconds(props.get("hs_sa_first_engagement_date")))



@dataclass
class _Pipelines:
    stages: dict[tuple[str, str], Stage] = field(default_factory=dict)  # of kept pipelines
    known: set[str] = field(default_factory=set)  # every pipeline id of the portal
    kept: set[str] = field(default_factory=set)  # those the config asks for


def _stage(pipeline_label: str, stage: dict) -> Stage:
    """A deal stage; its metadata must say whether it is closed, and its probability
    (HubSpot sends both as strings): a stage read wrong files deals as won or open."""
    metadata = stage.get("metadata")
    what = f"hubspot: stage {stage['id']!r} of pipeline {pipeline_label!r}"
    if not isinstance(metadata, dict):
        raise UpstreamDataError(f"{what} has no metadata")
    closed = str(metadata.get("isClosed")).lower()
    if closed not in ("true", "false"):
        raise UpstreamDataError(f"{what} has isClosed {metadata.get('isClosed')!r}")
    probability = decimal_or_none(metadata.get("probability"), f"{what}: probability")
    if probability is None or not 0 <= probability <= 1:
        raise UpstreamDataError(f"{what} has probability {metadata.get('probability')!r}")
    return Stage(pipeline=pipeline_label, label=str(stage.get("label") or stage["id"]),
                 probability=probability, is_closed=closed == "true",
                 is_won=closed == "true" and probability == 1)


def _text(props: dict, name: str, what: str) -> str:
    value = props.get(name)
    if not isinstance(value, str) or not value:
        raise UpstreamDataError(f"hubspot: {what} has {name} {value!r}")
    return value


def _company_currency(client: HttpClient) -> str:
    details = client.get_json("/account-info/v3/details")
    currency = details.get("companyCurrency") if isinstance(details, dict) else None
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency):
        raise UpstreamDataError("hubspot: account details have no companyCurrency")
    return currency.lower()


def create(source_config: HubSpotConfig, config: Any) -> HubSpotSource:
    return HubSpotSource(source_config, config.fx_rates,
                         export.crm_options(config, source_config.max_stages))


SOURCE_TYPE = Registration(parse_config, create)
