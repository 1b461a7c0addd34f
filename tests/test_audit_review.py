"""The auditor's read-only API over real HTTP: search filters, paging, subtree scoping, bad
parameters, entry detail and the CSV export (and the log entry every export leaves).

One stack for the module; activity is made through the real API at known clock times by
two prosecutors of two districts of one city.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.stack import HTTP, LEGAL_BASIS, PURPOSE, Clock, Stack, start_stack

pytestmark = pytest.mark.integration  # every test reads a live stack's log

START = datetime(2026, 6, 1, 1, 30, tzinfo=UTC)  # Monday 09:30 in China
PURPOSE_B = "（2025）浙0802执监7号"
ALICE, BOB = "prosecutor-330803-21", "prosecutor-330802-22"
EXPORT_CAP = 60


@dataclass
class World:
    stack: Stack
    clock: Clock
    alice_requests: list[str]
    bob_request: str
    bob_at: datetime  # when Bob's activity started


def _get(stack: Stack, path: str, token: str, **params: Any) -> httpx.Response:
    return HTTP.get(stack.gateway_url + path, params=params, headers={"authorization": f"Bearer {token}"})


def _create(stack: Stack, token: str, purpose: str = PURPOSE) -> httpx.Response:
    body = {"model": "repeated_debtor", "subject_count": 5, "purpose": purpose, "legal_basis": LEGAL_BASIS}
    return HTTP.post(f"{stack.gateway_url}/v1/requests", json=body, headers={"authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, generated: Path) -> Iterator[World]:
    clock = Clock(START)
    stack = start_stack(tmp_path_factory.mktemp("review"), clock, audit={"export_max_rows": EXPORT_CAP})
    try:
        stack.publish(generated, connectors=("court",))
        alice = stack.user_token(["prosecutor"], subject=ALICE, org="330803")
        bob = stack.user_token(["prosecutor"], subject=BOB, org="330802")
        alice_requests = [_create(stack, alice).json()["request_id"] for _ in range(3)]
        bad = {"model": "repeated_debtor", "subject_count": 5, "purpose": "查一下", "legal_basis": LEGAL_BASIS}
        refused = HTTP.post(f"{stack.gateway_url}/v1/requests", json=bad, headers={"authorization": f"Bearer {alice}"})
        assert refused.status_code == 403
        clock.advance(hours=2)
        bob_at = clock.now
        created = _create(stack, bob, PURPOSE_B)
        assert created.status_code == 201, created.text
        yield World(stack, clock, alice_requests, created.json()["request_id"], bob_at)
    finally:
        stack.stop()


def _auditor(world: World, org: str = "330800", subject: str = "auditor-330800-01") -> str:
    return world.stack.user_token(["security_auditor"], subject=subject, org=org)


def _search(world: World, token: str | None = None, **params: Any) -> list[dict[str, Any]]:
    response = _get(world.stack, "/v1/audit/entries", token or _auditor(world), limit=1000, **params)
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next_before"] is None
    entries: list[dict[str, Any]] = page["entries"]
    return entries


# ---- filters ---------------------------------------------------------------------------


def test_each_filter_narrows_the_search(world: World) -> None:
    everything = _search(world)
    seqs = [e["seq"] for e in everything]
    assert seqs == sorted(seqs, reverse=True), "newest first"
    assert {"seq", "at", "kind", "actor", "org", "request_id", "model", "connector", "outcome", "purpose", "action",
            "detail"} == set(everything[0])  # fmt: skip

    by_alice = _search(world, user=ALICE)
    assert by_alice and {e["actor"] for e in by_alice} == {ALICE}
    assert len(by_alice) == len([e for e in everything if e["actor"] == ALICE])

    denied = _search(world, decision="deny")
    assert denied and all(e["outcome"] == "deny" for e in denied)
    assert any(e["actor"] == ALICE and e["detail"]["reason"] == "purpose_malformed" for e in denied)

    created = _search(world, kind="request.created")
    assert sorted(e["request_id"] for e in created) == sorted([*world.alice_requests, world.bob_request])

    assert {e["actor"] for e in _search(world, purpose="浙0802")} == {BOB}
    assert {e["org"] for e in _search(world, org="330802")} == {"330802"}
    assert {e["model"] for e in _search(world, model="repeated_debtor")} == {"repeated_debtor"}
    published = _search(world, connector="court")
    assert published and {e["connector"] for e in published} == {"court"} and all(e["org"] is None for e in published)

    one = _search(world, request_id=world.alice_requests[1])
    assert {e["request_id"] for e in one} == {world.alice_requests[1]}
    assert {e["kind"] for e in one} >= {"decision", "request.created"}

    later = _search(world, since=world.bob_at.isoformat(), kind="request.created")
    assert [e["request_id"] for e in later] == [world.bob_request]
    naive_china = (world.bob_at + timedelta(hours=8)).replace(tzinfo=None).isoformat()  # no offset: China time
    assert [e["request_id"] for e in _search(world, until=naive_china, kind="request.created", user=BOB)] == [
        world.bob_request
    ]
    earlier = _search(world, until=(world.bob_at - timedelta(seconds=1)).isoformat(), kind="request.created")
    assert sorted(e["request_id"] for e in earlier) == sorted(world.alice_requests)

    combined = _search(world, user=ALICE, kind="request.created", request_id=world.alice_requests[0])
    assert [e["request_id"] for e in combined] == [world.alice_requests[0]]
    picked = [everything[3]["seq"], everything[7]["seq"]]
    assert [e["seq"] for e in _search(world, seqs=f"{picked[1]},{picked[0]}")] == picked


def test_paging_walks_every_entry_once(world: World) -> None:
    # Before Bob: the auditors' own reads (decisions too) come later and would shift the pages.
    until = (world.bob_at - timedelta(seconds=1)).isoformat()
    token = _auditor(world)
    expected = [e["seq"] for e in _search(world, token, kind="decision", until=until)]
    assert len(expected) > 7
    seen: list[int] = []
    before: int | None = None
    while True:
        params: dict[str, Any] = {"kind": "decision", "until": until, "limit": 3}
        if before is not None:
            params["before"] = before
        page = _get(world.stack, "/v1/audit/entries", token, **params).json()
        assert len(page["entries"]) <= 3
        seen += [e["seq"] for e in page["entries"]]
        before = page["next_before"]
        if before is None:
            break
        assert before == seen[-1]
    assert seen == expected


def test_an_auditor_sees_only_their_subtree(world: World) -> None:
    district = _auditor(world, org="330802", subject="auditor-330802-01")
    mine = _search(world, district)
    assert mine and {e["org"] for e in mine} <= {"330802", None}
    assert not _search(world, district, user=ALICE)
    assert not _search(world, district, org="330803")
    assert any(e["org"] is None for e in mine), "entries of no organisation are visible to every auditor"
    alice_entry = _search(world, user=ALICE, kind="request.created")[0]["seq"]
    hidden = _get(world.stack, f"/v1/audit/entries/{alice_entry}", district)
    assert (hidden.status_code, hidden.json()["code"]) == (404, "unknown_entry")
    province = _auditor(world, org="330000", subject="auditor-330000-01")
    assert {e["org"] for e in _search(world, province)} >= {"330802", "330803", None}


def test_only_auditors_read_the_entries(world: World) -> None:
    prosecutor = world.stack.user_token(["prosecutor"], subject=ALICE)
    for path in ("/v1/audit/entries", "/v1/audit/entries/0", "/v1/audit/entries.csv", "/v1/audit/anomalies"):
        response = _get(world.stack, path, prosecutor)
        assert (response.status_code, response.json()["code"]) == (403, "not_granted"), path
    security = world.stack.user_token(["security_admin"], subject="secadmin-330000-01", org="330000")
    assert _get(world.stack, "/v1/audit/entries", security).status_code == 403
    assert _get(world.stack, "/v1/audit/policy-changes", security).status_code == 200
    # Every read is itself a decision in the log, the refused ones included.
    reads = _search(world, user=ALICE, kind="decision")
    objects = {(e["detail"]["object"], e["outcome"]) for e in reads}
    assert ("audit:entries", "deny") in objects


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"since": "yesterday"}, "bad_since"),
        ({"until": "2026-13-01T00:00:00"}, "bad_until"),
        ({"since": "2026-06-02T00:00:00+08:00", "until": "2026-06-01T00:00:00+08:00"}, "bad_range"),
        ({"limit": "0"}, "bad_limit"),
        ({"limit": "1001"}, "bad_limit"),
        ({"limit": "ten"}, "bad_limit"),
        ({"before": "-1"}, "bad_before"),
        ({"kind": "gossip"}, "bad_kind"),
        ({"org": "3308"}, "bad_org"),
        ({"model": "Repeated Debtor"}, "bad_model"),
        ({"connector": "court;drop"}, "bad_connector"),
        ({"decision": "DENY!"}, "bad_decision"),
        ({"request_id": "a b"}, "bad_request_id"),
        ({"purpose": "x" * 201}, "bad_purpose"),
        ({"seqs": "1,two"}, "bad_seqs"),
        ({"seqs": ",".join(str(n) for n in range(51))}, "bad_seqs"),
        ({"purpose": "330803199001011234"}, "identifier_in_filter"),
        ({"user": "３３０８０３１９９００１０１１２３４"}, "identifier_in_filter"),
    ],
)
def test_bad_parameters_are_refused_with_a_code(world: World, params: dict[str, str], code: str) -> None:
    response = _get(world.stack, "/v1/audit/entries", _auditor(world), **params)
    assert response.status_code == 400 and response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    csv_response = _get(world.stack, "/v1/audit/entries.csv", _auditor(world), **params)
    if "limit" not in params and "before" not in params:
        assert (csv_response.status_code, csv_response.json()["code"]) == (400, code)


def test_entry_detail_carries_the_hashed_text(world: World) -> None:
    token = _auditor(world)
    listed = _search(world, token, request_id=world.bob_request, kind="request.created")[0]
    detail = _get(world.stack, f"/v1/audit/entries/{listed['seq']}", token).json()
    assert {k: v for k, v in detail.items() if k not in ("entry", "leaf_hash")} == listed
    leaf = hashlib.sha256(b"\x00" + detail["entry"].encode()).digest()
    assert base64.b64encode(leaf).decode() == detail["leaf_hash"]
    entry = json.loads(detail["entry"])
    assert entry["seq"] == listed["seq"] and entry["purpose"] == PURPOSE_B and entry["detail"]["subjects"] == 5
    assert detail["entry"] == json.dumps(entry, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    for seq, code in (("999999", 404), ("x1", 400)):
        assert _get(world.stack, f"/v1/audit/entries/{seq}", token).status_code == code


# ---- export ----------------------------------------------------------------------------


def _rows(response: httpx.Response) -> list[dict[str, str]]:
    assert response.content.startswith(b"\xef\xbb\xbf"), "UTF-8 with a byte-order mark"
    return list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))


def test_csv_export_matches_the_search_and_is_logged(world: World) -> None:
    token = _auditor(world, subject="auditor-330800-07")
    params = {"user": BOB, "purpose": "浙0802"}
    expected = _search(world, token, **params)
    response = _get(world.stack, "/v1/audit/entries.csv", token, **params)
    assert response.status_code == 200 and response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in response.headers["content-disposition"]
    rows = _rows(response)
    assert list(rows[0]) == ["seq", "at", "kind", "actor", "org", "request_id", "model", "connector", "outcome",
                             "purpose", "action", "detail"]  # fmt: skip
    assert [int(r["seq"]) for r in rows] == [e["seq"] for e in expected]
    assert {r["purpose"] for r in rows if r["kind"] == "request.created"} == {PURPOSE_B}
    assert [json.loads(r["detail"]) for r in rows] == [e["detail"] for e in expected]
    assert int(response.headers["x-export-rows"]) == len(rows)
    exports = _search(world, token, kind="audit.export", user="auditor-330800-07")
    assert len(exports) == 1
    export = exports[0]
    assert export["outcome"] == "ok" and export["action"] == "export"
    assert export["detail"] == {"filter.user": BOB, "filter.purpose": "浙0802", "rows": len(rows), "format": "csv"}


def test_an_export_too_large_is_refused_and_logged(world: World) -> None:
    token = _auditor(world, subject="auditor-330800-08")
    # The world's log grows with the tests that ran before on this worker: top it up past the cap.
    alice = world.stack.user_token(["prosecutor"], subject=ALICE, org="330803")
    for _ in range(EXPORT_CAP):
        if len(_search(world, token)) > EXPORT_CAP:
            break
        assert _create(world.stack, alice).status_code == 201
    total = len(_search(world, token))
    assert total > EXPORT_CAP
    refused = _get(world.stack, "/v1/audit/entries.csv", token)
    assert (refused.status_code, refused.json()["code"]) == (400, "export_too_large")
    assert refused.json()["limit"] == EXPORT_CAP
    logged = _search(world, token, kind="audit.export", user="auditor-330800-08")
    assert [(e["outcome"], e["detail"]["reason"]) for e in logged] == [("refused", "export_too_large")]
    assert logged[0]["detail"]["rows"] >= total
