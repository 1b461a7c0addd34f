"""Service logs as JSON lines: one object per record, redacted like the text log."""

from __future__ import annotations

import io
import json
import logging

import pytest

from xiezhi.logs import formatter
from xiezhi.redaction import RedactingFilter

ID_NUMBER = "11010519491231002X"


def test_a_json_log_line_is_one_redacted_object_per_record() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(formatter("json", "xiezhi-gateway"))
    logger = logging.getLogger("test.logs.json")
    logger.propagate, logger.level = False, logging.INFO
    logger.addHandler(handler)
    try:
        logger.info("lookup for %s done", ID_NUMBER)
        try:
            raise ValueError(f"no index for {ID_NUMBER}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["level"], r["logger"], r["service"]) for r in records] == [
        ("INFO", "test.logs.json", "xiezhi-gateway"),
        ("ERROR", "test.logs.json", "xiezhi-gateway"),
    ]
    assert records[0]["message"].startswith("lookup for ") and records[1]["message"] == "failed [ValueError]"
    assert records[0]["time"].endswith("+00:00")
    assert ID_NUMBER not in stream.getvalue() and "Traceback" not in stream.getvalue()


def test_an_unknown_log_format_is_refused() -> None:
    assert isinstance(formatter("text", "x"), logging.Formatter)
    with pytest.raises(ValueError, match="text, json"):
        formatter("xml", "x")
