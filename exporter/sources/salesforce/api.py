"""Talk to Salesforce's REST API: an OAuth token, SOQL queries with their pages.

- Token: the OAuth 2.0 client credentials flow, `POST {login_url}/services/oauth2/token`
  (a form with grant_type=client_credentials, client_id, client_secret). The
  answer holds `access_token` and `instance_url` but no lifetime and no refresh
  token, so the token is kept until a call says it is no longer valid.
- Calls: `{instance_url}/services/data/v{api_version}/...` with
  `Authorization: Bearer <token>`. A 401 INVALID_SESSION_ID (the token expired
  or was revoked) gets one new token and the call once more; a second 401
  fails the poll.
- Queries: `GET .../query?q=<SOQL>` answers up to 2,000 records a batch; while
  `done` is false, `nextRecordsUrl` (a path on the instance) names the next
  batch. A link anywhere but under /services/data/ on the instance is refused:
  the token goes nowhere else.
- Every answer carries `Sforce-Limit-Info: api-usage=USED/LIMIT`, the org's
  calls in the last 24 hours; a warning is logged when they pass 90 %. A spent
  quota (403 REQUEST_LIMIT_EXCEEDED) fails at once, without retries (see
  exporter.http).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterator
from urllib.parse import urlsplit

from exporter.http import HttpClient, UpstreamError
from exporter.secrets import Secret, register
from exporter.sources.base import UpstreamDataError

log = logging.getLogger(__name__)

NAME = "salesforce"
TOKEN_PATH = "/services/oauth2/token"
DATA_PATH = "/services/data/"
USAGE_WARNING = 0.9  # share of the org's daily API calls that logs a warning

_LIMIT_INFO = re.compile(r"api-usage=(\d+)/(\d+)")


class ApiUsage:
    """Reads `Sforce-Limit-Info` from every answer (an HttpClient `pace` hook that never
    holds a request back) and warns once each time usage passes USAGE_WARNING."""

    def __init__(self) -> None:
        self.used: int | None = None
        self.limit: int | None = None
        self._warned = False

    def __call__(self, headers: Any) -> None:
        match = _LIMIT_INFO.search(headers.get("Sforce-Limit-Info") or "")
        if not match:
            return None
        self.used, self.limit = int(match.group(1)), int(match.group(2))
        high = self.limit > 0 and self.used >= USAGE_WARNING * self.limit
        if high and not self._warned:
            log.warning("salesforce: the org has used %d of its %d daily API requests; "
                        "at the limit every call fails until the 24-hour window frees",
                        self.used, self.limit)
        self._warned = high
        return None


class SalesforceApi:
    """One org's REST API through one HttpClient: the token, calls and query pages."""

    def __init__(self, client: HttpClient, login_url: str, client_id: str,
                 client_secret: Secret, api_version: str):
        self.client = client
        self.login_url = login_url.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.api_version = api_version
        self.instance_url: str | None = None
        self._token: str | None = None
        self.tokens = 0  # tokens obtained over the source's life

    @property
    def data_path(self) -> str:
        return f"{DATA_PATH}v{self.api_version}"

    # -- calls ----------------------------------------------------------------

    def get(self, path: str, params: Any = None) -> Any:
        """GET a path of the instance (e.g. /services/data/v62.0/sobjects/...)."""
        if self._token is None:
            self.authenticate()
        try:
            return self._get(path, params)
        except UpstreamError as exc:
            if exc.status != 401 or exc.code != "INVALID_SESSION_ID":
                raise
        log.info("salesforce: the access token is no longer valid; getting a new one")
        self.authenticate()
        return self._get(path, params)  # a second 401 fails the poll

    def _get(self, path: str, params: Any) -> Any:
        return self.client.request_json("GET", f"{self.instance_url}{path}", params=params,
                                        headers={"Authorization": f"Bearer {self._token}"})

    def query(self, soql: str) -> Iterator[dict]:
        """Every record a SOQL query selects, batch after batch."""
        page = self.get(f"{self.data_path}/query", {"q": soql})
        trail = self.client.trail(f"{self.data_path}/query")
        while True:
            records = page.get("records") if isinstance(page, dict) else None
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise UpstreamDataError("salesforce: a query answer has no list of records")
            yield from records
            done = page.get("done")
            if done is True:
                return
            if done is not False:
                raise UpstreamDataError(f"salesforce: a query answer's 'done' is {done!r}")
            following = _next_path(page.get("nextRecordsUrl"))
            trail.visit(following)
            page = self.get(following)

    # -- the token ------------------------------------------------------------

    def authenticate(self) -> None:
        """A new access token (client credentials flow) and the instance it is for."""
        url = f"{self.login_url}{TOKEN_PATH}"
        form = {"grant_type": "client_credentials", "client_id": self.client_id,
                "client_secret": self.client_secret.reveal()}
        self._token = None
        try:
            answer = self.client.request_json("POST", url, data=form)
        except UpstreamError as exc:
            if exc.status not in (400, 401):
                raise
            # invalid_client (a wrong id or secret), invalid_grant (login.salesforce.com
            # instead of the My Domain, or no run-as user): no API call can succeed.
            said = f" ({exc.code})" if exc.code else ""
            raise UpstreamError(
                NAME, "POST", url, "auth", exc.status,
                f"the token request was refused{said}: check that login_url is the org's "
                "My Domain, that client_id and client_secret are the external client app's, "
                "and that its client credentials flow has a run-as user", exc.code) from None
        token = answer.get("access_token") if isinstance(answer, dict) else None
        instance = answer.get("instance_url") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise UpstreamDataError("salesforce: the token answer has no access_token")
        register(token)  # scrubbed from any message, should one echo it
        self.instance_url = self._checked_instance(instance)
        self._token = token
        self.tokens += 1
        log.debug("salesforce: got an access token for %s", self.instance_url)

    def _checked_instance(self, instance: Any) -> str:
        """The instance URL, if it is a plain https origin (or the login URL's own scheme,
        for a local fake): the token is sent there."""
        parts = urlsplit(instance) if isinstance(instance, str) else None
        schemes = {"https", urlsplit(self.login_url).scheme}
        if parts is None or parts.scheme not in schemes or not parts.netloc \
                or parts.path.strip("/") or parts.query or "@" in parts.netloc:
            raise UpstreamDataError("salesforce: the token answer has no usable instance_url")
        return f"{parts.scheme}://{parts.netloc}"


def _next_path(link: Any) -> str:
    """nextRecordsUrl, if it is a path under /services/data/ (never another host)."""
    parts = urlsplit(link) if isinstance(link, str) else None
    if parts is None or parts.scheme or parts.netloc or parts.query or parts.fragment \
            or not parts.path.startswith(DATA_PATH) or ".." in parts.path.split("/"):
        raise UpstreamDataError("salesforce: a query's next batch is not a path on the instance")
    return parts.path
