"""Access control: who the caller is (API key or JWT) and what it may do. No I/O but reading the
auth file.

Permissions are topic-name patterns per action, like Kafka's ACL resource patterns: an exact
name, or a prefix ending in "*". `read`, `write` and `admin` apply to topics (admin: create,
patch, delete), `groups` to consumer-group names; admin on a group name allows reset/delete.
A request without credentials is `anonymous` and gets the `[anonymous]` grants (default: none);
authenticated callers get those grants too, on top of their own.
Missing or invalid credentials that are not enough give 401; valid credentials that are not
enough give 403 (whose message never says whether the resource exists).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.errors import Forbidden, Unauthorized

audit = logging.getLogger("eddy.audit")


class Action(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"
    GROUP = "groups"  # use a consumer group


def pattern_matches(pattern: str, name: str) -> bool:
    return name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern


@dataclass(frozen=True)
class Grants:
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    admin: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def allows(self, action: Action, name: str) -> bool:
        patterns: tuple[str, ...] = getattr(self, action.value)
        return any(pattern_matches(p, name) for p in patterns)

    def union(self, other: Grants) -> Grants:
        return Grants(
            self.read + other.read,
            self.write + other.write,
            self.admin + other.admin,
            self.groups + other.groups,
        )

    @property
    def empty(self) -> bool:
        return not (self.read or self.write or self.admin or self.groups)


EVERYTHING = Grants(read=("*",), write=("*",), admin=("*",), groups=("*",))


@dataclass(frozen=True)
class Principal:
    name: str
    grants: Grants
    authenticated: bool  # False: anonymous (no credentials)
    expires_at: float | None = None  # seconds since epoch (JWT exp)
    key_hash: str | None = None  # for API keys: checked again after the auth file is reloaded


# --- the auth file ------------------------------------------------------------------------------
class _GrantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    read: list[str] = Field(default_factory=list)
    write: list[str] = Field(default_factory=list)
    admin: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)

    def grants(self) -> Grants:
        return Grants(tuple(self.read), tuple(self.write), tuple(self.admin), tuple(self.groups))


class _PrincipalFile(_GrantsFile):
    name: str = Field(min_length=1)
    key_sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


class _JwtFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hs256_secret: str | None = Field(default=None, min_length=32)  # RFC 7518 3.2
    rs256_public_key_file: Path | None = None


class _AuthFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    principals: list[_PrincipalFile] = Field(default_factory=list)
    anonymous: _GrantsFile = Field(default_factory=_GrantsFile)
    jwt: _JwtFile | None = None


class AuthFileError(Exception):
    """The auth file cannot be used; the message says why."""


@dataclass
class AccessPolicy:
    """Who may do what. `enabled=False` (no auth file) lets everyone do everything."""

    enabled: bool = False
    keys: dict[str, tuple[str, Grants]] = field(default_factory=dict)  # sha256 hex -> principal
    anonymous: Grants = field(default_factory=Grants)
    jwt_key: str | None = None
    jwt_algorithm: str | None = None

    # --- authentication -----------------------------------------------------------------------
    def authenticate(self, token: str | None) -> Principal:
        """The caller for a bearer token (None: no credentials). Raises Unauthorized."""
        if not self.enabled:
            return Principal("anonymous", EVERYTHING, authenticated=False)
        if not token:
            return Principal("anonymous", self.anonymous, authenticated=False)
        if self.jwt_key is not None and token.count(".") == 2:
            return self._from_jwt(token)
        digest = hashlib.sha256(token.encode()).hexdigest()
        found: tuple[str, Grants] | None = None
        for key_hash, entry in self.keys.items():  # compare every key: constant time overall
            if hmac.compare_digest(key_hash, digest):
                found = entry
        if found is None:
            raise self._refuse("invalid API key")
        # What anonymous callers may do, every caller may do.
        grants = found[1].union(self.anonymous)
        return Principal(found[0], grants, authenticated=True, key_hash=digest)

    def _from_jwt(self, token: str) -> Principal:
        assert self.jwt_key is not None and self.jwt_algorithm is not None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.jwt_key,
                algorithms=[self.jwt_algorithm],
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise self._refuse("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise self._refuse(f"invalid token ({exc.__class__.__name__})") from None
        try:
            grants = _GrantsFile.model_validate(claims.get("eddy", {})).grants()
        except ValidationError:
            raise self._refuse("invalid 'eddy' claim in token") from None
        return Principal(
            str(claims["sub"]),
            grants.union(self.anonymous),
            authenticated=True,
            expires_at=float(claims["exp"]),
        )

    @staticmethod
    def _refuse(reason: str) -> Unauthorized:
        audit.warning("auth failure: principal=- action=authenticate outcome=%s", reason)
        return Unauthorized("missing or invalid credentials", {"reason": reason})

    def still_valid(self, principal: Principal, now: float | None = None) -> bool:
        """For open WebSockets: not expired, and (API keys) not removed from the auth file."""
        if not self.enabled or not principal.authenticated:
            return True
        now = time.time() if now is None else now
        if principal.expires_at is not None and now >= principal.expires_at:
            return False
        return principal.key_hash is None or principal.key_hash in self.keys

    # --- authorization ------------------------------------------------------------------------
    def allows(self, principal: Principal, action: Action, name: str) -> bool:
        return principal.grants.allows(action, name)

    def require(self, principal: Principal, action: Action, name: str, what: str = "topic") -> None:
        """Raise 401 (anonymous) or 403 unless `principal` may do `action` on `name`."""
        if self.allows(principal, action, name):
            return
        outcome = "forbidden" if principal.authenticated else "unauthorized"
        audit.warning(
            "denied: principal=%s action=%s resource=%s:%s outcome=%s",
            principal.name,
            action.value,
            what,
            name,
            outcome,
        )
        if not principal.authenticated:
            raise Unauthorized("credentials required", {"action": action.value})
        # The same answer whether or not the resource exists.
        raise Forbidden(f"not allowed to {action.value} {what} '{name}'", {"action": action.value})

    def audit_admin(self, principal: Principal, action: str, resource: str, outcome: str) -> None:
        audit.info(
            "admin: principal=%s action=%s resource=%s outcome=%s",
            principal.name,
            action,
            resource,
            outcome,
        )


def load_access_policy(path: Path) -> AccessPolicy:
    """Read and check an auth file (TOML, see the README). Raises AuthFileError."""
    try:
        raw = tomllib.loads(path.read_text())
        spec = _AuthFile.model_validate(raw)
    except OSError as exc:
        raise AuthFileError(f"cannot read auth file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise AuthFileError(f"auth file {path} is not valid TOML: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise AuthFileError(f"auth file {path}: {where}: {first['msg']}") from exc
    policy = AccessPolicy(enabled=True, anonymous=spec.anonymous.grants())
    for p in spec.principals:
        policy.keys[p.key_sha256.lower()] = (p.name, p.grants())
    if spec.jwt is not None:
        if spec.jwt.hs256_secret and spec.jwt.rs256_public_key_file:
            raise AuthFileError("[jwt]: give hs256_secret or rs256_public_key_file, not both")
        if spec.jwt.hs256_secret:
            policy.jwt_key, policy.jwt_algorithm = spec.jwt.hs256_secret, "HS256"
        elif spec.jwt.rs256_public_key_file:
            key_path = spec.jwt.rs256_public_key_file
            if not key_path.is_absolute():
                key_path = path.parent / key_path
            try:
                policy.jwt_key, policy.jwt_algorithm = key_path.read_text(), "RS256"
            except OSError as exc:
                raise AuthFileError(f"cannot read {key_path}: {exc.strerror}") from exc
    return policy
