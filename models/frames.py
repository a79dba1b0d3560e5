"""WebSocket frames (documented in openapi/asyncapi.yaml). Server frames are built by the broker's
codec for speed; these models validate what clients send and give the docs their shape."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from models.records import RecordIn


class PublishFrame(RecordIn):
    """A record sent on /publish; `id` is echoed in its ack or error."""

    model_config = ConfigDict(extra="forbid")

    id: str | int | None = Field(default=None, description="Client's id, echoed in the answer")
