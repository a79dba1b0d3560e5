"""Content codings against a real server: gzip responses (never for an event stream), compressed
request bodies decoded with a bounded size, and `Allow` on 405."""

from __future__ import annotations

import asyncio
import base64
import gzip
import threading
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from eddy.app.http_encoding import GZIP_MINIMUM_SIZE, BodyDecoder, GzipGetResponses
from eddy.models.errors import InvalidRequest, PayloadTooLarge
from tests.conftest import RunningServer, free_port, serve_in_thread, wait_until

RECORDS = 1000


def produce(client: httpx.Client, topic: str, body: bytes, **headers: str) -> httpx.Response:
    return client.post(f"/v1/topics/{topic}/records", content=body, headers=headers)


def fetch(client: httpx.Client, topic: str, **headers: str) -> httpx.Response:
    return client.get(
        f"/v1/topics/{topic}/partitions/0/records",
        params={"offset": 0, "limit": RECORDS},
        headers=headers,
    )


# --- responses --------------------------------------------------------------------------------


def test_a_large_fetch_is_gzipped_for_clients_that_accept_it(client: httpx.Client) -> None:
    records = [
        {"key": f"sym-{i % 50}", "value": {"price": 100 + i / 100, "seq": i}, "headers": {"s": "f"}}
        for i in range(RECORDS)
    ]
    assert client.post("/v1/topics/big/records", json={"records": records}).status_code == 200
    plain = fetch(client, "big", **{"Accept-Encoding": "identity"})
    zipped = fetch(client, "big", **{"Accept-Encoding": "gzip"})
    assert plain.status_code == zipped.status_code == 200
    assert "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in zipped.headers["vary"].lower()
    wire = int(zipped.headers["content-length"])
    assert zipped.json() == plain.json()  # httpx decoded it
    assert len(zipped.json()["records"]) == RECORDS
    # The figure docs/api.md quotes: bytes on the wire for 1,000 records.
    print(f"fetch of {RECORDS} records: {len(plain.content)} bytes plain, {wire} gzipped")
    assert wire * 4 < len(plain.content)


def test_small_responses_and_produce_acks_stay_plain(client: httpx.Client) -> None:
    small = client.get("/healthz", headers={"Accept-Encoding": "gzip"})
    assert len(small.content) < GZIP_MINIMUM_SIZE
    assert "content-encoding" not in small.headers
    ack = produce(client, "t", b'{"value": 1}', **{"Accept-Encoding": "gzip"})
    assert ack.status_code == 200 and "content-encoding" not in ack.headers
    # Writes are never compressed (the lean produce route stays as lean), even large answers.
    batch = b'{"records": [' + b",".join([b'{"value": 1}'] * 500) + b"]}"
    big_ack = produce(client, "t", batch, **{"Accept-Encoding": "gzip"})
    assert len(big_ack.content) > GZIP_MINIMUM_SIZE and "content-encoding" not in big_ack.headers
    assert [o["offset"] for o in big_ack.json()["offsets"]] == list(range(1, 501))
    # A large GET answer is.
    for path in ("/openapi.json", "/metrics"):
        response = client.get(path, headers={"Accept-Encoding": "gzip"})
        assert response.headers["content-encoding"] == "gzip", path


@pytest.fixture
def event_stream_server() -> Iterator[tuple[str, threading.Event]]:
    """A real uvicorn serving a text/event-stream behind Eddy's gzip middleware: the stream
    sends one event, then holds until the test has read it (a buffering middleware would
    hold the event back and the test would time out), then a large one and ends."""
    release = threading.Event()

    async def events(_: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"event: record\ndata: " + b"x" * (2 * GZIP_MINIMUM_SIZE) + b"\n\n"
            await asyncio.to_thread(release.wait, 10)
            yield b"event: record\ndata: last\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    async def big(_: Request) -> JSONResponse:
        return JSONResponse({"x": "y" * 4 * GZIP_MINIMUM_SIZE})

    app = GzipGetResponses(Starlette(routes=[Route("/events", events), Route("/big", big)]))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started)
    try:
        yield f"http://127.0.0.1:{port}", release
    finally:
        release.set()
        server.should_exit = True
        thread.join(timeout=10)


def test_event_streams_are_never_compressed_or_buffered(
    event_stream_server: tuple[str, threading.Event],
) -> None:
    base, release = event_stream_server
    headers = {"Accept-Encoding": "gzip"}
    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/big", headers=headers).headers["content-encoding"] == "gzip"
        with client.stream("GET", "/events", headers=headers) as stream:
            assert "content-encoding" not in stream.headers
            chunks = stream.iter_raw()
            first = next(chunks)  # arrives while the stream is still open
            assert first.startswith(b"event: record\ndata: xxx")
            release.set()
            rest = b"".join(chunks)
    assert (first + rest).endswith(b"data: last\n\n")


# --- request bodies ---------------------------------------------------------------------------


def stored(client: httpx.Client, topic: str) -> list[dict[str, object]]:
    records: list[dict[str, object]] = fetch(client, topic).json()["records"]
    return records


