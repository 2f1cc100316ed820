"""The Salesforce source: its config, one poll, and the records it hands to the shared
CRM math (exporter/sources/crm).

A poll reads, with SOQL (fetch.py), through one OAuth token kept between polls (api.py):

- Deals: opportunities that are open or closed with a CloseDate in the last 90
  days. Stage label = the OpportunityStage MasterLabel of the StageName;
  probability = the stage's DefaultProbability / 100 (not the deal's own
  Probability, so that the same deals give the same numbers as in HubSpot);
  closed = CloseDate (midnight UTC); stage changed = LastStageChangeDate, or
  CreatedDate when the deal never moved. The first poll, and one every
  `full_sync_interval`, reads them all; the polls in between read only those
  whose SystemModstamp is after the last poll (less 5 minutes) and keep the
  rest, so a deal deleted in between counts until the next full read.
  Pipeline = the value of
  `pipeline_field` (e.g. RecordType.Name), else "default". Amount = Amount in
  the deal's CurrencyIsoCode (or the org's currency in a single-currency org),
  converted with fx_rates; without a rate the amount is left out and the deal
  counted in `unconverted`.
- Leads: those created, that reached MQL or SQL, or were converted in the last
  30 days (leads.py). MQL / SQL = the earliest Status change in the window to a
  status mapped to that stage (`lead_statuses`); a lead created in the window
  whose first status is mapped reached that stage when it was created.
  Opportunity = ConvertedDate (midnight UTC). First touch = the earliest Task or
  Event on a lead created in the window (or on the contact it was converted to,
  from the lead's creation on). Read whole with the deals' full reads;
  the polls in between read the leads, Status changes, Tasks and Events changed
  or created since the last poll (less 5 minutes) and keep the rest.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from exporter import money
from exporter.config import PollLimits, Section
from exporter.http import HttpClient
from exporter.secrets import Secret
from exporter.sources.base import HttpSource, http_client, Registration, Sample, UpstreamDataError
from exporter.sources.crm import export
from exporter.sources.crm.export import CrmData, CrmOptions
from exporter.sources.crm.pipeline import Deal, Stage
from exporter.sources.salesforce import fetch, leads
from exporter.sources.salesforce.api import NAME, ApiUsage, SalesforceApi

log = logging.getLogger(__name__)

OVERLAP = 300  # seconds re-read before the last poll: changes can commit a little late
DEFAULT_PIPELINE = "default"  # without pipeline_field, or when a deal has no value in it
FUNNEL_STAGES = ("mql", "sql")
DEFAULT_LEAD_STATUSES = {"mql": ("Marketing Qualified",), "sql": ("Sales Qualified",)}
# Hosts that answer the client credentials flow with invalid_grant: it needs the My Domain.
GENERIC_LOGIN_HOSTS = ("login.salesforce.com", "test.salesforce.com")


@dataclass(frozen=True)
class SalesforceConfig:
    login_url: str  # the org's My Domain, e.g. https://example.my.salesforce.com
    client_id: str
    client_secret: Secret
    api_version: str = "62.0"
    poll_interval: float = 900.0
    limits: PollLimits = PollLimits(5_000, 1800.0)  # SOQL batches of 2,000 records
    pipeline_field: str | None = None  # e.g. RecordType.Name
    # funnel stage -> the Lead Status values that mean it
    lead_statuses: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: dict(DEFAULT_LEAD_STATUSES))
    max_stages: int = 40
    # Polls in between read only the opportunities and leads changed since the last
    # one; a full read also drops the deleted ones.
    full_sync_interval: float = 86400.0
    rate_limit: float = 5.0  # requests per second
    timeout: float = 30.0


# -- config -------------------------------------------------------------------

def _login_url(value: Any) -> str:
    parts = urlsplit(value.strip()) if isinstance(value, str) else None
    if parts is None or parts.scheme != "https" or not parts.hostname \
            or parts.path.strip("/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError("must be the org's My Domain URL, e.g. https://example.my.salesforce.com")
    if parts.hostname in GENERIC_LOGIN_HOSTS:
        raise ValueError(f"the client credentials flow needs the org's My Domain URL "
                         f"(https://<domain>.my.salesforce.com), not {parts.hostname}")
    return f"https://{parts.netloc.lower()}"


def _api_version(value: Any) -> str:
    version = str(value).strip() if isinstance(value, (str, int, float)) \
        and not isinstance(value, bool) else ""
    if not re.fullmatch(r"\d{2}\.\d", version):
        raise ValueError('must be an API version like "62.0"')
    return version


_FIELD_PATH = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*){0,4}")


def _field_path(value: Any) -> str:
    if not isinstance(value, str) or not _FIELD_PATH.fullmatch(value.strip()):
        raise ValueError("must be an Opportunity field or relationship path, e.g. RecordType.Name")
    return value.strip()


def _lead_statuses(value: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise ValueError("must be a mapping of mql/sql to lists of Lead Status values")
    unknown = sorted(set(value) - set(FUNNEL_STAGES), key=str)
    if unknown:
        raise ValueError(f"unknown funnel stage {unknown[0]!r} (known: {', '.join(FUNNEL_STAGES)})")
    statuses = dict(DEFAULT_LEAD_STATUSES)
    for stage, values in value.items():
        values = [values] if isinstance(values, str) else values
        if not isinstance(values, list) or not values or \
                not all(isinstance(v, str) and v.strip() for v in values):
            raise ValueError(f"{stage}: must be a list of Lead Status values, "
                             "e.g. [Marketing Qualified]")
        statuses[stage] = tuple(v.strip() for v in values)
    return statuses


def parse_config(section: Section) -> SalesforceConfig:
    if not section.has("login_url"):
        raise section.error("login_url", "is required (the org's My Domain URL)")
    client_id = (section.string("client_id", required=True) or "").strip()
    if not client_id:
        raise section.error("client_id", "is empty")
    return SalesforceConfig(
        login_url=section.convert("login_url", None, _login_url),
        client_id=client_id,
        client_secret=section.secret("client_secret"),
        api_version=section.convert("api_version", SalesforceConfig.api_version, _api_version),
        pipeline_field=section.convert("pipeline_field", None, _field_path),
        lead_statuses=section.convert("lead_statuses", dict(DEFAULT_LEAD_STATUSES),
                                      _lead_statuses),
        max_stages=section.count("max_stages", SalesforceConfig.max_stages),
        full_sync_interval=section.duration("full_sync_interval",
                                            SalesforceConfig.full_sync_interval),
        **section.common(SalesforceConfig),
    )


def make_client(source_config: SalesforceConfig, **overrides: Any) -> HttpClient:
    """The HTTP client (no credentials on the session: the token goes with each call)."""
    return http_client(NAME, source_config, base_url=source_config.login_url,
                       **{"pace": ApiUsage(), **overrides})


# -- the source ---------------------------------------------------------------

class SalesforceSource(HttpSource):
    name = NAME

    def __init__(self, source_config: SalesforceConfig, fx_rates: dict[str, Decimal],
                 reporting_currency: str = "usd", options: CrmOptions = CrmOptions(), *,
                 clock: Callable[[], float] = time.time, client: HttpClient | None = None):
        self.config = source_config
        self.poll_interval = source_config.poll_interval
        self.fx_rates = {reporting_currency.lower(): Decimal(1), **fx_rates}
        self.options = options
        self.clock = clock
        self.client = client or make_client(source_config)
        self.api = SalesforceApi(self.client, source_config.login_url, source_config.client_id,
                                 source_config.client_secret, source_config.api_version)
        self._deal_fields: list[str] | None = None  # learned once from the describe
        self._org_currency: str | None = None
        # The opportunities of the last poll by Id, its lead funnel's records, when it
        # read them, and the last full read.
        self._opportunities: dict[str, dict] = {}
        self._funnel: leads.FunnelRecords | None = None
        self._read_at: int | None = None
        self._full_at: int | None = None

    def poll(self) -> list[Sample]:
        now = int(self.clock())
        return export.samples(NAME, self.read(now), now, self.options)

    def backfill(self, steps: list[int]) -> Iterator[tuple[int, list[Sample]]]:
        """The closed deals and the lead funnel at each step (see backfill.py and
        export.BACKFILLED), from one read reaching the longest window before the first
        step; the last step is a poll."""
        first, now = steps[0], steps[-1]
        fields = self._opportunity_fields()
        stages = fetch.stages(self.api)
        records = {fetch.text(r, "Id"): r for r in fetch.opportunities(
            self.api, fields, first - export.CLOSED_LOOKBACK)}
        deals = [self._deal(record, stages) for record in records.values()]
        funnel = leads.read_all(self.api, first - export.LEAD_LOOKBACK, self.config.lead_statuses)
        data = CrmData(deals, leads.funnel(funnel, self.config.lead_statuses))
        for at in steps[:-1]:
            yield at, export.samples_at(NAME, data, at, self.options)
        # The poll of the last step starts from that read: what changed since.
        self._opportunities, self._funnel, self._read_at, self._full_at = \
            records, funnel, now, now
        yield now, export.samples(NAME, self.read(now), now, self.options)

    def read(self, now: int) -> CrmData:
        """This poll's deals and leads (see the module doc)."""
        full = self._full_at is None or now - self._full_at >= self.config.full_sync_interval
        fields, stages = self._opportunity_fields(), fetch.stages(self.api)
        records = self._opportunity_records(fields, now, full)
        deals, unconverted = self._deals(records, stages)
        statuses, since = self.config.lead_statuses, now - export.LEAD_LOOKBACK
        if full or self._funnel is None or self._read_at is None:
            funnel = leads.read_all(self.api, since, statuses)
        else:
            funnel = leads.read_changes(self.api, self._funnel, since,
                                        self._read_at - OVERLAP, statuses)
        # Kept only once all of it read well: a failure asks the same again next time.
        self._opportunities, self._funnel, self._read_at = records, funnel, now
        if full:
            self._full_at = now
        return CrmData(deals, leads.funnel(funnel, statuses), unconverted)

    # -- deals ----------------------------------------------------------------

    def _deals(self, records: dict[str, dict], stages: dict[str, dict]
               ) -> tuple[list[Deal], dict[str, int]]:
        deals: list[Deal] = []
        unconverted: dict[str, int] = {}
        for record in records.values():
            deal = self._deal(record, stages)
            if deal.amount is None and record.get("Amount") is not None:
                currency = self._currency(record)
                unconverted[currency] = unconverted.get(currency, 0) + 1
            deals.append(deal)
        return deals, unconverted

    def _opportunity_records(self, fields: list[str], now: int, full: bool) -> dict[str, dict]:
        """{Id: record} of the open opportunities and those closed after the lookback:
        read whole on the first poll and every full_sync_interval, otherwise the last
        poll's, updated with what changed since (less OVERLAP, for late commits)."""
        closed_after = now - export.CLOSED_LOOKBACK
        if full or self._read_at is None:
            read = fetch.opportunities(self.api, fields, closed_after)
            return {fetch.text(r, "Id"): r for r in read}
        records = dict(self._opportunities)
        for record in fetch.opportunities_modified(self.api, fields, self._read_at - OVERLAP):
            records[fetch.text(record, "Id")] = record
        # What the full read's WHERE keeps: open, or closed on a date after the lookback's.
        cutoff = fetch.timestamp(fetch.soql_date(closed_after))
        return {record_id: r for record_id, r in records.items()
                if not fetch.boolean(r, "IsClosed")
                or fetch.required(r, "CloseDate", fetch.timestamp) > cutoff}

    def _deal(self, record: dict, stages: dict[str, dict]) -> Deal:
        deal_id = fetch.text(record, "Id")
        stage_name = fetch.text(record, "StageName")
        is_closed, is_won = fetch.boolean(record, "IsClosed"), fetch.boolean(record, "IsWon")
        if is_won and not is_closed:
            raise UpstreamDataError(f"salesforce: Opportunity {deal_id} is won but not closed")
        stage = stages.get(stage_name)
        if stage is not None:
            label = stage.get("MasterLabel") or stage_name
            probability = fetch.decimal(stage.get("DefaultProbability"),
                                        f"the DefaultProbability of stage {stage_name}")
        else:  # not among the OpportunityStage records: the deal's own values
            self.warn_once(f"stage:{stage_name}", "salesforce: no OpportunityStage has the "
                            "API name %r; its deals use their own Probability", stage_name)
            label = stage_name
            probability = fetch.decimal(record.get("Probability"), f"the Probability of {deal_id}")
        created = fetch.required(record, "CreatedDate", fetch.timestamp)
        changed = fetch.timestamp(record.get("LastStageChangeDate"))
        closed = fetch.required(record, "CloseDate", fetch.timestamp) if is_closed else None
        return Deal(
            id=deal_id,
            stage=Stage(pipeline=self._pipeline(record), label=str(label),
                        probability=(probability or Decimal(0)) / 100,
                        is_closed=is_closed, is_won=is_won),
            amount=self._amount(record, deal_id),
            created=created,
            closed=closed,
            stage_changed=created if changed is None else changed)

    def _pipeline(self, record: dict) -> str:
        if self.config.pipeline_field is None:
            return DEFAULT_PIPELINE
        value = fetch.path_value(record, self.config.pipeline_field)
        return DEFAULT_PIPELINE if value in (None, "") else str(value)

    def _amount(self, record: dict, deal_id: str) -> Decimal | None:
        amount = fetch.decimal(record.get("Amount"), f"the Amount of {deal_id}")
        if amount is None:
            return None
        currency = self._currency(record)
        converted = money.convert(amount, currency, self.fx_rates)
        if converted is None:
            self.warn_once(f"fx:{currency}", "salesforce: deals in %s are left out of amounts: "
                            "fx_rates has no rate for it", currency.upper())
        return converted

    def _currency(self, record: dict) -> str:
        currency = record.get("CurrencyIsoCode")
        if isinstance(currency, str) and currency:
            return currency.lower()
        if self._org_currency is None:  # a single-currency org: one question, once
            self._org_currency = fetch.org_currency(self.api)
        return self._org_currency

    def _opportunity_fields(self) -> list[str]:
        if self._deal_fields is None:
            present = fetch.opportunity_fields(self.api)
            fields = list(fetch.DEAL_FIELDS)
            fields += [f for f in fetch.OPTIONAL_DEAL_FIELDS if f in present]
            if "LastStageChangeDate" not in present:
                log.warning("salesforce: Opportunity has no LastStageChangeDate in API v%s; "
                            "stage changes are taken as the deals' creation",
                            self.config.api_version)
            if self.config.pipeline_field and self.config.pipeline_field not in fields:
                fields.append(self.config.pipeline_field)
            self._deal_fields = fields
        return self._deal_fields


def create(source_config: SalesforceConfig, config: Any) -> SalesforceSource:
    return SalesforceSource(source_config, config.fx_rates, config.reporting_currency,
                            export.crm_options(config, source_config.max_stages))


SOURCE_TYPE = Registration(parse_config, create)
