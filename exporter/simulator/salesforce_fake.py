"""A local HTTP server that answers like Salesforce's REST API, for the demo and tests.

    with FakeSalesforce(generate_crm(seed=9, now=now)) as fake:
        token = requests.post(f"{fake.url}/services/oauth2/token", data={
            "grant_type": "client_credentials", "client_id": fake.client_id,
            "client_secret": fake.client_secret}).json()["access_token"]
        requests.get(f"{fake.url}/services/data/v62.0/query", params={"q": "SELECT Id FROM Lead"},
                     headers={"Authorization": f"Bearer {token}"})

It serves a `CrmCompany` (exporter/simulator/crm_company.py) as an org's records:

- `OpportunityStage`: one per distinct stage label (stages are global in
  Salesforce; the company gives shared labels the same probability): ApiName
  and MasterLabel = the label, DefaultProbability = probability x 100,
  IsClosed, IsWon, IsActive, SortOrder, ForecastCategoryName.
- `RecordType`: one per pipeline (Name = its label), and `Opportunity`: one per
  deal, StageName = its stage's label, RecordType.Name = its pipeline's label,
  Amount (null without one), Probability, CloseDate (the close date of closed
  deals; open ones a future expected date), CreatedDate, LastModifiedDate and
  SystemModstamp (both the deal's last change),
  IsClosed, IsWon, LastStageChangeDate (null for a deal still in the stage it
  was created in, as Salesforce leaves it), and CurrencyIsoCode when
  `multi_currency` (otherwise the field does not exist and amounts are taken as
  the org currency, `company.currency`).
- `Organization`: DefaultCurrencyIsoCode = the company's currency.
- `Lead`: one per lead, created "Open - Not Contacted"; Status "Marketing
  Qualified" from its MQL time, "Sales Qualified" from its SQL time, "Closed -
  Converted" once converted (IsConverted, ConvertedDate = the conversion day,
  ConvertedOpportunityId: an id of an opportunity this fake does not serve,
  ConvertedContactId: a contact's, which this fake does not serve either),
  LastModifiedDate and SystemModstamp (both the lead's last change).
- `LeadHistory`: a "created" row per lead and a Field 'Status' row (OldValue,
  NewValue) for each of those changes (a conversion row at the later of the
  conversion day and the SQL time).
- `Task` and `Event` (WhoId = the lead, or once it is converted the contact it
  became, as Salesforce moves them): the first touch is a Task; every fifth
  touched lead's first touch is an Event, followed by a Task two days later;
  every third lead gets a follow-up Task a day after the first touch (later
  activities only when they are not in the future).

Ids are 18 characters with Salesforce's key prefixes (`record_id(prefix, n)`:
006 opportunities, 00Q leads, ...), numbered from the company's ids.

Served: `POST /services/oauth2/token` (grant_type=client_credentials with the
`client_id` / `client_secret` given; a wrong id is 400 invalid_client_id, a
wrong secret 400 invalid_client, another grant 400 unsupported_grant_type; the
answer has access_token, signature, scope, instance_url = this server, id,
token_type and issued_at, and no lifetime), `GET /services/data` (versions),
and under `/services/data/vNN.N` (31.0 to 66.0): `query?q=` with a SOQL
interpreter, `query/<locator>-<offset>` (the next batch), `sobjects/<Object>/describe`
and `limits` (DailyApiRequests).

SOQL: SELECT fields and relationship fields (RecordType.Name, nested in the
record as Salesforce does), FROM one object, WHERE with AND / OR / NOT and
parentheses (AND and OR may not be mixed without them), =, !=, <>, <, <=, >,
>=, IN, NOT IN; string (case-insensitive), number, true / false / null,
datetime (2026-11-01T00:00:00Z) and date (2026-11-01) literals, each checked
against the field's type; GROUP BY with MIN, MAX, COUNT, COUNT(), SUM, AVG,
aliases or expr0, expr1...; ORDER BY (ASC / DESC, NULLS FIRST / LAST), LIMIT.
Unknown objects are 400 INVALID_TYPE, unknown fields (and filtering, grouping
or sorting a field that does not allow it, such as LeadHistory.NewValue, or a
literal of the wrong type) 400 INVALID_FIELD, anything unparseable 400
MALFORMED_QUERY, with Salesforce's "ERROR at Row:1:Column:N" message. Records
come `batch_size` (default 2,000) a batch with a relative `nextRecordsUrl`; an
aggregate query has no further batches, so one of more than 2,000 groups is a
400 EXCEEDED_ID_LIMIT.

Auth: `Authorization: Bearer <token>`; a missing, unknown or expired token is a
401 `[{"message": "Session expired or invalid", "errorCode":
"INVALID_SESSION_ID"}]`. Tokens expire after `token_lifetime` seconds (None:
never) or when `expire_tokens()` says (now, or after a number of calls).
Limits: every data call answers `Sforce-Limit-Info: api-usage=USED/LIMIT`;
past `daily_limit` calls in a UTC day, calls get 403 REQUEST_LIMIT_EXCEEDED
("TotalRequests Limit exceeded."). Refused calls do not count. Errors are
`[{"message", "errorCode"}]` arrays. Counters for tests: `token_requests`,
`tokens_issued`, `api_usage`.

Simplified: read-only; no date literals such as LAST_N_DAYS, no LIKE,
INCLUDES, HAVING, OFFSET, semi-joins, subqueries or polymorphic fields
(Who.Type); deleted records, sharing and field-level security do not exist;
the query batch size header is ignored; aggregate groups come in the order
they were first met.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import itertools
import operator
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Callable
from urllib.parse import parse_qs

from exporter.simulator.crm_company import DAY, CrmCompany, CrmLead, midnight
from exporter.simulator.fake_server import FakeServer, Response, json_body

HOUR = 3600
DEFAULT_CLIENT_ID = "3MVG9fakeSalesforceClientIdForTheKpiExporterDemo0000000000000000000000000"
DEFAULT_CLIENT_SECRET = "F4KE5EC12E7C0DE0000000000000000000000000000000000000000000000000"
ORG_ID = "00D5g000004KpiXEAS"
USER_ID = "0055g00000KpiXyAAB"
VERSIONS = tuple(f"{v}.0" for v in range(31, 67))
BATCH_SIZE = 2000  # Salesforce's default (and largest) query batch
AGGREGATE_LIMIT = 2000  # groups one aggregate query may return
DAILY_LIMIT = 100_000  # an Enterprise org's base allowance of API calls per 24 hours
TOKEN_LIFETIME = 2 * HOUR  # the default session timeout
CURSORS_KEPT = 50

STATUS_OPEN = "Open - Not Contacted"
STATUS_MQL = "Marketing Qualified"
STATUS_SQL = "Sales Qualified"
STATUS_CONVERTED = "Closed - Converted"

NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
LIMIT_EXCEEDED = [{"message": "TotalRequests Limit exceeded.",
                   "errorCode": "REQUEST_LIMIT_EXCEEDED"}]


def record_id(prefix: str, number: int) -> str:
    """An 18-character record id: the object's key prefix, then the number."""
    return f"{prefix}5g{number:010d}AAA"