def test_gzip_bodies_are_decoded_for_every_produce_media_type(client: httpx.Client) -> None:
    gz = {"Content-Encoding": "gzip"}
    json_body = gzip.compress(b'{"records": [{"key": "a", "value": {"n": 1}}, {"value": [2]}]}')
    response = produce(client, "j", json_body, **gz, **{"Content-Type": "application/json"})
    assert [o["offset"] for o in response.json()["offsets"]] == [0, 1]
    assert [r["value"] for r in stored(client, "j")] == [{"n": 1}, [2]]

    raw = bytes(range(256)) * 10
    response = produce(
        client, "b", gzip.compress(raw), **gz, **{"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 200, response.text
    assert [base64.b64decode(str(r["value_base64"])) for r in stored(client, "b")] == [raw]

    text = "héllo, wörld"
    response = produce(
        client, "s", gzip.compress(text.encode()), **gz, **{"Content-Type": "text/plain"}
    )
    assert response.status_code == 200, response.text
    assert [r["value"] for r in stored(client, "s")] == [text]

    deflated = zlib.compress(b'{"value": "deflated"}')
    response = produce(client, "d", deflated, **{"Content-Encoding": "deflate"})
    assert response.status_code == 200, response.text
    assert [r["value"] for r in stored(client, "d")] == ["deflated"]

    # Other routes read decoded bodies too.
    created = client.post(
        "/v1/topics",
        content=gzip.compress(b'{"name": "zipped", "partitions": 2}'),
        headers={**gz, "Content-Type": "application/json"},
    )
    assert created.status_code == 201 and created.json()["partitions"] == 2


def test_a_zip_bomb_is_refused_without_decoding_it_whole(tmp_path: Path) -> None:
    limit = 1 << 20
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 KiB
    headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain"}
    with (
        serve_in_thread(tmp_path / "data", max_request_bytes=limit) as server,
        server.client() as client,
    ):
        response = produce(client, "t", bomb, **headers)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        assert response.json()["error"]["details"] == {"limit": limit}
        # Just under the limit is fine.
        response = produce(client, "t", gzip.compress(b"a" * (limit - 100)), **headers)
        assert response.status_code == 200, response.text
        assert len(stored(client, "t")) == 1  # the refused body stored nothing


def test_bad_and_unknown_encodings_are_client_errors(client: httpx.Client) -> None:
    cases = [
        ({"Content-Encoding": "br"}, b"abc", 415, "unsupported_media_type"),
        ({"Content-Encoding": "gzip, gzip"}, b"abc", 415, "unsupported_media_type"),
        ({"Content-Encoding": "gzip"}, b"not gzip at all", 422, "invalid_request"),
        ({"Content-Encoding": "gzip"}, gzip.compress(b'{"value": 1}')[:-4], 422, "invalid_request"),
        ({"Content-Encoding": "deflate"}, gzip.compress(b"{}"), 422, "invalid_request"),
    ]
    for headers, body, status, code in cases:
        response = produce(client, "t", body, **headers)
        assert response.status_code == status, (headers, response.text)
        assert response.json()["error"]["code"] == code
    assert (
        produce(client, "t", b'{"value": 1}', **{"Content-Encoding": "identity"}).status_code == 200
    )


def test_concatenated_gzip_members_are_one_body() -> None:
    decoder = BodyDecoder("gzip", 1000)
    assert decoder.feed(gzip.compress(b"ab") + gzip.compress(b"cd")) == b"abcd"
    decoder.finish()


@given(st.binary(max_size=4000), st.integers(1, 500), st.integers(100, 5000))
def test_decoding_in_any_chunks_gives_the_body_or_413(body: bytes, chunk: int, limit: int) -> None:
    encoded = gzip.compress(body)
    decoder = BodyDecoder("gzip", limit)
    out = b""
    try:
        for start in range(0, len(encoded), chunk):
            out += decoder.feed(encoded[start : start + chunk])
        decoder.finish()
    except PayloadTooLarge:
        assert len(body) > limit
        assert len(out) <= limit  # never decoded past the limit
        return
    assert out == body and len(body) <= limit


def test_a_truncated_stream_is_invalid() -> None:
    decoder = BodyDecoder("gzip", 100)
    decoder.feed(gzip.compress(b"hello")[:8])
    with pytest.raises(InvalidRequest):
        decoder.finish()


# --- 405 --------------------------------------------------------------------------------------


def test_405_lists_the_methods_the_path_serves(server: RunningServer) -> None:
    expected = {
        ("PUT", "/v1/topics/x"): "GET, HEAD, PATCH, DELETE",  # HEAD: every GET's (app/head.py)
        ("DELETE", "/v1/topics"): "GET, HEAD, POST",
        ("GET", "/v1/topics/x/records"): "POST",
        ("POST", "/v1/topics/x/partitions/0/records"): "GET, HEAD",
        ("PUT", "/v1/groups/g"): "GET, HEAD, DELETE",
        ("POST", "/healthz"): "GET, HEAD",
    }
    with server.client() as client:
        for (method, path), allow in expected.items():
            response = client.request(method, path)
            assert response.status_code == 405, (method, path)
            assert response.headers["allow"] == allow, (method, path)
            error = response.json()["error"]
            assert error["code"] == "method_not_allowed"
            assert error["details"]["allowed"] == allow.split(", ")
