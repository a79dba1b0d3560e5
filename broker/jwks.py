"""Signing keys published at a JWKS URL (Auth0, Firebase, Cognito, Keycloak, ...).

PyJWT's `PyJWKClient` fetches and parses the key set (http/https only, no redirects, a
timeout). Its own cache would fetch inside the lookup, on whatever thread asks, so the broker
keeps the last good key set here instead and fetches only in a worker thread:

- a known `kid` is answered from memory, without I/O; once the set is older than
  `cache_seconds` a refresh starts in the background and the cached keys keep working;
- an unknown `kid` (the provider rotated its keys) waits for one refresh, shared by all the
  requests that need it, at most one per `min_refresh_seconds` (tokens with made-up key ids
  cannot make Eddy hammer the provider);
- when the endpoint is down the cached keys keep working; a token whose key is not cached is
  refused (401) with a message that says the keys could not be fetched, and why.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from urllib.parse import urlsplit, urlunsplit

from jwt import PyJWK, PyJWKClient, PyJWKClientError

log = logging.getLogger("eddy.auth")


def url_for_logs(url: str) -> str:
    """The URL without query string, fragment or user info (which may hold secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class JwksKeys:
    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float = 300.0,
        min_refresh_seconds: float = 30.0,
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self._client = PyJWKClient(url, cache_jwk_set=False, timeout=timeout)
        self._cache_seconds = cache_seconds
        self._min_refresh_seconds = min_refresh_seconds
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = -math.inf  # monotonic time of the last successful fetch
        self._attempted_at = -math.inf  # ... of the last attempt
        self.last_error: str | None = None  # why the last attempt failed
        self._refreshing: asyncio.Task[None] | None = None

    # --- on the event loop, no I/O --------------------------------------------------------------
    def cached(self, kid: str | None) -> PyJWK | None:
        """The key with this id if the last fetched set has it; starts a background refresh
        when that set is old."""
        if time.monotonic() - self._fetched_at > self._cache_seconds and self._may_refresh():
            self._start_refresh()
        return None if kid is None else self._keys.get(kid)

    def why_missing(self, kid: str | None) -> str:
        """Why `cached(kid)` found no key: for the 401's message."""
        where = url_for_logs(self.url)
        if self.last_error is not None:
            return f"signing keys could not be fetched from {where}: {self.last_error}"
        return f"no signing key with kid {str(kid)[:64]!r} at {where}"

    # --- fetching ---------------------------------------------------------------------------
    async def ensure(self, kid: str | None) -> None:
        """Make sure the key `kid` is cached if the provider has it: wait for a refresh if it
        is unknown and the last attempt is old enough (else return at once)."""
        if kid is not None and kid in self._keys:
            self.cached(kid)  # refreshes in the background when stale
            return
        if self._refreshing is None:
            if not self._may_refresh():
                return
            self._start_refresh()
        assert self._refreshing is not None
        await asyncio.shield(self._refreshing)  # a client that leaves does not cancel it

    def prefetch(self) -> None:
        """Fetch the keys in the background now (at start-up), so the first token waits not."""
        if self._refreshing is None and self._may_refresh():
            self._start_refresh()

    def adopt(self, other: JwksKeys) -> None:
        """Take over another instance's keys (the auth file was reloaded, same URL)."""
        if other.url == self.url:
            self._keys, self._fetched_at = other._keys, other._fetched_at
            self._attempted_at, self.last_error = other._attempted_at, other.last_error

    def _may_refresh(self) -> bool:
        return time.monotonic() - self._attempted_at >= self._min_refresh_seconds

    def _start_refresh(self) -> None:
        if self._refreshing is None:
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        self._attempted_at = time.monotonic()
        try:
            keys = await asyncio.to_thread(self._client.get_signing_keys, True)
        except PyJWKClientError as exc:
            self.last_error = str(exc)[:200]
            log.warning("JWKS fetch from %s failed: %s", url_for_logs(self.url), self.last_error)
        except Exception as exc:  # a malformed key set, say: same outcome
            self.last_error = f"{exc.__class__.__name__}: {str(exc)[:200]}"
            log.warning("JWKS fetch from %s failed: %s", url_for_logs(self.url), self.last_error)
        else:
            self._keys = {key.key_id: key for key in keys if key.key_id}
            self._fetched_at = time.monotonic()
            self.last_error = None
            log.info("fetched %d signing keys from %s", len(self._keys), url_for_logs(self.url))
        finally:
            self._refreshing = None

    async def close(self) -> None:
        """Wait for a refresh under way (its thread cannot be interrupted)."""
        if self._refreshing is not None:
            await asyncio.gather(self._refreshing, return_exceptions=True)