def datetime_text(at: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime(at))


def date_text(at: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


# -- the schema ---------------------------------------------------------------

TEXT_TYPES = frozenset({"id", "reference", "string", "picklist", "email", "anyType"})
NUMBER_TYPES = frozenset({"double", "currency", "percent", "int"})


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    filterable: bool = True
    groupable: bool = True
    sortable: bool = True
    nillable: bool = True
    relationship: str | None = None  # the relationship a reference field is the id of
    reference_to: str | None = None


@dataclass(frozen=True)
class SObject:
    name: str
    prefix: str
    fields: tuple[Field, ...]

    def field(self, name: str) -> Field | None:
        return self._by_name.get(name.lower())  # SOQL names are case-insensitive

    def relationship(self, name: str) -> Field | None:
        return self._by_relationship.get(name.lower())

    @cached_property
    def _by_name(self) -> dict[str, Field]:
        return {f.name.lower(): f for f in self.fields}

    @cached_property
    def _by_relationship(self) -> dict[str, Field]:
        return {f.relationship.lower(): f for f in self.fields if f.relationship}


def _f(name: str, kind: str, **options: Any) -> Field:
    if kind in ("double", "currency", "percent", "anyType"):
        options.setdefault("groupable", False)
    if kind == "anyType":
        options.setdefault("filterable", False)
    return Field(name, kind, **options)


def _schema(multi_currency: bool) -> dict[str, SObject]:
    currency = (_f("CurrencyIsoCode", "picklist", nillable=False),) if multi_currency else ()
    objects = [
        SObject("OpportunityStage", "01J", (
            _f("Id", "id", nillable=False), _f("ApiName", "string", nillable=False),
            _f("MasterLabel", "string", nillable=False), _f("DefaultProbability", "percent"),
            _f("ForecastCategoryName", "picklist"), _f("IsActive", "boolean", nillable=False),
            _f("IsClosed", "boolean", nillable=False), _f("IsWon", "boolean", nillable=False),
            _f("SortOrder", "int"))),
        SObject("RecordType", "012", (
            _f("Id", "id", nillable=False), _f("Name", "string", nillable=False),
            _f("DeveloperName", "string", nillable=False), _f("SobjectType", "picklist"),
            _f("IsActive", "boolean", nillable=False))),
        SObject("Opportunity", "006", (
            _f("Id", "id", nillable=False), _f("Name", "string", nillable=False),
            _f("StageName", "picklist", nillable=False), _f("Amount", "currency"),
            _f("Probability", "percent"), _f("CloseDate", "date", nillable=False),
            _f("CreatedDate", "datetime", nillable=False),
            _f("LastModifiedDate", "datetime", nillable=False),
            _f("SystemModstamp", "datetime", nillable=False),
            _f("IsClosed", "boolean", nillable=False), _f("IsWon", "boolean", nillable=False),
            _f("LastStageChangeDate", "datetime"), *currency,
            _f("RecordTypeId", "reference", relationship="RecordType",
               reference_to="RecordType"))),
        SObject("Organization", "00D", (
            _f("Id", "id", nillable=False), _f("Name", "string", nillable=False),
            _f("DefaultCurrencyIsoCode", "picklist"))),
        SObject("Lead", "00Q", (
            _f("Id", "id", nillable=False), _f("Email", "email"), _f("Company", "string"),
            _f("Status", "picklist", nillable=False), _f("CreatedDate", "datetime", nillable=False),
            _f("LastModifiedDate", "datetime", nillable=False),
            _f("SystemModstamp", "datetime", nillable=False),
            _f("IsConverted", "boolean", nillable=False), _f("ConvertedDate", "date"),
            _f("ConvertedOpportunityId", "reference", reference_to="Opportunity"),
            _f("ConvertedContactId", "reference", reference_to="Contact"))),
        SObject("LeadHistory", "017", (
            _f("Id", "id", nillable=False), _f("LeadId", "reference", reference_to="Lead"),
            _f("Field", "picklist", nillable=False), _f("DataType", "picklist"),
            _f("OldValue", "anyType"), _f("NewValue", "anyType"),
            _f("CreatedDate", "datetime", nillable=False))),
        SObject("Task", "00T", (
            _f("Id", "id", nillable=False), _f("WhoId", "reference", reference_to="Lead"),
            _f("Subject", "string"), _f("Status", "picklist"),
            _f("CreatedDate", "datetime", nillable=False))),
        SObject("Event", "00U", (
            _f("Id", "id", nillable=False), _f("WhoId", "reference", reference_to="Lead"),
            _f("Subject", "string"), _f("CreatedDate", "datetime", nillable=False))),
    ]
    return {o.name.lower(): o for o in objects}


# -- the company as records ---------------------------------------------------

def _tables(company: CrmCompany, multi_currency: bool) -> dict[str, list[dict]]:
    """Rows by object name: Python values (times as Unix seconds, numbers as floats);
    a relationship is the related row itself."""
    now = company.now
    record_types, stages = [], {}
    for number, pipeline in enumerate(company.pipelines, 1):
        record_types.append({"Id": record_id("012", number), "Name": pipeline.label,
                             "DeveloperName": re.sub(r"\W", "_", pipeline.label),
                             "SobjectType": "Opportunity", "IsActive": True})
        for stage in pipeline.stages:
            known = stages.get(stage.label)
            if known is not None:
                if known["DefaultProbability"] != float(stage.probability * 100):
                    raise ValueError(f"stage {stage.label!r} has two probabilities")
                continue
            stages[stage.label] = {
                "Id": record_id("01J", len(stages) + 1), "ApiName": stage.label,
                "MasterLabel": stage.label, "DefaultProbability": float(stage.probability * 100),
                "ForecastCategoryName": "Closed" if stage.is_won
                else "Omitted" if stage.is_closed else "Pipeline",
                "IsActive": True, "IsClosed": stage.is_closed, "IsWon": stage.is_won,
                "SortOrder": len(stages) + 1}
    by_pipeline = {p.id: (p, rt) for p, rt in zip(company.pipelines, record_types)}

    opportunities = []
    for deal in company.deals:
        pipeline, record_type = by_pipeline[deal.pipeline]
        stage = pipeline.stage(deal.stage)
        expected = max(midnight(now) + DAY, midnight(deal.created + 34 * DAY))
        row = {"Id": record_id("006", deal.id), "Name": deal.name, "StageName": stage.label,
               "Amount": None if deal.amount is None else float(deal.amount),
               "Probability": float(stage.probability * 100),
               "CloseDate": deal.closed if stage.is_closed and deal.closed is not None
               else expected,
               "CreatedDate": deal.created, "LastModifiedDate": deal.modified,
               "SystemModstamp": deal.modified, "IsClosed": stage.is_closed, "IsWon": stage.is_won,
               "LastStageChangeDate": None if deal.stage_changed == deal.created
               else deal.stage_changed,
               "RecordTypeId": record_type["Id"], "RecordType": record_type}
        if multi_currency:
            row["CurrencyIsoCode"] = deal.currency.upper()
        opportunities.append(row)

    leads, history, tasks, events = [], [], [], []
    for lead in company.leads:
        leads.append(_lead_row(lead))
        history += _history_rows(lead, len(history))
        _activities(lead, now, tasks, events)
    organization = {"Id": ORG_ID, "Name": "Example Corp",
                    "DefaultCurrencyIsoCode": company.currency.upper()}
    return {"opportunitystage": list(stages.values()), "recordtype": record_types,
            "opportunity": opportunities, "organization": [organization], "lead": leads,
            "leadhistory": history, "task": tasks, "event": events}


def _lead_row(lead: CrmLead) -> dict:
    status = STATUS_CONVERTED if lead.opportunity is not None else STATUS_SQL \
        if lead.sql is not None else STATUS_MQL if lead.mql is not None else STATUS_OPEN
    return {"Id": record_id("00Q", lead.id), "Email": lead.email, "Company": f"Prospect {lead.id}",
            "Status": status, "CreatedDate": lead.created, "LastModifiedDate": lead.modified,
            "SystemModstamp": lead.modified,
            "IsConverted": lead.opportunity is not None, "ConvertedDate": lead.opportunity,
            "ConvertedContactId": None if lead.opportunity is None else _contact_id(lead),
            "ConvertedOpportunityId": None if lead.opportunity is None
            else record_id("006", 1_000_000 + lead.id)}


def _history_rows(lead: CrmLead, first: int) -> list[dict]:
    lead_id = record_id("00Q", lead.id)
    changes = [("created", None, None, None, lead.created)]
    if lead.mql is not None:
        changes.append(("Status", "Text", STATUS_OPEN, STATUS_MQL, lead.mql))
    if lead.sql is not None:
        changes.append(("Status", "Text", STATUS_MQL, STATUS_SQL, lead.sql))
    if lead.opportunity is not None:
        changes.append(("Status", "Text", STATUS_SQL, STATUS_CONVERTED,
                        max(lead.opportunity, lead.sql or lead.created)))
    return [{"Id": record_id("017", first + n), "LeadId": lead_id, "Field": name,
             "DataType": kind, "OldValue": old, "NewValue": new, "CreatedDate": at}
            for n, (name, kind, old, new, at) in enumerate(changes, 1)]


def _contact_id(lead: CrmLead) -> str:
    return record_id("003", lead.id)


def _activities(lead: CrmLead, now: int, tasks: list[dict], events: list[dict]) -> None:
    if lead.first_touch is None:
        return
    # Converting a lead moves its activities to the contact it became.
    who = record_id("00Q", lead.id) if lead.opportunity is None else _contact_id(lead)

    def task(at: int, subject: str) -> None:
        if at <= now:
            tasks.append({"Id": record_id("00T", len(tasks) + 1), "WhoId": who,
                          "Subject": subject, "Status": "Completed", "CreatedDate": at})

    if lead.id % 5 == 0:
        events.append({"Id": record_id("00U", len(events) + 1), "WhoId": who,
                       "Subject": "Intro meeting", "CreatedDate": lead.first_touch})
        task(lead.first_touch + 2 * DAY, "Send proposal")
    else:
        task(lead.first_touch, "Call")
    if lead.id % 3 == 0:
        task(lead.first_touch + DAY, "Follow-up")


# -- SOQL ---------------------------------------------------------------------

class SoqlError(Exception):
    def __init__(self, code: str, message: str, at: int | None = None):
        super().__init__(message)
        self.code = code
        self.at = at  # where in the query, for the "ERROR at Row:Column" message


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})
  | (?P<number>[+-]?\d+(?:\.\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op>!=|<>|<=|>=|=|<|>)
  | (?P<punct>[(),])
""", re.VERBOSE)
KEYWORDS = frozenset({"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "GROUP", "BY",
                      "ORDER", "ASC", "DESC", "NULLS", "FIRST", "LAST", "LIMIT", "OFFSET",
                      "HAVING", "TRUE", "FALSE", "NULL", "LIKE", "INCLUDES", "EXCLUDES"})
AGGREGATES = frozenset({"MIN", "MAX", "COUNT", "SUM", "AVG"})
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, "<>": operator.ne, "<": operator.lt,
    "<=": operator.le, ">": operator.gt, ">=": operator.ge}
SF_TYPE_NAMES = {"datetime": "dateTime", "date": "date", "boolean": "boolean"}
NO_SUCH_COLUMN = ("No such column '{field}' on entity '{entity}'. If you are attempting to use a "
                  "custom field, be sure to append the '__c' after the custom field name. Please "
                  "reference your WSDL or the describe call for the appropriate names.")


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    at: int

    @property
    def word(self) -> str:
        return self.text.upper() if self.kind == "name" else ""


def _tokens(soql: str) -> list[Token]:
    tokens, at = [], 0
    while at < len(soql):
        match = _TOKEN.match(soql, at)
        if match is None:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{soql[at]}'", at)
        if match.lastgroup != "space":
            tokens.append(Token(match.lastgroup, match.group(), at))
        at = match.end()
    return tokens


@dataclass
class _Path:
    """A resolved field: its names from the queried object, and the last one's Field."""

    names: tuple[str, ...]  # e.g. ("RecordType", "Name")
    field: Field
    relationship_to: str | None = None  # the related object, for a relationship path

    def value(self, row: dict) -> Any:
        value: Any = row
        for name in self.names:
            if value is None:
                return None
            value = value.get(name)
        return value


@dataclass
class _Item:
    """One SELECT item: a field, or an aggregate of a field (None: COUNT())."""

    path: _Path | None
    function: str | None = None
    alias: str | None = None
    at: int = 0


@dataclass
class Query:
    sobject: SObject
    items: list[_Item]
    where: Callable[[dict], bool] | None = None
    group_by: list[_Path] = field(default_factory=list)
    order_by: list[tuple[_Path | _Item, bool, bool]] = field(default_factory=list)
    limit: int | None = None

    @property
    def aggregate(self) -> bool:
        return bool(self.group_by) or any(item.function for item in self.items)


class _Parser:
    def __init__(self, soql: str, schema: dict[str, SObject]):
        self.soql = soql
        self.schema = schema
        self.tokens = _tokens(soql)
        self.position = 0
        self.sobject: SObject | None = None  # known once FROM is read

    # -- tokens -----------------------------------------------------------------

    def peek(self, ahead: int = 0) -> Token | None:
        index = self.position + ahead
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise SoqlError("MALFORMED_QUERY", "unexpected end of query", len(self.soql))
        self.position += 1
        return token

    def accept(self, word: str) -> bool:
        token = self.peek()
        if token is not None and (token.word == word
                                  or (token.kind == "punct" and token.text == word)):
            self.position += 1
            return True
        return False

    def expect(self, word: str) -> None:
        if not self.accept(word):
            self.unexpected()

    def unexpected(self) -> None:
        token = self.peek()
        if token is None:
            raise SoqlError("MALFORMED_QUERY", "unexpected end of query", len(self.soql))
        raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{token.text}'", token.at)

    # -- the query ----------------------------------------------------------------

    def parse(self) -> Query:
        self.expect("SELECT")
        raw_items = [self.select_item()]
        while self.accept(","):
            raw_items.append(self.select_item())
        self.expect("FROM")
        name = self.take()
        sobject = self.schema.get(name.text.lower()) if name.kind == "name" else None
        if sobject is None:
            raise SoqlError("INVALID_TYPE", f"sObject type '{name.text}' is not supported. If you "
                            "are attempting to use a custom object, be sure to append the '__c' "
                            "after the entity name. Please reference your WSDL or the describe "
                            "call for the appropriate names.", name.at)
        self.sobject = sobject
        query = Query(sobject, [self.resolve_item(*raw) for raw in raw_items])
        if self.accept("WHERE"):
            query.where = self.condition()
        if self.accept("GROUP"):
            self.expect("BY")
            query.group_by = [self.group_path()]
            while self.accept(","):
                query.group_by.append(self.group_path())
        if self.accept("ORDER"):
            self.expect("BY")
            query.order_by = [self.order_item()]
            while self.accept(","):
                query.order_by.append(self.order_item())
        if self.accept("LIMIT"):
            token = self.take()
            if token.kind != "number" or not token.text.isdigit():
                raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{token.text}'", token.at)
            query.limit = int(token.text)
        if self.peek() is not None:
            self.unexpected()
        self.check(query)
        return query

    def select_item(self) -> tuple[Token, Token | None, Token | None, bool]:
        """(name, argument, alias, is a function call), resolved once FROM is known."""
        name = self.take()
        if name.kind != "name" or name.word in KEYWORDS:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{name.text}'", name.at)
        call = self.accept("(")
        argument = self.call_argument() if call else None
        alias = None
        token = self.peek()
        if token is not None and token.kind == "name" and token.word not in KEYWORDS:
            alias = self.take()
        return name, argument, alias, call

    def call_argument(self) -> Token | None:
        """The field inside a function's parentheses (the "(" is read), None for COUNT()."""
        if self.accept(")"):
            return None
        argument = self.take()
        if argument.kind != "name":
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{argument.text}'", argument.at)
        self.expect(")")
        return argument

    def resolve_item(self, name: Token, argument: Token | None, alias: Token | None,
                     call: bool) -> _Item:
        alias_text = alias.text if alias else None
        if not call:
            return _Item(self.path(name), alias=alias_text, at=name.at)
        function = name.word
        if function not in AGGREGATES:
            raise SoqlError("MALFORMED_QUERY", f"Unknown function: {name.text}", name.at)
        if argument is None:
            if function != "COUNT":
                raise SoqlError("MALFORMED_QUERY", f"{function}() needs a field", name.at)
            return _Item(None, "COUNT()", alias_text, name.at)
        path = self.path(argument)
        if function in ("SUM", "AVG") and path.field.type not in NUMBER_TYPES or \
                path.field.type == "anyType":
            raise SoqlError("INVALID_FIELD", f"field {path.field.name} does not support aggregate "
                            f"operator {function}", argument.at)
        return _Item(path, function, alias_text, name.at)

    def path(self, token: Token) -> _Path:
        names = token.text.split(".")
        sobject, resolved, related = self.sobject, [], None
        for index, name in enumerate(names):
            if index < len(names) - 1:
                reference = sobject.relationship(name)
                if reference is None:
                    raise SoqlError("INVALID_FIELD", f"Didn't understand relationship '{name}' in "
                                    "field path. If you are attempting to use a custom "
                                    "relationship, be sure to append the '__r' after the custom "
                                    "relationship name. Please reference your WSDL or the "
                                    "describe call for the appropriate names.", token.at)
                resolved.append(reference.relationship)
                sobject = self.schema[reference.reference_to.lower()]
                related = sobject.name
            else:
                found = sobject.field(name)
                if found is None:
                    raise SoqlError("INVALID_FIELD", NO_SUCH_COLUMN.format(
                        field=name, entity=sobject.name), token.at)
                resolved.append(found.name)
                return _Path(tuple(resolved), found, related)
        raise AssertionError("unreachable")

    def group_path(self) -> _Path:
        token = self.take()
        if token.kind != "name":
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{token.text}'", token.at)
        path = self.path(token)
        if not path.field.groupable:
            raise SoqlError("INVALID_FIELD", f"field '{path.field.name}' can not be grouped in "
                            "a query call", token.at)
        return path

    def order_item(self) -> tuple[_Path | _Item, bool, bool]:
        token = self.take()
        if token.kind != "name":
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{token.text}'", token.at)
        if self.accept("("):  # an aggregate, in an aggregate query
            target: _Path | _Item = self.resolve_item(token, self.call_argument(), None, True)
        else:
            target = self.path(token)
            if not target.field.sortable:
                raise SoqlError("INVALID_FIELD", f"field '{target.field.name}' can not be sorted "
                                "in a query call", token.at)
        descending = self.accept("DESC")
        if not descending:
            self.accept("ASC")
        nulls_first = not descending
        if self.accept("NULLS"):
            if self.accept("FIRST"):
                nulls_first = True
            else:
                self.expect("LAST")
                nulls_first = False
        return target, descending, nulls_first

    # -- WHERE ----------------------------------------------------------------------

    def condition(self) -> Callable[[dict], bool]:
        """Terms joined by AND or by OR: mixing them needs parentheses, as in SOQL."""
        terms = [self.term()]
        joiner = None
        while (token := self.peek()) is not None and token.word in ("AND", "OR"):
            if joiner is not None and token.word != joiner:
                raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{token.text}'", token.at)
            joiner = token.word
            self.take()
            terms.append(self.term())
        if len(terms) == 1:
            return terms[0]
        if joiner == "AND":
            return lambda row: all(term(row) for term in terms)
        return lambda row: any(term(row) for term in terms)

    def term(self) -> Callable[[dict], bool]:
        if self.accept("NOT"):
            inner = self.term()
            return lambda row: not inner(row)
        if self.accept("("):
            inner = self.condition()
            self.expect(")")
            return inner
        token = self.take()
        if token.kind != "name" or token.word in KEYWORDS:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{token.text}'", token.at)
        path = self.path(token)
        if not path.field.filterable:
            raise SoqlError("INVALID_FIELD", f"field '{path.field.name}' can not be filtered in "
                            "a query call", token.at)
        negated = self.accept("NOT")
        if negated or self.accept("IN"):
            if negated:
                self.expect("IN")
            self.expect("(")
            values = [self.literal(path)]
            while self.accept(","):
                values.append(self.literal(path))
            self.expect(")")
            return _membership(path, values, negated)
        op = self.take()
        if op.kind != "op":
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{op.text}'", op.at)
        return _comparison(path, op.text, self.literal(path))

    def literal(self, path: _Path) -> Any:
        """A literal of the field's type, as a row value; a wrong type is INVALID_FIELD."""
        token = self.take()
        kind = path.field.type
        if token.word == "NULL":
            return None
        expected = "datetime" if kind == "datetime" else "date" if kind == "date" else \
            "boolean" if kind == "boolean" else "number" if kind in NUMBER_TYPES else "string"
        got = {"string": "string", "datetime": "datetime", "date": "date",
               "number": "number"}.get(token.kind)
        if token.word in ("TRUE", "FALSE"):
            got = "boolean"
        if got != expected:
            if got is None:
                raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{token.text}'", token.at)
            quoted = "and should be enclosed in quotes" if expected == "string" else \
                "and should not be enclosed in quotes"
            raise SoqlError("INVALID_FIELD", f"value of filter criterion for field "
                            f"'{path.field.name}' must be of type "
                            f"{SF_TYPE_NAMES.get(kind, kind)} {quoted}", token.at)
        if got == "string":
            return re.sub(r"\\(.)", r"\1", token.text[1:-1])
        if got == "boolean":
            return token.word == "TRUE"
        if got == "number":
            return float(token.text)
        if got == "date":
            return _parse_time(token.text + "T00:00:00Z")
        return _parse_time(token.text)

    # -- checks -------------------------------------------------------------------

    def check(self, query: Query) -> None:
        seen = set()
        for item in query.items:
            key = (item.function, item.path.names if item.path else None)
            if item.function is None and key in seen:
                raise SoqlError("MALFORMED_QUERY", f"duplicate field selected: "
                                f"{'.'.join(item.path.names)}", item.at)
            seen.add(key)
        counts = [item for item in query.items if item.function == "COUNT()"]
        if counts and (len(query.items) > 1 or query.group_by):
            raise SoqlError("MALFORMED_QUERY", "COUNT() must be the only element in the SELECT "
                            "list", counts[0].at)
        if not query.aggregate:
            for item in query.items:
                if item.alias:
                    raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{item.alias}'",
                                    item.at)
            for target, _, _ in query.order_by:
                if isinstance(target, _Item):
                    raise SoqlError("MALFORMED_QUERY", "Ordered field must be grouped or "
                                    "aggregated", target.at)
            return
        grouped = {path.names for path in query.group_by}
        for item in query.items:
            if item.function is None and item.path.names not in grouped:
                raise SoqlError("MALFORMED_QUERY", "Field must be grouped or aggregated: "
                                f"{item.path.field.name}", item.at)
        for target, _, _ in query.order_by:
            if isinstance(target, _Path) and target.names not in grouped:
                raise SoqlError("MALFORMED_QUERY", "Ordered field must be grouped or "
                                f"aggregated: {target.field.name}")
        if query.limit is not None and not query.group_by and not counts:
            raise SoqlError("MALFORMED_QUERY", "An aggregate query with a LIMIT needs GROUP BY")


