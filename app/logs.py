"""Log output: text or JSON lines on stderr, one formatter for Eddy's loggers and uvicorn's.

JSON lines are written by python-json-logger: one object per line with `time` (ISO 8601, UTC),
`level`, `logger`, `message`, the `request_id` of the call being served (if any), the fields a
line adds (the access log's method, path, status, ...) and `exc_info` for a traceback.

Tokens never reach a log: Eddy logs paths without query strings and never logs credentials,
and as a second line of defence the handler's filter blanks anything that looks like a token
(`token=...`, `Bearer ...`) in a message before it is written.
"""

from __future__ import annotations

import logging
import logging.config
import re
import sys
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter

from eddy.models.context import current_call

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# uvicorn logs each WebSocket handshake at INFO with its path *and query string* (where a
# browser's ?token= travels): its loggers stay at WARNING whatever --log-level says.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
_SECRET = re.compile(r"(?i)(token=|bearer\s+)[^\s&\"']+")


def redact(text: str) -> str:
    """`text` with the values of `token=` and `Bearer ` blanked."""
    return _SECRET.sub(r"\1[redacted]", text)


class CallFilter(logging.Filter):
    """Adds the request id of the call being served and redacts token-like text."""

    def filter(self, record: logging.LogRecord) -> bool:
        call = current_call.get()
        if call is not None and not hasattr(record, "request_id"):
            record.request_id = call.request_id
        message = record.getMessage()
        if "oken=" in message or "earer " in message or "EARER " in message:
            record.msg, record.args = redact(message), None
        return True


class TextFormatter(logging.Formatter):
    """`time level logger: message`, then ` request_id=...` when serving a call."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return line if request_id is None else f"{line} request_id={request_id}"

    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))  # an exception's text may quote a URL


class JsonLineFormatter(JsonFormatter):
    def formatException(self, ei: Any) -> str:
        text = super().formatException(ei)  # a list only with exc_info_as_array (not used)
        return redact(text if isinstance(text, str) else "\n".join(text))


def formatter(fmt: LogFormat) -> logging.Formatter:
    if fmt == "json":
        return JsonLineFormatter(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )
    return TextFormatter(TEXT_FORMAT)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler on whatever `sys.stderr` is when it writes, not when it was made: a
    program that swaps stderr (a test runner, a CLI runner) and closes the old one must not
    leave the root logger writing to a closed file."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always sys.stderr


def logging_config(level: str, fmt: LogFormat) -> dict[str, Any]:
    """The `logging.config.dictConfig` of `eddy serve`: one stderr handler on the root logger,
    which uvicorn's loggers propagate to (so they share its formatter and filter)."""
    uvicorn_level = max(logging.WARNING, logging.getLevelName(level.upper()))
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"call": {"()": CallFilter}},
        "formatters": {"eddy": {"()": formatter, "fmt": fmt}},
        "handlers": {
            "stderr": {
                "()": StderrHandler,
                "formatter": "eddy",
                "filters": ["call"],
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            name: {"level": logging.getLevelName(uvicorn_level), "handlers": [], "propagate": True}
            for name in UVICORN_LOGGERS
        },
    }


def uvicorn_log_config() -> dict[str, Any]:
    """What uvicorn configures when it starts (`uvicorn.Config(log_config=...)`): its loggers
    get no handlers of their own and propagate to the root logger's, instead of uvicorn's
    default handlers and formats."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {name: {"handlers": [], "propagate": True} for name in UVICORN_LOGGERS},
    }


def configure_logging(level: str, fmt: LogFormat) -> None:
    logging.config.dictConfig(logging_config(level, fmt))
