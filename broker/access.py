"""Access control: who the caller is (API key or JWT) and what it may do. No I/O but reading the
auth file (and, through broker/jwks.py, fetching a JWKS URL's keys in a worker thread).

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
from typing import Any, Literal

import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eddy.broker.jwks import JwksKeys
from eddy.models.errors import Forbidden, Unauthorized

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


JwksAlgorithm = Literal["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "ES512"]


def _default_algorithms() -> list[JwksAlgorithm]:
    return ["RS256", "ES256"]


class _JwtFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The signing key: exactly one of these.
    hs256_secret: str | None = Field(default=None, min_length=32)  # RFC 7518 3.2
    rs256_public_key_file: Path | None = None
    jwks_url: str | None = Field(default=None, pattern=r"^https?://")
    # Claims checked when set (a token with `aud` is refused unless `audience` names it).
    audience: str | list[str] | None = None
    issuer: str | None = None
    # What a JWKS key may sign with (never a symmetric algorithm: its keys are public).
    algorithms: list[JwksAlgorithm] = Field(default_factory=_default_algorithms, min_length=1)
    permissions_claim: str = Field(default="eddy", min_length=1)
    jwks_cache_seconds: float = Field(default=300.0, gt=0)
    jwks_min_refresh_seconds: float = Field(default=30.0, ge=0)
    jwks_timeout_seconds: float = Field(default=5.0, gt=0)


class _AuthFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    principals: list[_PrincipalFile] = Field(default_factory=list)
    anonymous: _GrantsFile = Field(default_factory=_GrantsFile)
    jwt: _JwtFile | None = None


class AuthFileError(Exception):
    """The auth file cannot be used; the message says why."""


class AuthenticationFailed(Unauthorized):
    """401 for credentials that are invalid; `reason` is a short code for the metrics
    (invalid_api_key, expired, audience, issuer, invalid_token, invalid_claim, unknown_key,
    keys_unavailable)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__("missing or invalid credentials", {"reason": message})
        self.reason = reason


@dataclass(frozen=True)
class JwtRules:
    """How JWTs are checked: a static key (`key`, `algorithm`) or a JWKS URL's keys."""

    key: str | None = None
    algorithm: str | None = None
    jwks: JwksKeys | None = None
    algorithms: tuple[str, ...] = ("RS256", "ES256")  # accepted from the JWKS
    audience: str | list[str] | None = None
    issuer: str | None = None
    permissions_claim: str = "eddy"


ACTIONS = ("read", "write", "admin", "groups")  # Grants' fields, in order


def grants_from_claim(claim: Any) -> Grants:
    """A token's permissions claim (absent: no grants). Either Eddy's object form,
    `{"read": [...], "write": [...], "admin": [...], "groups": [...]}`, or a list of
    `action:pattern` strings (Auth0's `permissions`), or one space-separated string of them
    (an OAuth `scope`); there a `resource-server/` prefix (Cognito's custom scopes) is
    dropped and entries that are not Eddy permissions (`openid`, `email`, ...) are ignored.
    Raises ValueError for a claim of another shape."""
    if claim is None:
        return Grants()
    if isinstance(claim, dict):
        try:
            return _GrantsFile.model_validate(claim).grants()
        except ValidationError:
            raise ValueError("invalid permissions object") from None
    if isinstance(claim, str):
        entries: list[Any] = claim.split()
    elif isinstance(claim, list):
        entries = claim
    else:
        raise ValueError("permissions must be an object, a list or a string")
    found: dict[str, list[str]] = {action: [] for action in ACTIONS}
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError("permissions must be strings")
        action, sep, pattern = entry.partition(":")
        action = action.rpartition("/")[2]
        if sep and pattern and action in found:
            found[action].append(pattern)
    return Grants(*(tuple(found[action]) for action in ACTIONS))


