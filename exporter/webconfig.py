"""TLS and basic auth for the exporter's HTTP endpoints, configured like every Prometheus
exporter: a web config file in the exporter-toolkit format.

    tls_server_config:
      cert_file: server.crt          # relative paths: from this file's directory
      key_file: server.key
      client_ca_file: clients-ca.crt # to check client certificates (mTLS)
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12             # TLS10 .. TLS13
      max_version: TLS13
    basic_auth_users:                # user: bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\\n')
      prometheus: $2y$10$...
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}

Given as `web_config_file:` in the config or `--web-config-file` (which wins).
Every problem is a ConfigError naming the web config file and the key. With
users configured, every path but /healthz (a container's health check) needs
the credentials.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt

from exporter.config import ConfigError, Section, load_yaml

TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# exporter-toolkit's client_auth_type values, as Python's ssl can do them: whether a
# client certificate is asked for (CERT_OPTIONAL) or required (CERT_REQUIRED), always
# checked against client_ca_file when one is asked for.
CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_OPTIONAL,
               "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
               "RequireAnyClientCert": ssl.CERT_REQUIRED,
               "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
OPEN_PATHS = frozenset({"/healthz"})  # answered without credentials: container health checks
_BCRYPT = (b"$2a$", b"$2b$", b"$2y$")


@dataclass(frozen=True)
class WebConfig:
    file: str
    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)  # name -> bcrypt hash
    headers: tuple[tuple[str, str], ...] = ()
    _verified: dict[bytes, bool] = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def allows(self, path: str, authorization: str | None) -> bool:
        """Whether a request for `path` with this Authorization header may be answered."""
        if not self.users or path in OPEN_PATHS:
            return True
        if not authorization or not authorization.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(authorization[6:].strip(), validate=True) \
                .decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            bcrypt.checkpw(b"not a user", _DUMMY)  # the same cost whether or not the user exists
            return False
        # bcrypt is slow on purpose; Prometheus sends the same credentials every scrape:
        # remember the answer for exactly these bytes (a keyed digest, never the password).
        key = hmac.new(hashed, f"{user}:{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            known = self._verified.get(key)
        if known is None:
            known = bcrypt.checkpw(password.encode(), hashed)
            with self._lock:
                if len(self._verified) > 1000:
                    self._verified.clear()
                self._verified[key] = known
        return known


_DUMMY = bcrypt.hashpw(b"dummy", bcrypt.gensalt(4))


def load(file: str) -> WebConfig:
    """Read and check a web config file; a ConfigError names the file and the key."""
    top = Section(file, "", load_yaml(file))
    base = Path(file).resolve().parent
    tls = _tls(top.section("tls_server_config"), base) if top.has("tls_server_config") else None
    users = _users(top.section("basic_auth_users")) if top.has("basic_auth_users") else {}
    headers = _headers(top.section("http_server_config"))
    top.finish()
    return WebConfig(file=file, tls=tls, users=users, headers=headers)


def _path(section: Section, name: str, base: Path) -> str:
    value = section.string(name, required=True)
    path = (base / value) if not Path(value).is_absolute() else Path(value)
    if not path.is_file():
        raise section.error(name, f"{path} is not a readable file")
    return str(path)


def _tls(section: Section, base: Path) -> ssl.SSLContext:
    cert, key = _path(section, "cert_file", base), _path(section, "key_file", base)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise section.error("cert_file", f"cannot use {cert} with {section.raw('key_file')}: "
                            f"{exc.reason or exc}") from None
    for name, attribute, default in (("min_version", "minimum_version", "TLS12"),
                                     ("max_version", "maximum_version", "TLS13")):
        version = section.string(name, default)
        if version not in TLS_VERSIONS:
            raise section.error(name, f"{version!r} is not one of {', '.join(TLS_VERSIONS)}")
        setattr(context, attribute, TLS_VERSIONS[version])
    if context.minimum_version > context.maximum_version:
        raise section.error("min_version", "is above max_version")
    auth = section.string("client_auth_type", "NoClientCert")
    if auth not in CLIENT_AUTH:
        raise section.error("client_auth_type", f"{auth!r} is not one of {', '.join(CLIENT_AUTH)}")
    context.verify_mode = CLIENT_AUTH[auth]
    if section.has("client_ca_file"):
        ca = _path(section, "client_ca_file", base)
        try:
            context.load_verify_locations(ca)
        except ssl.SSLError as exc:
            raise section.error("client_ca_file", f"{ca}: {exc.reason or exc}") from None
    elif context.verify_mode != ssl.CERT_NONE:
        raise section.error("client_auth_type", f"{auth} needs client_ca_file to check the "
                            "client certificates against")
    section.finish()
    return context


def _users(section: Section) -> dict[str, bytes]:
    users = {}
    for name in list(section.data):
        hashed = section.string(str(name), required=True).encode()
        if not hashed.startswith(_BCRYPT) or len(hashed) != 60:
            raise section.error(str(name), "is not a bcrypt hash ($2y$..., 60 characters): "
                                "make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`")
        try:
            bcrypt.checkpw(b"", hashed)
        except ValueError:
            raise section.error(str(name), "is not a valid bcrypt hash") from None
        users[str(name)] = hashed
    section.finish()
    if not users:
        raise section.error_at(section.path, "names no user")
    return users


def _headers(section: Section) -> tuple[tuple[str, str], ...]:
    headers: dict[str, Any] = section.raw("headers", {})
    section.boolean("http2", False)  # accepted as exporter-toolkit has it; we speak HTTP/1.1
    section.finish()
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and "\n" not in k + v
            for k, v in headers.items()):
        raise section.error("headers", "must map header names to one-line values")
    return tuple(headers.items())


__all__ = ["ConfigError", "WebConfig", "load", "OPEN_PATHS"]
