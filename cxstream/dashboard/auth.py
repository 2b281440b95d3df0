"""Who may use the dashboard, and as what.

People sign in, each with a role:

* ``viewer`` — the overview, the incidents and their value at risk;
* ``care`` — as viewer, plus customer search and customer pages (a care agent);
* ``operator`` — as care, plus the commands: acknowledge and resolve incidents (the NOC).

Identities come from a **users file** (``dashboard.users_file``: each user's role and a salted
scrypt hash of their password, written by ``cxstream dashboard-user``) with a sign-in page and a
signed session cookie (HttpOnly, SameSite=Strict), or from a **trusted reverse proxy** that
authenticates people itself and passes who they are in ``dashboard.proxy_user_header`` (and
their role in ``dashboard.proxy_role_header``). The **shared token** (``dashboard.token``) stays
for the demo and for API clients: it acts as an operator whose name the client gives.

Commands are protected against cross-site request forgery: a POST must carry the header
``X-CSRF-Token`` equal to the ``cx_csrf`` cookie (and, with a session, to the session's own
token), unless it authenticates with an ``Authorization: Bearer`` header (not sent by a browser
on its own). Nothing here is read from Redis, Kafka or the network: the users file is data
(YAML), validated at start.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cxstream import yamlfile
from cxstream.errors import ConfigError

__all__ = [
    "ROLES",
    "Identity",
    "Sessions",
    "Users",
    "allowed",
    "hash_password",
    "verify_password",
]

Role = Literal["viewer", "care", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "care", "operator")
_RANK = {role: n for n, role in enumerate(ROLES)}

# scrypt's interactive-login parameters (RFC 7914 section 2: N = 2^14, r = 8, p = 1): about
# 16 MB and a few tens of milliseconds per check
_N, _R, _P = 2**14, 8, 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64url) of ``password`` with a random 16-byte salt.

    >>> stored = hash_password("correct horse")
    >>> verify_password("correct horse", stored), verify_password("wrong", stored)
    (True, False)
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a :func:`hash_password` string (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt" or int(n) > 2**20 or int(r) > 32 or int(p) > 16:
            return False
        given = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(given, _unb64(digest))


class _UserEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")]
    role: Role
    password_hash: Annotated[str, Field(pattern=r"^scrypt\$")]


class _UsersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[_UserEntry] = Field(default_factory=list)


class Users:
    """The users file: ``users: [{name, role, password_hash}]``."""

    def __init__(self, entries: dict[str, _UserEntry]) -> None:
        self._entries = entries

    @classmethod
    def load(cls, path: str | Path) -> Users:
        """Read and validate the file; a ``ConfigError`` names what is wrong."""
        path = Path(path)
        try:
            data = yamlfile.load(path.read_text(), path) if path.exists() else {"users": []}
            parsed = _UsersFile.model_validate(data or {})
        except (OSError, yaml.YAMLError) as exc:
            msg = f"dashboard.users_file {path}: {exc}"
            raise ConfigError(msg) from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            msg = f"dashboard.users_file {path}: {where}: {first['msg']}"
            raise ConfigError(msg) from None
        names = [u.name for u in parsed.users]
        if len(set(names)) != len(names):
            msg = f"dashboard.users_file {path}: a user is listed twice"
            raise ConfigError(msg)
        return cls({u.name: u for u in parsed.users})

    def check(self, name: str, password: str) -> Role | None:
        """The user's role if the password is theirs, else None (the same work either way)."""
        entry = self._entries.get(name)
        stored = entry.password_hash if entry is not None else _DUMMY
        ok = verify_password(password, stored)
        return entry.role if ok and entry is not None else None

    @staticmethod
    def save(path: str | Path, name: str, role: Role, password: str) -> None:
        """Add or replace one user in the file (created if missing)."""
        path = Path(path)
        current = Users.load(path)._entries if path.exists() else {}
        entry = _UserEntry(name=name, role=role, password_hash=hash_password(password))
        merged = {**current, name: entry}
        text = yaml.safe_dump({"users": [u.model_dump() for u in merged.values()]}, sort_keys=False)
        path.write_text(text)
        path.chmod(0o600)


_DUMMY = hash_password("no such user", salt=b"\0" * 16)


@dataclass(frozen=True)
class Identity:
    """Who made a request: a user and role, and how they were authenticated (``session``,
    ``proxy``, ``token``, ``bearer`` or ``open`` when auth is off)."""

    user: str | None
    role: Role
    via: str
    csrf: str | None = None  # the session's own anti-forgery token


class Sessions:
    """Signed session cookies: ``base64url(json).base64url(hmac-sha256)``, expiring after
    ``hours``; the key is ``secret`` (random per process if not configured)."""

    def __init__(self, secret: bytes | None = None, *, hours: float = 12.0) -> None:
        self._key = secret if secret else secrets.token_bytes(32)
        self._seconds = hours * 3600.0

    def issue(self, user: str, role: Role, now: float | None = None) -> tuple[str, str]:
        """A cookie value for ``user`` and its anti-forgery token."""
        csrf = secrets.token_urlsafe(24)
        expires = (now if now is not None else time.time()) + self._seconds
        body = _b64(json.dumps({"u": user, "r": role, "c": csrf, "e": expires}).encode())
        return f"{body}.{self._sign(body)}", csrf

    def read(self, cookie: str, now: float | None = None) -> Identity | None:
        """The identity in a valid, unexpired cookie, else None."""
        body, _, mac = cookie.partition(".")
        if not body or not hmac.compare_digest(mac, self._sign(body)):
            return None
        try:
            data = json.loads(_unb64(body))
            user, role, csrf, expires = data["u"], data["r"], data["c"], float(data["e"])
        except (ValueError, KeyError, TypeError):
            return None
        if role not in _RANK or expires < (now if now is not None else time.time()):
            return None
        return Identity(user=str(user), role=role, via="session", csrf=str(csrf))

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())


def allowed(role: Role, method: str, path: str) -> bool:
    """Whether ``role`` may make this request (see the module doc).

    >>> allowed("viewer", "GET", "/api/incidents"), allowed("viewer", "GET", "/api/customers/s1")
    (True, False)
    >>> allowed("care", "GET", "/api/customers/s1"), allowed("care", "POST", "/api/incidents/i/ack")
    (True, False)
    >>> allowed("operator", "POST", "/api/incidents/i/resolve"), allowed("viewer", "POST", "/api/logout")
    (True, True)
    """
    if method == "POST" and path != "/api/logout":
        return _RANK[role] >= _RANK["operator"]
    if path.startswith("/api/customers"):
        return _RANK[role] >= _RANK["care"]
    return True