@dataclass
class AccessPolicy:
    """Who may do what. `enabled=False` (no auth file) lets everyone do everything."""

    enabled: bool = False
    keys: dict[str, tuple[str, Grants]] = field(default_factory=dict)  # sha256 hex -> principal
    anonymous: Grants = field(default_factory=Grants)
    jwt: JwtRules | None = None

    # --- authentication -----------------------------------------------------------------------
    async def authenticate_async(self, token: str | None) -> Principal:
        """`authenticate`, first fetching the signing key of a JWT from the JWKS URL if it is
        not cached (in a worker thread; see broker/jwks.py)."""
        jwks = None if self.jwt is None else self.jwt.jwks
        if jwks is not None and token and token.count(".") == 2:
            try:
                kid = jwt.get_unverified_header(token).get("kid")
            except jwt.InvalidTokenError:
                kid = None  # refused below, with the reason
            else:
                await jwks.ensure(kid if isinstance(kid, str) else None)
        return self.authenticate(token)

    def authenticate(self, token: str | None) -> Principal:
        """The caller for a bearer token (None: no credentials). Raises AuthenticationFailed.
        No I/O: a JWKS key must be cached already (`authenticate_async` fetches it)."""
        if not self.enabled:
            return Principal("anonymous", EVERYTHING, authenticated=False)
        if not token:
            return Principal("anonymous", self.anonymous, authenticated=False)
        if self.jwt is not None and token.count(".") == 2:
            return self._from_jwt(token, self.jwt)
        digest = hashlib.sha256(token.encode()).hexdigest()
        found: tuple[str, Grants] | None = None
        for key_hash, entry in self.keys.items():  # compare every key: constant time overall
            if hmac.compare_digest(key_hash, digest):
                found = entry
        if found is None:
            raise self._refuse("invalid_api_key", "invalid API key")
        # What anonymous callers may do, every caller may do.
        grants = found[1].union(self.anonymous)
        return Principal(found[0], grants, authenticated=True, key_hash=digest)

    def _from_jwt(self, token: str, rules: JwtRules) -> Principal:
        key, algorithm = self._signing_key(token, rules)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=rules.audience,
                issuer=rules.issuer,
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise self._refuse("expired", "token expired") from None
        except jwt.InvalidAudienceError:
            raise self._refuse("audience", "invalid token (InvalidAudienceError)") from None
        except jwt.InvalidIssuerError:
            raise self._refuse("issuer", "invalid token (InvalidIssuerError)") from None
        except jwt.InvalidTokenError as exc:
            raise self._refuse("invalid_token", f"invalid token ({type(exc).__name__})") from None
        try:
            grants = grants_from_claim(claims.get(rules.permissions_claim))
        except ValueError:
            raise self._refuse(
                "invalid_claim", f"invalid '{rules.permissions_claim}' claim in token"
            ) from None
        return Principal(
            str(claims["sub"]),
            grants.union(self.anonymous),
            authenticated=True,
            expires_at=float(claims["exp"]),
        )

    def _signing_key(self, token: str, rules: JwtRules) -> tuple[Any, str]:
        """The key that must have signed the token, and its algorithm."""
        if rules.jwks is None:
            assert rules.key is not None and rules.algorithm is not None
            return rules.key, rules.algorithm
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError as exc:
            raise self._refuse("invalid_token", f"invalid token ({type(exc).__name__})") from None
        found = rules.jwks.cached(kid if isinstance(kid, str) else None)
        if found is None:
            reason = "keys_unavailable" if rules.jwks.last_error else "unknown_key"
            raise self._refuse(reason, f"invalid token ({rules.jwks.why_missing(kid)})")
        if found.algorithm_name not in rules.algorithms:
            raise self._refuse(
                "invalid_token", f"invalid token (key algorithm {found.algorithm_name} not allowed)"
            )
        return found.key, found.algorithm_name

    @staticmethod
    def _refuse(reason: str, message: str) -> AuthenticationFailed:
        audit.warning("auth failure: principal=- action=authenticate outcome=%s", message)
        return AuthenticationFailed(reason, message)

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
        policy.jwt = _jwt_rules(spec.jwt, path)
    return policy


def _jwt_rules(spec: _JwtFile, path: Path) -> JwtRules:
    given = [k for k in ("hs256_secret", "rs256_public_key_file", "jwks_url") if getattr(spec, k)]
    if len(given) != 1:
        raise AuthFileError(
            "[jwt]: give exactly one of hs256_secret, rs256_public_key_file, jwks_url"
            + (f" (not {' and '.join(given)})" if given else "")
        )
    audience, issuer, claim = spec.audience, spec.issuer, spec.permissions_claim
    if spec.hs256_secret:
        return JwtRules(spec.hs256_secret, "HS256", None, (), audience, issuer, claim)
    if spec.rs256_public_key_file:
        key_path = spec.rs256_public_key_file
        if not key_path.is_absolute():
            key_path = path.parent / key_path
        try:
            return JwtRules(key_path.read_text(), "RS256", None, (), audience, issuer, claim)
        except OSError as exc:
            raise AuthFileError(f"cannot read {key_path}: {exc.strerror}") from exc
    assert spec.jwks_url is not None
    keys = JwksKeys(
        spec.jwks_url,
        cache_seconds=spec.jwks_cache_seconds,
        min_refresh_seconds=spec.jwks_min_refresh_seconds,
        timeout=spec.jwks_timeout_seconds,
    )
    return JwtRules(None, None, keys, tuple(spec.algorithms), audience, issuer, claim)
