"""Service logs as structured JSON lines, for a log collector (`XIEZHI_LOG_FORMAT=json`).

One object per record: `time` (UTC, ISO 8601), `level`, `logger`, `message`, and the
process's `service`. The message is what `xiezhi.redaction.RedactingFilter` left of it (put
the filter on the same handler): scrubbed of anything shaped like an ID, token, key or name,
a traceback reduced to the exception's type.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonLineFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname,
                "logger": record.name,
                "service": self._service,
                "message": record.getMessage(),
            },
            ensure_ascii=False,
        )


def formatter(kind: str, service: str) -> logging.Formatter:
    """The formatter for `kind` (text or json); ValueError for another."""
    if kind == "json":
        return JsonLineFormatter(service)
    if kind == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {kind!r}")


__all__ = ["FORMATS", "JsonLineFormatter", "formatter"]
