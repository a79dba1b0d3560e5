"""Access-control and rate-limit rules (pure logic)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import jwt
import pytest

from eddy.broker.access import Action, AuthFileError, Grants, load_access_policy, pattern_matches
from eddy.broker.rate_limit import RateLimiter
from eddy.models.errors import Forbidden, RateLimited, Unauthorized


def test_patterns_are_exact_names_or_prefixes() -> None:
    assert pattern_matches("prices", "prices")
    assert not pattern_matches("prices", "prices2")
    assert pattern_matches("prices*", "prices.eu")
    assert pattern_matches("*", "anything")
    assert not pattern_matches("prices.*", "prices")


SECRET = "a-secret-of-at-least-32-characters!"
OTHER_SECRET = "another-secret-that-is-32-chars-long"


def write_auth(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "auth.toml"
    path.write_text(text)
    return path


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def test_api_keys_jwt_and_anonymous(tmp_path: Path) -> None:
    policy = load_access_policy(
        write_auth(
            tmp_path,
            f"""
[[principals]]
name = "pricing-server"
key_sha256 = "{sha("k1")}"
read = ["prices"]
write = ["prices"]

[anonymous]
read = ["public.*"]

[jwt]
hs256_secret = "{SECRET}"
""",
        )
    )
    server = policy.authenticate("k1")
    assert server.name == "pricing-server" and server.authenticated
    policy.require(server, Action.WRITE, "prices")
    with pytest.raises(Forbidden):
        policy.require(server, Action.ADMIN, "prices")
    with pytest.raises(Unauthorized):
        policy.authenticate("wrong")
    anonymous = policy.authenticate(None)
    policy.require(anonymous, Action.READ, "public.news")
    with pytest.raises(Unauthorized):  # no credentials and not enough: 401, not 403
        policy.require(anonymous, Action.READ, "prices")
    token = jwt.encode(
        {"sub": "phone-1", "exp": time.time() + 60, "eddy": {"read": ["prices*"]}},
        SECRET,
    )
    phone = policy.authenticate(token)
    assert phone.name == "phone-1" and phone.grants == Grants(read=("prices*", "public.*"))
    assert policy.still_valid(phone) and not policy.still_valid(phone, now=time.time() + 120)
    expired = jwt.encode({"sub": "x", "exp": time.time() - 1}, SECRET)
    with pytest.raises(Unauthorized, match="credentials"):
        policy.authenticate(expired)
    forged = jwt.encode({"sub": "x", "exp": time.time() + 60}, OTHER_SECRET)
    with pytest.raises(Unauthorized):
        policy.authenticate(forged)
    no_exp = jwt.encode({"sub": "x"}, SECRET)
    with pytest.raises(Unauthorized):
        policy.authenticate(no_exp)


def test_bad_auth_files_are_clear_errors(tmp_path: Path) -> None:
    for text, message in [
        ("[[principals]]\nname = 'x'\nkey_sha256 = 'nothex'\n", "key_sha256"),
        ("[[principals]]\nname = 'x'\n", "key_sha256"),
        ("[anonymous]\nreed = ['x']\n", "reed"),
        ("not toml [", "not valid TOML"),
        ("[jwt]\nhs256_secret = 'short'\n", "hs256_secret"),
    ]:
        with pytest.raises(AuthFileError, match=message):
            load_access_policy(write_auth(tmp_path, text))
    with pytest.raises(AuthFileError, match="cannot read"):
        load_access_policy(tmp_path / "missing.toml")


def test_rate_limiter_token_bucket() -> None:
    now = [100.0]
    limiter = RateLimiter(rate=2, burst=3, clock=lambda: now[0])
    for _ in range(3):
        limiter.check("a")
    with pytest.raises(RateLimited) as refused:
        limiter.check("a")
    assert refused.value.retry_after == pytest.approx(0.5)
    limiter.check("b")  # per principal
    now[0] += 0.5
    limiter.check("a")
    RateLimiter(rate=0, burst=0).check("a")  # off
