"""WebSocket frames (documented in openapi/asyncapi.yaml). Server frames are built by the broker's
codec for speed; these models validate what clients send and give the docs their shape."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from eddy.models.records import MAX_INT64, RecordIn


class PublishFrame(RecordIn):
    """A record sent on /publish; `id` is echoed in its ack or error."""

    model_config = ConfigDict(extra="forbid")

    id: str | int | None = Field(default=None, description="Client's id, echoed in the answer")
    sequence: int | None = Field(
        default=None,
        ge=0,
        le=MAX_INT64,
        description="Idempotent producer's sequence (with ?producer_id= on the URL)",
    )
