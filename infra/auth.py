"""Who is calling: bearer tokens with a role, scoped to namespaces, kept hashed in a token file.

A token is ``knf_`` plus 32 random bytes (URL-safe base64); the file keeps only its SHA-256, so reading the file
never gives a token away (the tokens are random and long: a slow hash would add nothing). Roles are ordered:
``viewer`` reads, ``editor`` also changes (runs, pipelines, models, traffic), ``admin`` also manages the platform
(triggers, function instances, tokens). A token's namespaces are the teams it acts for (``*``: all of them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import orjson

from infra.atomic import write_json
from infra.errors import Conflict, InvalidRequest, NotFound
from infra.namespaces import LABEL
from infra.settings import Settings

Role = Literal["viewer", "editor", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "editor", "admin")
ALL = "*"
PREFIX = "knf_"
_NAME = LABEL  # token names and namespaces are both DNS labels


def check_namespace(namespace: str) -> str:
    """``namespace`` if it can name one (a DNS label, as a Kubernetes namespace must be), or ``*``."""
    if namespace != ALL and not _NAME.match(namespace):
        raise InvalidRequest(f"namespace {namespace!r} must be a DNS label (lowercase letters, digits, '-') or '*'")
    return namespace


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the token's name, its role and the namespaces it acts for."""

    name: str
    role: Role
    namespaces: tuple[str, ...]

    def can(self, role: Role) -> bool:
        """Whether this caller's role is at least ``role``."""
        return ROLES.index(self.role) >= ROLES.index(role)

    def sees(self, namespace: str) -> bool:
        """Whether this caller acts for ``namespace``."""
        return ALL in self.namespaces or namespace in self.namespaces


LOCAL_ADMIN = "local-admin"  # the token `knflow up` makes for the machine's own user (kept in admin.token)


def tokens_path(settings: Settings) -> Path:
    return Path(settings.security.tokens_file) if settings.security.tokens_file else settings.data_dir / "tokens.json"


def admin_token_path(settings: Settings) -> Path:
    return settings.data_dir / "admin.token"


def client_token(settings: Settings) -> str | None:
    """The token this process calls knflow's servers with: ``security.token`` (``KNFLOW_SECURITY_TOKEN``), else the
    local admin token ``knflow up`` wrote into the data directory (readable by its owner only), else none."""
    if settings.security.token:
        return settings.security.token
    try:
        return admin_token_path(settings).read_text().strip() or None
    except OSError:
        return None


def auth_headers(settings: Settings) -> dict[str, str]:
    """``Authorization: Bearer <token>`` for this process's calls, or nothing when it has no token."""
    token = client_token(settings)
    return {"Authorization": f"Bearer {token}"} if token else {}


def own_credentials(settings: Settings) -> Callable[[str], dict[str, str]]:
    """For a URL: this process's ``Authorization`` when the URL is one of the platform's own servers, else
    nothing (the token never goes to a subscriber elsewhere)."""
    headers = auth_headers(settings)
    ports = set(settings.http_ports)
    hosts = {"127.0.0.1", "localhost", "::1", settings.host.strip("[]").lower()}  # as urlsplit gives a hostname

    known: dict[str, dict[str, str]] = {}  # per URL: the broker asks once per delivery, for a handful of URLs

    def credentials(url: str) -> dict[str, str]:
        found = known.get(url)
        if found is None:
            parts = urlsplit(url)
            found = headers if parts.hostname in hosts and parts.port in ports else {}
            if len(known) < 10_000:
                known[url] = found
        return found

    return credentials


def ensure_local_admin(settings: Settings) -> None:
    """Give the machine's user an admin token (``<data_dir>/admin.token``, mode 0600) unless a valid one is there."""
    if settings.security.open:
        return
    tokens, path = TokenFile(tokens_path(settings)), admin_token_path(settings)
    current = client_token(settings.replace(security=dataclasses.replace(settings.security, token="")))
    principal = tokens.verify(current) if current else None
    if principal is not None and principal.name == LOCAL_ADMIN:
        return
    if any(t["name"] == LOCAL_ADMIN for t in tokens.list()):
        tokens.revoke(LOCAL_ADMIN)
    token = tokens.create(LOCAL_ADMIN, "admin", (ALL,))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")


def local_admin_headers(settings: Settings) -> dict[str, str]:
    """The machine user's admin ``Authorization`` for a platform in ``settings.data_dir`` (made when missing): what
    ``knflow up`` gives its user, for tools and benchmarks that start knflow's servers themselves."""
    ensure_local_admin(settings)
    return auth_headers(settings)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenFile:
    """The token file: create, list, revoke and verify tokens; re-read when another process changed it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._mtime: float | None = None
        self._by_digest: dict[str, Principal] = {}
        self._records: dict[str, dict] = {}

    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._mtime, self._records, self._by_digest = None, {}, {}
            return
        if mtime == self._mtime:
            return
        try:
            records = orjson.loads(self.path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"token file {self.path} is not valid JSON: {exc}") from None
        self._records = records if isinstance(records, dict) else {}
        self._by_digest = {
            r["sha256"]: Principal(name, r["role"], tuple(r["namespaces"])) for name, r in self._records.items()
        }
        self._mtime = mtime

    def create(self, name: str, role: Role, namespaces: tuple[str, ...]) -> str:
        """A new token (shown once: only its digest is kept)."""
        if not _NAME.match(name):
            raise InvalidRequest(f"token name {name!r} must be a DNS label (lowercase letters, digits, '-')")
        if role not in ROLES:
            raise InvalidRequest(f"role {role!r} is not one of {', '.join(ROLES)}")
        if not namespaces:
            raise InvalidRequest("a token needs at least one namespace (or '*' for all)")
        self._load()
        if name in self._records:
            raise Conflict(f"a token named {name!r} exists; revoke it first")
        token = PREFIX + secrets.token_urlsafe(32)
        record = {"sha256": digest(token), "role": role, "namespaces": [check_namespace(n) for n in namespaces]}
        record["created"] = datetime.now(UTC).isoformat()
        self._write({**self._records, name: record})
        return token

    def revoke(self, name: str) -> None:
        self._load()
        if name not in self._records:
            raise NotFound(f"no token named {name!r}")
        self._write({k: v for k, v in self._records.items() if k != name})

    def list(self) -> list[dict]:
        """Every token's name, role, namespaces and creation time (never the token)."""
        self._load()
        return [{"name": n, **{k: v for k, v in r.items() if k != "sha256"}} for n, r in sorted(self._records.items())]

    def verify(self, token: str) -> Principal | None:
        """The caller a token belongs to, or None."""
        if not token.startswith(PREFIX):
            return None
        self._load()
        wanted = digest(token)
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, wanted):
                return principal
        return None

    def _write(self, records: dict[str, dict]) -> None:
        write_json(self.path, records, indent=2)
        os.chmod(self.path, 0o600)
        self._mtime = None
        self._load()
