"""JWTs from an identity provider: keys from a JWKS URL (served by the test over loopback),
audience and issuer checks, key rotation, and the provider being down."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from httpx_sse import EventSource
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from eddy.broker.access import grants_from_claim
from tests.conftest import RunningServer, free_port, serve_in_thread, wait_until

AUDIENCE = "https://eddy.example/api"
ISSUER = "https://idp.example/"
EVERYTHING = {"read": ["*"], "write": ["*"], "admin": ["*"], "groups": ["*"]}


@dataclass
class SigningKey:
    kid: str
    private: Any
    algorithm: str

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        codec = RSAAlgorithm if self.algorithm.startswith("RS") else ECAlgorithm
        return {**codec.to_jwk(public, as_dict=True), "kid": self.kid, "use": "sig"}

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body = {
            "sub": "alice",
            "exp": now + 300,
            "aud": AUDIENCE,
            "iss": ISSUER,
            "eddy": EVERYTHING,
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.private, self.algorithm, headers={"kid": self.kid})


def rsa_key(kid: str) -> SigningKey:
    return SigningKey(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, ec.generate_private_key(ec.SECP256R1()), "ES256")


@dataclass
class JwksServer:
    """An identity provider's JWKS endpoint on a loopback port: the key set can be swapped
    (rotation) and the server stopped (the provider is down); requests are counted."""

    keys: list[SigningKey]
    requests: int = 0
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                body = json.dumps({"keys": [k.jwk() for k in outer.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer([rsa_key("rsa-1"), ec_key("ec-1")])
    server.start()
    yield server
    if server._server is not None and server._server.socket.fileno() != -1:
        server.stop()


def auth_file(tmp_path: Path, url: str, **extra: Any) -> Path:
    settings = {
        "jwks_url": url,
        "audience": AUDIENCE,
        "issuer": ISSUER,
        "jwks_min_refresh_seconds": 0,
        **extra,
    }
    lines = ["[jwt]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    path = tmp_path / "auth.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def eddy(tmp_path: Path, jwks: JwksServer) -> Iterator[RunningServer]:
    with serve_in_thread(tmp_path / "d", auth_file=auth_file(tmp_path, jwks.url)) as server:
        yield server


def get(server: RunningServer, token: str) -> httpx.Response:
    return httpx.get(
        f"{server.base_url}/v1/topics", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def reason(response: httpx.Response) -> str:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"]["code"] == "unauthorized"
    text: str = body["error"]["details"]["reason"]
    return text


def auth_failures(server: RunningServer) -> dict[str, float]:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "eddy_auth_failures"
        for sample in family.samples
        if sample.name == "eddy_auth_failures_total"
    }


def test_tokens_signed_by_the_providers_keys_with_audience_and_issuer(
    eddy: RunningServer, jwks: JwksServer
) -> None:
    rsa_1, ec_1 = jwks.keys
    assert get(eddy, rsa_1.token()).status_code == 200
    assert get(eddy, ec_1.token()).status_code == 200  # ES256 from the same key set
    assert get(eddy, rsa_1.token(aud=[AUDIENCE, "other"])).status_code == 200
    produced = httpx.post(
        f"{eddy.base_url}/v1/topics/t/records",
        json={"value": 1},
        headers={"Authorization": f"Bearer {rsa_1.token()}"},
    )
    assert produced.status_code == 200, produced.text
    with connect(f"{eddy.ws_url}/v1/topics/t/ws?token={ec_1.token()}") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"

    assert "InvalidAudienceError" in reason(get(eddy, rsa_1.token(aud="https://other.example")))
    assert "MissingRequiredClaimError" in reason(get(eddy, rsa_1.token(aud=None)))
    assert "InvalidIssuerError" in reason(get(eddy, rsa_1.token(iss="https://evil.example/")))
    assert reason(get(eddy, rsa_1.token(exp=int(time.time()) - 10))) == "token expired"
    assert "no signing key with kid 'nope'" in reason(
        get(eddy, rsa_key("nope").token())  # a key the provider never published
    )
    forged = jwt.encode(
        {"sub": "mallory", "exp": int(time.time()) + 60, "aud": AUDIENCE, "iss": ISSUER},
        "x" * 32,
        "HS256",
        headers={"kid": "rsa-1"},
    )
    assert "InvalidAlgorithmError" in reason(get(eddy, forged))  # HS256 with a public key
    failures = auth_failures(eddy)
    assert failures["audience"] == 1 and failures["issuer"] == 1 and failures["expired"] == 1
    assert failures["unknown_key"] == 1 and failures["invalid_token"] == 2


def test_a_rotated_key_is_fetched_on_first_use_without_a_restart(
    eddy: RunningServer, jwks: JwksServer
) -> None:
    old = jwks.keys[0]
    assert get(eddy, old.token()).status_code == 200
    new = rsa_key("rsa-2")
    jwks.keys = [new]  # the provider rotates: the old key is withdrawn
    assert get(eddy, new.token()).status_code == 200  # unknown kid: one refetch, then accepted
    assert "no signing key with kid 'rsa-1'" in reason(get(eddy, old.token()))


def sse_subscribed(server: RunningServer, token: str) -> httpx.Response:
    """An SSE subscription with `?token=`: its response, with the first event read if it is 200."""
    with (
        httpx.Client(base_url=server.base_url, timeout=10) as client,
        client.stream(
            "GET", f"/v1/topics/t/events?token={token}", headers={"Accept": "text/event-stream"}
        ) as response,
    ):
        if response.status_code == 200:
            assert next(EventSource(response).iter_sse()).event == "subscribed"
        else:
            response.read()
        return response


def kafka_sasl_produce(bootstrap: str, token: str) -> Exception | None:
    """Produce one record over SASL/PLAIN with the JWT as the password; the error, if any."""

    async def run() -> Exception | None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_plain_username="alice",
            sasl_plain_password=token,
            request_timeout_ms=10_000,
        )
        try:
            await producer.start()
            await producer.send_and_wait("t", b"over Kafka")
            return None
        except Exception as exc:  # the refusal, as aiokafka raises it
            return exc
        finally:
            await producer.stop()

    return asyncio.run(run())


def test_every_transport_fetches_a_rotated_key_on_its_first_use(
    tmp_path: Path, jwks: JwksServer
) -> None:
    kafka = f"127.0.0.1:{free_port()}"
    path = auth_file(tmp_path, jwks.url)
    with serve_in_thread(tmp_path / "d", auth_file=path, kafka_listener=kafka) as eddy:
        assert get(eddy, jwks.keys[0].token()).status_code == 200
        for kid, first_use in (("sse", "sse"), ("ws", "websocket"), ("sasl", "kafka")):
            key = rsa_key(f"rotated-{kid}")
            jwks.keys = [key]  # the provider rotates: this transport is the first to see it
            fetched = jwks.requests
            if first_use == "sse":
                response = sse_subscribed(eddy, key.token())
                assert response.status_code == 200, response.text
            elif first_use == "websocket":
                with connect(f"{eddy.ws_url}/v1/topics/t/ws?token={key.token()}") as ws:
                    assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
            else:
                assert kafka_sasl_produce(kafka, key.token()) is None
            assert jwks.requests == fetched + 1  # one refetch, on the first use
            assert get(eddy, key.token()).status_code == 200  # and cached for REST
        unknown = sse_subscribed(eddy, rsa_key("never-published").token())
        assert "no signing key with kid 'never-published'" in reason(unknown)
        refused = kafka_sasl_produce(kafka, rsa_key("never-published-2").token())
        assert refused is not None
        assert auth_failures(eddy)["unknown_key"] == 2  # SSE's and SASL's refusals counted


def test_refetches_for_unknown_key_ids_are_rate_limited(tmp_path: Path, jwks: JwksServer) -> None:
    path = auth_file(tmp_path, jwks.url, jwks_min_refresh_seconds=3600)
    with serve_in_thread(tmp_path / "d", auth_file=path) as server:
        assert get(server, jwks.keys[0].token()).status_code == 200
        for i in range(5):  # made-up key ids: no fetch each
            assert "no signing key" in reason(get(server, rsa_key(f"made-up-{i}").token()))
        assert get(server, jwks.keys[1].token()).status_code == 200
    assert jwks.requests == 1


def test_provider_down_cached_keys_keep_working_and_others_get_a_clear_401(
    eddy: RunningServer, jwks: JwksServer
) -> None:
    known = jwks.keys[0]
    assert get(eddy, known.token()).status_code == 200
    jwks.stop()
    assert get(eddy, known.token()).status_code == 200  # from the cache
    message = reason(get(eddy, rsa_key("rsa-new").token()))
    assert "signing keys could not be fetched from http://127.0.0.1:" in message
    assert get(eddy, known.token()).status_code == 200
    assert auth_failures(eddy)["keys_unavailable"] >= 1


def test_provider_down_from_the_start(tmp_path: Path, jwks: JwksServer) -> None:
    url = jwks.url
    jwks.stop()
    with serve_in_thread(tmp_path / "d", auth_file=auth_file(tmp_path, url)) as server:
        response = get(server, jwks.keys[0].token())
        assert "signing keys could not be fetched" in reason(response)
        assert httpx.get(f"{server.base_url}/healthz").status_code == 200


def test_permissions_from_a_configurable_claim(tmp_path: Path, jwks: JwksServer) -> None:
    path = auth_file(tmp_path, jwks.url, permissions_claim="permissions")
    key = jwks.keys[0]
    with serve_in_thread(tmp_path / "d", auth_file=path) as server:
        token = key.token(eddy=None, permissions=["read:prices*", "admin:prices"])
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as c:
            assert c.post("/v1/topics", json={"name": "prices"}).status_code == 201
            assert c.get("/v1/topics/prices").status_code == 200
            assert c.post("/v1/topics/prices/records", json={"value": 1}).status_code == 403


def test_permission_claim_shapes() -> None:
    """Eddy's object, Auth0's permission list, an OAuth scope string (Cognito's prefixed)."""
    as_object = grants_from_claim({"read": ["a*"], "groups": ["g"]})
    assert as_object.read == ("a*",) and as_object.groups == ("g",) and not as_object.write
    listed = grants_from_claim(["read:prices", "write:prices", "delete:x", "profile"])
    assert listed.read == ("prices",) and listed.write == ("prices",) and not listed.admin
    scoped = grants_from_claim("openid email eddy-api/read:orders* eddy-api/groups:workers")
    assert scoped.read == ("orders*",) and scoped.groups == ("workers",)
    assert grants_from_claim(None).empty
    for bad in (42, [1], {"read": "not-a-list"}, {"delete": ["x"]}):
        with pytest.raises(ValueError):
            grants_from_claim(bad)


def test_keys_survive_an_auth_file_reload_while_the_provider_is_down(
    tmp_path: Path, jwks: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eddy.broker")
    path = auth_file(tmp_path, jwks.url)
    with serve_in_thread(tmp_path / "d", auth_file=path, auth_recheck_interval=0.1) as server:
        key = jwks.keys[0]
        assert get(server, key.token()).status_code == 200
        jwks.stop()
        path.write_text(path.read_text() + "# edited\n")
        wait_until(lambda: any("reloaded auth file" in r.getMessage() for r in caplog.records))
        assert get(server, key.token()).status_code == 200  # the keys fetched before the reload
