"""The auth-file watcher: reloads the auth file when it changes, so that revoking a key takes
effect without a restart; a broken edit keeps the policy in force and is logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from eddy.broker.access import AccessPolicy, AuthFileError, load_access_policy
from eddy.broker.metrics import Metrics

log = logging.getLogger("eddy.broker")


def prefetch_signing_keys(policy: AccessPolicy) -> None:
    """Start fetching the JWKS keys of the policy's identity provider, if it has one."""
    if policy.jwt is not None and policy.jwt.jwks is not None:
        policy.jwt.jwks.prefetch()


async def watch_auth_file(
    path: Path,
    interval: float,
    current: Callable[[], AccessPolicy],
    install: Callable[[AccessPolicy], None],
    metrics: Metrics,
) -> None:
    """Check `path` every `interval` seconds; `install` the policy of a changed file (keeping
    the JWKS keys `current()` has fetched from the same URL)."""
    last = (await asyncio.to_thread(path.stat)).st_mtime_ns
    while True:
        await asyncio.sleep(interval)
        try:
            mtime = (await asyncio.to_thread(path.stat)).st_mtime_ns
            if mtime == last:
                continue
            last = mtime
            policy = await asyncio.to_thread(load_access_policy, path)
            in_force = current()
            old = in_force.jwt.jwks if in_force.jwt is not None else None
            if old is not None and policy.jwt is not None and policy.jwt.jwks is not None:
                policy.jwt.jwks.adopt(old)  # same URL: keep the keys fetched already
            install(policy)
            prefetch_signing_keys(policy)
            log.info("reloaded auth file %s", path)
        except (OSError, AuthFileError) as exc:
            log.error("auth file not reloaded, keeping the previous one: %s", exc)
        except Exception:  # unforeseen: keep watching (the old policy stays in force)
            log.exception("auth file check failed, keeping the previous policy")
            metrics.background_errors.labels("auth-watcher", "").inc()
