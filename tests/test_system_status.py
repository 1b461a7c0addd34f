"""The system status and `/readyz` report each connector's health, against a real stack.

Real connectors over mutual TLS on loopback: one is stopped (its port refuses connections)
and started again; the system status shows it unreachable, then reachable; its index age
follows the gateway's clock, in the status and in `/readyz`'s 200 and 503 bodies alike.
Nothing in them looks like an ID, a name or a token.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.stack import CONNECTORS, HTTP, Clock, Stack, start_stack
from xiezhi.redaction import scrub

pytestmark = pytest.mark.integration  # runs a whole stack

ADMIN = "sysadmin-330000-01"


def _status(stack: Stack, token: str) -> tuple[dict[str, Any], httpx.Response]:
    response = HTTP.get(f"{stack.gateway_url}/v1/system/status", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body, response


def _clean(response: httpx.Response, token: str) -> None:
    assert token not in response.text and ADMIN not in response.text
    assert scrub(response.text) == response.text  # nothing ID- or token-like


def test_the_system_status_shows_each_connectors_health(tmp_path: Path, generated: Path) -> None:
    clock = Clock(datetime.now(UTC).replace(microsecond=0))
    stack = start_stack(tmp_path / "stack", clock)
    try:
        stack.publish(generated, ("tax",))
        activated = clock.now
        clock.advance(hours=2, minutes=5, seconds=7)
        admin = stack.user_token(["system_admin"], subject=ADMIN, org="330000")

        status, response = _status(stack, admin)
        _clean(response, admin)
        assert set(status["connectors"]) == set(CONNECTORS)
        tax = status["connectors"]["tax"]
        assert tax == {
            "reachable": True,
            "epoch": 1,
            "index_activated_at": activated.isoformat().replace("+00:00", "Z"),
            "index_age_seconds": 7507,
        }
        unpublished = [c for c in CONNECTORS if c != "tax"]
        for name in unpublished:
            assert status["connectors"][name] == {
                "reachable": True,
                "epoch": None,
                "index_activated_at": None,
                "index_age_seconds": None,
            }
        ready = HTTP.get(f"{stack.gateway_url}/readyz")
        assert ready.status_code == 200 and ready.json()["connectors"]["tax"]["index_age_seconds"] == 7507

        stack.stop_connector("tax")
        clock.advance(seconds=60)
        down, response = _status(stack, admin)
        _clean(response, admin)
        assert down["connectors"]["tax"]["reachable"] is False
        assert down["connectors"]["tax"]["index_age_seconds"] == 7567  # still known from the database
        assert all(down["connectors"][name]["reachable"] for name in unpublished)
        not_ready = HTTP.get(f"{stack.gateway_url}/readyz")
        problem = not_ready.json()
        assert not_ready.status_code == 503 and problem["code"] == "connector_unreachable"
        assert problem["connectors"]["tax"]["reachable"] is False
        assert problem["connectors"]["tax"]["index_age_seconds"] == 7567
        assert problem["connectors"]["court"]["reachable"] is True

        stack.start_connector("tax")
        again, _ = _status(stack, admin)
        assert again["connectors"]["tax"]["reachable"] is True and again["connectors"]["tax"]["epoch"] == 1
        assert HTTP.get(f"{stack.gateway_url}/readyz").status_code == 200
    finally:
        stack.stop()