def _parse_time(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def _fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _comparison(path: _Path, op: str, literal: Any) -> Callable[[dict], bool]:
    compare = OPERATORS[op]
    literal = _fold(literal)

    def test(row: dict) -> bool:
        value = path.value(row)
        if value is None or literal is None:
            if op == "=":
                return value is None and literal is None
            if op in ("!=", "<>"):
                return (value is None) != (literal is None)
            return False
        return compare(_fold(value), literal)

    return test


def _membership(path: _Path, values: list[Any], negated: bool) -> Callable[[dict], bool]:
    members = {_fold(v) for v in values}
    if negated:
        return lambda row: _fold(path.value(row)) not in members
    return lambda row: _fold(path.value(row)) in members


def parse_soql(soql: str, schema: dict[str, SObject]) -> Query:
    return _Parser(soql, schema).parse()


def error_message(soql: str, error: SoqlError) -> str:
    """Salesforce's form: the query, a caret under the spot, then the message."""
    if error.at is None:
        return str(error)
    line = soql.count("\n", 0, error.at) + 1
    start = soql.rfind("\n", 0, error.at) + 1
    column = error.at - start + 1
    text = soql.split("\n")[line - 1]
    return f"\n{text}\n{' ' * (column - 1)}^\nERROR at Row:{line}:Column:{column}\n{error}"


# -- running a query ----------------------------------------------------------

def _serialize(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "datetime":
        return datetime_text(value)
    if kind == "date":
        return date_text(value)
    return value


def _sort_key(value: Any, descending: bool, nulls_first: bool) -> tuple:
    # After a reverse sort for DESC, the flag still puts nulls where asked.
    none_flag = 1 if nulls_first == descending else 0
    return (none_flag, 0) if value is None else (1 - none_flag, _fold(value))


def run(query: Query, rows: list[dict], api_path: str) -> tuple[list[dict], int]:
    """(records as Salesforce sends them, totalSize)."""
    selected = [row for row in rows if query.where is None or query.where(row)]
    if query.aggregate:
        return _aggregate(query, selected)
    for target, descending, nulls_first in reversed(query.order_by):
        selected.sort(key=lambda row: _sort_key(target.value(row), descending, nulls_first),
                      reverse=descending)
    if query.limit is not None:
        selected = selected[:query.limit]
    return [_record(query, row, api_path) for row in selected], len(selected)


def _record(query: Query, row: dict, api_path: str) -> dict:
    name = query.sobject.name
    record: dict[str, Any] = {"attributes": {"type": name,
                                             "url": f"{api_path}/sobjects/{name}/{row['Id']}"}}
    for item in query.items:
        path = item.path
        if len(path.names) == 1:
            record[path.names[0]] = _serialize(path.field.type, row.get(path.names[0]))
            continue
        related = row.get(path.names[0])
        if related is None:
            record[path.names[0]] = None
            continue
        nested = record.get(path.names[0])
        if nested is None:
            nested = record[path.names[0]] = {"attributes": {
                "type": path.relationship_to,
                "url": f"{api_path}/sobjects/{path.relationship_to}/{related['Id']}"}}
        nested[path.names[-1]] = _serialize(path.field.type, related.get(path.names[-1]))
    return record


def _aggregate(query: Query, rows: list[dict]) -> tuple[list[dict], int]:
    if query.items[0].function == "COUNT()":
        return [], len(rows)
    groups: dict[tuple, list[dict]] = {(): rows} if not query.group_by else {}
    for row in rows if query.group_by else ():
        groups.setdefault(tuple(path.value(row) for path in query.group_by), []).append(row)
    names, expr = [], itertools.count()
    for item in query.items:
        names.append(item.alias or (f"expr{next(expr)}" if item.function else item.path.names[-1]))
    results = []
    for members in groups.values():
        record: dict[str, Any] = {"attributes": {"type": "AggregateResult"}}
        values = []
        for item, name in zip(query.items, names):
            value = _aggregate_value(item, members)
            values.append(value)
            kind = "int" if item.function == "COUNT" else item.path.field.type
            record[name] = _serialize(kind, value)
        results.append((values, members, record))
    for target, descending, nulls_first in reversed(query.order_by):
        def key(entry: tuple) -> tuple:
            value = _aggregate_value(target, entry[1]) if isinstance(target, _Item) \
                else target.value(entry[1][0])
            return _sort_key(value, descending, nulls_first)
        results.sort(key=key, reverse=descending)
    if query.limit is not None:
        results = results[:query.limit]
    return [record for _, _, record in results], len(results)


def _aggregate_value(item: _Item, rows: list[dict]) -> Any:
    if item.function is None:
        return item.path.value(rows[0]) if rows else None
    values = [v for v in (item.path.value(row) for row in rows) if v is not None]
    if item.function == "COUNT":
        return len(values)
    if not values:
        return None
    if item.function == "MIN":
        return min(values, key=_fold)
    if item.function == "MAX":
        return max(values, key=_fold)
    total = sum(values)
    return total if item.function == "SUM" else total / len(values)


# -- the server ---------------------------------------------------------------

class ApiError(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None):
        super().__init__(str(body))
        self.status = status
        self.body = body
        self.headers = headers or {}


def _error(status: int, code: str, message: str) -> ApiError:
    return ApiError(status, [{"message": message, "errorCode": code}])


_DATA = re.compile(r"/services/data/v(\d+\.\d)(/.*)?")


class FakeSalesforce(FakeServer):
    """A Salesforce REST API double on 127.0.0.1 (see the module doc)."""

    name = "fake-salesforce"
    server_header = "sfdcedge"
    malformed_body = b'{"totalSize":12,"done":true,"records":[{"attributes":{"type":"Lea'

    def __init__(self, company: CrmCompany, *, client_id: str = DEFAULT_CLIENT_ID,
                 client_secret: str = DEFAULT_CLIENT_SECRET, multi_currency: bool = True,
                 batch_size: int = BATCH_SIZE, daily_limit: int = DAILY_LIMIT,
                 token_lifetime: float | None = TOKEN_LIFETIME,
                 host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.company = company
        self.client_id = client_id
        self.client_secret = client_secret
        self.multi_currency = multi_currency
        self.batch_size = batch_size
        self.daily_limit = daily_limit
        self.token_lifetime = token_lifetime
        self.token_requests = 0
        self.tokens_issued = 0
        self._state = threading.Lock()
        self._tokens: dict[str, float] = {}  # token -> when issued (time.monotonic)
        self._expire_after: int | None = None  # calls left before every token expires
        self._usage_day = int(time.time() // DAY)
        self._usage = 0
        self._cursors: collections.OrderedDict[str, list[dict]] = collections.OrderedDict()
        self._locators = itertools.count(1)
        self.schema: dict[str, SObject] = {}
        self.tables: dict[str, list[dict]] = {}
        self.reload()

    def reload(self) -> None:
        """Re-read the company (after changes to it)."""
        schema = _schema(self.multi_currency)
        tables = _tables(self.company, self.multi_currency)
        with self._state:
            self.schema, self.tables = schema, tables

    # -- controls for tests ---------------------------------------------------

    def expire_tokens(self, after_calls: int = 0) -> None:
        """Every token issued so far stops working now, or after `after_calls` more data calls."""
        with self._state:
            if after_calls <= 0:
                self._tokens.clear()
                self._expire_after = None
            else:
                self._expire_after = after_calls

    @property
    def api_usage(self) -> int:
        """Data calls counted today against daily_limit."""
        with self._state:
            self._roll_day()
            return self._usage

    def failure_body(self, status: int) -> Any:
        if status == 401:
            return INVALID_SESSION
        if status == 403:
            return LIMIT_EXCEEDED
        return [{"message": f"simulated failure ({status})", "errorCode": "UNKNOWN_EXCEPTION"}]

    # -- requests -------------------------------------------------------------

    def respond(self, method: str, path: str, query: dict[str, list[str]], headers: Any,
                body: bytes) -> Response:
        try:
            if path == "/services/oauth2/token":
                if method != "POST":
                    raise ApiError(400, {"error": "invalid_request",
                                         "error_description": "must use HTTP POST"})
                return 200, {}, json_body(self._token(body))
            if path.rstrip("/") == "/services/data" and method == "GET":
                return 200, {}, json_body([{"label": f"v{v}", "url": f"/services/data/v{v}",
                                            "version": v} for v in VERSIONS])
            match = _DATA.fullmatch(path)
            if match is None:
                raise ApiError(404, NOT_FOUND)
            self._authorize(headers.get("Authorization"))
            limit_info = self._count_call()
            try:
                return 200, limit_info, json_body(self._data(method, match.group(1),
                                                             match.group(2) or "", query))
            except ApiError as err:
                return err.status, limit_info, json_body(err.body)
        except ApiError as err:
            return err.status, err.headers, json_body(err.body)

    def _token(self, raw: bytes) -> dict:
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        with self._state:
            self.token_requests += 1
        if form.get("grant_type") != "client_credentials":
            raise ApiError(400, {"error": "unsupported_grant_type",
                                 "error_description": "grant type not supported"})
        if form.get("client_id") != self.client_id:
            raise ApiError(400, {"error": "invalid_client_id",
                                 "error_description": "client identifier invalid"})
        if not hmac.compare_digest(form.get("client_secret", "").encode(),
                                   self.client_secret.encode()):
            raise ApiError(400, {"error": "invalid_client",
                                 "error_description": "invalid client credentials"})
        token = f"{ORG_ID[:15]}!AQ4AQ{secrets.token_urlsafe(72)}"
        issued = str(int(time.time() * 1000))
        identity = f"{self.url}/id/{ORG_ID}/{USER_ID}"
        signature = base64.b64encode(hmac.new(self.client_secret.encode(),
                                              (identity + issued).encode(),
                                              hashlib.sha256).digest()).decode()
        with self._state:
            self._tokens[token] = time.monotonic()
            self.tokens_issued += 1
        return {"access_token": token, "signature": signature, "scope": "api",
                "instance_url": self.url, "id": identity, "token_type": "Bearer",
                "issued_at": issued}

    def _authorize(self, header: str | None) -> None:
        scheme, _, token = (header or "").partition(" ")
        with self._state:
            issued = self._tokens.get(token.strip()) if scheme.lower() in ("bearer", "oauth") \
                else None
            if issued is not None and self.token_lifetime is not None \
                    and time.monotonic() - issued > self.token_lifetime:
                del self._tokens[token.strip()]
                issued = None
            if issued is None:
                raise ApiError(401, INVALID_SESSION)
            if self._expire_after is not None:
                self._expire_after -= 1
                if self._expire_after <= 0:  # this call is the last one they allow
                    self._tokens.clear()
                    self._expire_after = None

    def _roll_day(self) -> None:
        day = int(time.time() // DAY)
        if day != self._usage_day:
            self._usage_day, self._usage = day, 0

    def _count_call(self) -> dict[str, str]:
        """Count a data call against the daily limit, or refuse it past the limit; the
        Sforce-Limit-Info header either way."""
        with self._state:
            self._roll_day()
            refused = self._usage >= self.daily_limit
            if not refused:
                self._usage += 1
            info = {"Sforce-Limit-Info": f"api-usage={self._usage}/{self.daily_limit}"}
        if refused:
            raise ApiError(403, LIMIT_EXCEEDED, info)
        return info

    def _data(self, method: str, version: str, rest: str, query: dict[str, list[str]]) -> Any:
        if version not in VERSIONS:
            raise ApiError(404, NOT_FOUND)
        if method != "GET":
            raise _error(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. "
                         "Allowed are GET")
        api_path = f"/services/data/v{version}"
        if rest in ("/query", "/query/"):
            soql = (query.get("q") or [""])[0]
            if not soql.strip():
                raise _error(400, "MALFORMED_QUERY", "A query string has to be specified")
            return self._query(soql, api_path)
        if rest.startswith("/query/"):
            return self._next_batch(rest[len("/query/"):], api_path)
        if rest == "/limits":
            with self._state:
                return {"DailyApiRequests": {"Max": self.daily_limit,
                                             "Remaining": self.daily_limit - self._usage}}
        parts = rest.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "sobjects" and parts[2] == "describe":
            sobject = self.schema.get(parts[1].lower())
            if sobject is None:
                raise ApiError(404, NOT_FOUND)
            return _describe(sobject, api_path)
        raise ApiError(404, NOT_FOUND)

    def _query(self, soql: str, api_path: str) -> dict:
        try:
            parsed = parse_soql(soql, self.schema)
        except SoqlError as err:
            raise _error(400, err.code, error_message(soql, err)) from None
        records, total = run(parsed, self.tables[parsed.sobject.name.lower()], api_path)
        if parsed.aggregate and len(records) > AGGREGATE_LIMIT:
            raise _error(400, "EXCEEDED_ID_LIMIT", "Aggregate query does not support "
                         "queryMore(), use LIMIT to restrict the results to a single batch")
        return self._batch(records, total, 0, None, api_path)

    def _batch(self, records: list[dict], total: int, offset: int, locator: str | None,
               api_path: str) -> dict:
        size = max(1, self.batch_size)
        page = records[offset:offset + size]
        answer: dict[str, Any] = {"totalSize": total, "done": offset + size >= len(records)}
        if not answer["done"]:
            if locator is None:
                locator = f"01g5g{next(self._locators):010d}AAA"
                with self._state:
                    self._cursors[locator] = records
                    while len(self._cursors) > CURSORS_KEPT:
                        self._cursors.popitem(last=False)
            answer["nextRecordsUrl"] = f"{api_path}/query/{locator}-{offset + size}"
        answer["records"] = page
        return answer

    def _next_batch(self, name: str, api_path: str) -> dict:
        locator, _, offset = name.rpartition("-")
        with self._state:
            records = self._cursors.get(locator)
        if records is None or not offset.isdigit() or int(offset) >= len(records):
            raise _error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._batch(records, len(records), int(offset), locator, api_path)


def _describe(sobject: SObject, api_path: str) -> dict:
    fields = []
    for f in sobject.fields:
        fields.append({"name": f.name, "label": f.name, "type": f.type, "nillable": f.nillable,
                       "filterable": f.filterable, "groupable": f.groupable,
                       "sortable": f.sortable, "relationshipName": f.relationship,
                       "referenceTo": [f.reference_to] if f.reference_to else []})
    return {"name": sobject.name, "label": sobject.name, "keyPrefix": sobject.prefix,
            "queryable": True, "retrieveable": True, "createable": False,
            "urls": {"describe": f"{api_path}/sobjects/{sobject.name}/describe"},
            "fields": fields}
