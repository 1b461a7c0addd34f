"""Anomaly rules: each fires at its threshold and not just below it, first on rows built here
(gateway/anomalies.py is pure), then over real HTTP against a stack whose thresholds the
test sets, with real lookups behind `token_repeated`. Neither the log nor the sightings table
may ever hold a token.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway import anomalies
from gateway.anomalies import Activity, Sighting, Window
from gateway.quotas import CHINA
from gateway.settings import AnomalyThresholds, WorkingHours
from requester.job import match_file
from requester.protocol import MatchSpec
from requester.subjects import read_subjects
from tests.stack import HTTP, LEGAL_BASIS, PURPOSE, Clock, Stack, start_stack
from xiezhi import oprf
from xiezhi.crypto import derive_token

MONDAY = datetime(2026, 6, 1, 10, 0, tzinfo=CHINA)  # a Monday, 10:00 China time
WIDE = Window(MONDAY - timedelta(days=60), MONDAY + timedelta(days=30))


def act(seq: int, at: datetime, kind: str = "request.created", actor: str = "u1", **detail: object) -> Activity:
    action = str(detail.pop("action", "create"))
    outcome = str(detail.pop("outcome", "ok"))
    request_id = detail.pop("request_id", None)
    return Activity(seq, at, kind, action, actor, "330803", outcome, request_id, detail)  # type: ignore[arg-type]


# ---- volume_above_baseline -------------------------------------------------------------


def _volume(days: dict[int, int], t: AnomalyThresholds, window: Window = WIDE) -> list[anomalies.Flag]:
    """`days`: offset in days from MONDAY → subjects requested that day (one request each)."""
    rows = [act(i, MONDAY + timedelta(days=offset), subjects=n) for i, (offset, n) in enumerate(sorted(days.items()))]
    return anomalies.volume_above_baseline(rows, t, window)


def test_volume_against_the_users_own_median() -> None:
    t = AnomalyThresholds(volume_factor=3.0, volume_min_subjects=100, baseline_days=30)
    history = {-3: 50, -2: 70}  # median 60: the bar is 3 × 60 = 180
    assert _volume({**history, 0: 180}, t) == []
    flags = _volume({**history, 0: 181}, t)
    assert [(f.code, f.actor, f.seqs) for f in flags] == [("volume_above_baseline", "u1", (2,))]
    assert "181" in flags[0].reason and "3 × the median 60" in flags[0].reason and "100" in flags[0].reason


def test_volume_never_below_the_minimum_and_without_history() -> None:
    t = AnomalyThresholds(volume_factor=3.0, volume_min_subjects=100, baseline_days=30)
    assert _volume({-1: 10, 0: 100}, t) == []  # 10 × the median, but not above the minimum
    assert len(_volume({-1: 10, 0: 101}, t)) == 1
    assert _volume({0: 100}, t) == []  # no history: the minimum alone
    assert "no earlier active day" in _volume({0: 101}, t)[0].reason
    # History older than baseline_days does not count: judged as a first day.
    today = Window(MONDAY - timedelta(hours=1), MONDAY + timedelta(hours=1))
    assert "no earlier active day" in _volume({-31: 1000, 0: 101}, t, today)[0].reason
    assert _volume({-30: 1000, 0: 101}, t, today) == []  # within the baseline, 101 is far below 3 × 1000


def test_volume_sums_a_china_day_and_flags_only_days_in_the_window() -> None:
    t = AnomalyThresholds(volume_factor=3.0, volume_min_subjects=100)
    # 23:30 and 00:30 China time fall on different days: neither day exceeds 100.
    late, early = MONDAY.replace(hour=23, minute=30), MONDAY.replace(hour=0, minute=30) + timedelta(days=1)
    assert anomalies.volume_above_baseline([act(1, late, subjects=60), act(2, early, subjects=60)], t, WIDE) == []
    same_day = [act(1, MONDAY, subjects=60), act(2, late, subjects=60)]
    assert [f.seqs for f in anomalies.volume_above_baseline(same_day, t, WIDE)] == [(1, 2)]
    outside = Window(MONDAY + timedelta(days=1), MONDAY + timedelta(days=2))
    assert anomalies.volume_above_baseline(same_day, t, outside) == []


# ---- outside_working_hours -------------------------------------------------------------


def _outside(at: datetime, t: AnomalyThresholds, actor: str = "u1", kind: str = "request.created") -> bool:
    return bool(anomalies.outside_working_hours([act(1, at, kind, actor)], t, WIDE))


def test_working_hours_edges_and_weekends() -> None:
    t = AnomalyThresholds(working_hours=WorkingHours(start="08:00", end="20:00", weekdays_only=True))
    assert _outside(MONDAY.replace(hour=7, minute=59), t)
    assert not _outside(MONDAY.replace(hour=8, minute=0), t)
    assert not _outside(MONDAY.replace(hour=19, minute=59), t)
    assert _outside(MONDAY.replace(hour=20, minute=0), t)
    saturday = MONDAY + timedelta(days=5)
    assert _outside(saturday, t) and not _outside(saturday, t.model_copy(update={"working_hours": WorkingHours(
        weekdays_only=False)}))  # fmt: skip
    # Stored in UTC: 01:00 UTC on Monday is 09:00 in China, inside.
    assert not _outside(datetime(2026, 6, 1, 1, 0, tzinfo=UTC), t)
    night = WorkingHours(start="20:00", end="08:00", weekdays_only=False)  # a night shift
    assert not _outside(MONDAY.replace(hour=23), t.model_copy(update={"working_hours": night}))


def test_only_people_are_flagged_once_per_day() -> None:
    t = AnomalyThresholds()
    night = MONDAY.replace(hour=23)
    assert not _outside(night, t, actor="gateway", kind="approval")
    assert not _outside(night, t, actor="connector:court")
    rows = [act(1, night, "request.created"), act(2, night + timedelta(minutes=5), "result.read"),
            act(3, night + timedelta(days=1), "approval")]  # fmt: skip
    flags = anomalies.outside_working_hours(rows, t, WIDE)
    assert [f.seqs for f in flags] == [(1, 2), (3,)]
    assert "23:00" in flags[0].reason and "08:00–20:00" in flags[0].reason


# ---- denial_burst ----------------------------------------------------------------------


def _denials(minutes: list[float], actor: str = "u1") -> list[Activity]:
    return [
        act(i, MONDAY + timedelta(minutes=m), "decision", actor, outcome="deny", reason="purpose_malformed")
        for i, m in enumerate(minutes)
    ]


def test_denial_burst_count_and_span() -> None:
    t = AnomalyThresholds(denial_burst_count=3, denial_burst_minutes=10)
    assert anomalies.denial_burst(_denials([0, 5]), t, WIDE) == []
    flags = anomalies.denial_burst(_denials([0, 5, 10]), t, WIDE)
    assert [(f.code, f.seqs) for f in flags] == [("denial_burst", (0, 1, 2))]
    assert "3 denied decisions" in flags[0].reason and "purpose_malformed ×3" in flags[0].reason
    assert anomalies.denial_burst(_denials([0, 5, 10 + 1 / 60]), t, WIDE) == []  # one second too spread out
    merged = anomalies.denial_burst(_denials([0, 1, 2, 3, 9, 40, 41]), t, WIDE)
    assert [f.seqs for f in merged] == [(0, 1, 2, 3, 4)]
    two_users = _denials([0, 1], "u1") + _denials([2], "u2")
    assert anomalies.denial_burst(two_users, t, WIDE) == []


# ---- token_repeated --------------------------------------------------------------------


def _seen(digest: bytes, request: str, actor: str, days_ago: float = 0, capability: str = "court.x") -> Sighting:
    return Sighting(digest, capability, request, actor, "330803", MONDAY - timedelta(days=days_ago))


def test_token_repeated_by_requests_or_users() -> None:
    t = AnomalyThresholds(token_repeat_requests=3, token_repeat_users=2, token_repeat_days=30)
    window = Window(MONDAY - timedelta(days=1), MONDAY)
    token = b"\x01" * 8
    two_requests = [_seen(token, "r1", "u1", 2), _seen(token, "r2", "u1", 1)]
    assert anomalies.token_repeated(two_requests, t, window) == []
    flags = anomalies.token_repeated([*two_requests, _seen(token, "r3", "u1")], t, window)
    assert [(f.code, f.actor, f.request_ids) for f in flags] == [("token_repeated", "u1", ("r1", "r2", "r3"))]
    assert "3 requests of 1 user(s)" in flags[0].reason and token.hex() not in flags[0].reason
    by_users = anomalies.token_repeated([_seen(token, "r1", "u1", 1), _seen(token, "r2", "u2")], t, window)
    assert [f.request_ids for f in by_users] == [("r1", "r2")] and "u1, u2" in by_users[0].reason
    # Older than token_repeat_days: out of the count.
    stale = [_seen(token, "r1", "u1", 31), _seen(token, "r2", "u1", 1), _seen(token, "r3", "u1")]
    assert anomalies.token_repeated(stale, t, window) == []
    # The same digest under two capabilities is two different tokens.
    split = [_seen(token, "r1", "u1", 1, "court.a"), _seen(token, "r2", "u2", 0, "court.b")]
    assert anomalies.token_repeated(split, t, window) == []


def test_tokens_with_the_same_requests_share_one_flag() -> None:
    t = AnomalyThresholds(token_repeat_requests=2, token_repeat_users=5)
    window = Window(MONDAY - timedelta(days=1), MONDAY)
    rows = [_seen(bytes([n]) * 8, r, "u1", 0.5 if r == "r1" else 0) for n in range(4) for r in ("r1", "r2")]
    flags = anomalies.token_repeated(rows, t, window)
    assert len(flags) == 1 and "court.x ×4" in flags[0].reason
    # None of them seen in the window: no flag.
    assert anomalies.token_repeated(rows, t, Window(MONDAY + timedelta(hours=1), MONDAY + timedelta(days=1))) == []


# ---- fast_approval and export ----------------------------------------------------------


def test_fast_approval_threshold() -> None:
    t = AnomalyThresholds(fast_approval_seconds=60)
    created = act(1, MONDAY, request_id="r1")

    def flags(seconds: float, action: str = "approve") -> list[anomalies.Flag]:
        approval = act(2, MONDAY + timedelta(seconds=seconds), "approval", "head", action=action, request_id="r1")
        return anomalies.fast_approval([approval], {"r1": created}, t, WIDE)

    assert [(f.code, f.actor, f.seqs) for f in flags(59.5)] == [("fast_approval", "head", (1, 2))]
    assert "59.5 s" in flags(59.5)[0].reason and "60 s" in flags(59.5)[0].reason
    assert flags(60) == []
    assert flags(5, action="reject") == []


def test_every_export_is_flagged_unless_switched_off() -> None:
    export = act(7, MONDAY, "audit.export", "auditor", action="export", rows=12, **{"filter.user": "u1"})
    flags = anomalies.exports([export], AnomalyThresholds(), WIDE)
    assert [(f.code, f.seqs) for f in flags] == [("export", (7,))] and "user=u1" in flags[0].reason
    assert anomalies.exports([export], AnomalyThresholds(flag_exports=False), WIDE) == []


# ---- over real HTTP --------------------------------------------------------------------

THRESHOLDS = {
    "token_repeat_requests": 3,
    "token_repeat_users": 3,
    "denial_burst_count": 3,
    "denial_burst_minutes": 5,
    "fast_approval_seconds": 120,
    "volume_min_subjects": 550,
}
REQUESTER_A, REQUESTER_B = "prosecutor-330803-31", "prosecutor-330803-32"


@dataclass
class Live:
    stack: Stack
    clock: Clock
    generated: Path

    def token(self, roles: list[str], subject: str, org: str = "330803") -> str:
        return self.stack.user_token(roles, subject=subject, org=org)

    def flags(self, code: str, org: str = "330000") -> list[dict[str, Any]]:
        auditor = self.token(["security_auditor"], f"auditor-{org}-01", org)
        since = (self.clock.now - timedelta(days=2)).isoformat()
        response = HTTP.get(
            f"{self.stack.gateway_url}/v1/audit/anomalies",
            params={"since": since, "until": (self.clock.now + timedelta(seconds=1)).isoformat()},
            headers={"authorization": f"Bearer {auditor}"},
        )
        assert response.status_code == 200, response.text
        return [flag for flag in response.json() if flag["code"] == code]

    def run(self, subject: str) -> str:
        spec = MatchSpec("repeated_debtor", PURPOSE, LEGAL_BASIS)
        out = self.stack.root / f"{subject}-{self.clock.now.timestamp()}.csv"
        summary = match_file(
            self.stack.gateway_url, self.token(["prosecutor"], subject), spec, self.generated / "subjects.csv", out,
            show_progress=False, workers=1,
        )  # fmt: skip
        assert summary.request_id is not None
        return summary.request_id

    def create(self, subject: str, subjects: int = 5, purpose: str = PURPOSE) -> httpx.Response:
        body = {"model": "repeated_debtor", "subject_count": subjects, "purpose": purpose, "legal_basis": LEGAL_BASIS}
        token = self.token(["prosecutor"], subject)
        headers = {"authorization": f"Bearer {token}"}
        return HTTP.post(f"{self.stack.gateway_url}/v1/requests", json=body, headers=headers)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, generated: Path) -> Iterator[Live]:
    clock = Clock(MONDAY.astimezone(UTC))
    stack = start_stack(tmp_path_factory.mktemp("anomalies"), clock, audit={"anomalies": THRESHOLDS})
    try:
        stack.publish(generated, connectors=("court",))
        yield Live(stack, clock, generated)
    finally:
        stack.stop()


def _court_tokens(live: Live) -> set[bytes]:
    """Every token the subject list yields at court, computed here with the connector's key."""
    subjects, _ = read_subjects(live.generated / "subjects.csv")
    key = (live.stack.key_dir("court") / "epoch-0001.key").read_bytes()
    outputs = oprf.evaluate_batch(key, [row.subject.oprf_input() for row in subjects], oprf.Mode.VOPRF)
    return {derive_token(output, "court.multiple_terminated") for output in outputs}


@pytest.mark.integration
def test_token_repeated_over_real_lookups_and_no_token_is_stored(live: Live) -> None:
    first = live.run(REQUESTER_A)
    live.clock.advance(minutes=1)
    second = live.run(REQUESTER_A)
    assert live.flags("token_repeated") == []  # 2 requests of 1 user: below both thresholds
    live.clock.advance(minutes=1)
    third = live.run(REQUESTER_B)
    flags = live.flags("token_repeated")
    assert len(flags) == 1
    flag = flags[0]
    assert flag["actor"] == REQUESTER_B and sorted(flag["request_ids"]) == sorted([first, second, third])
    assert "3 requests of 2 user(s)" in flag["reason"] and "court.multiple_terminated" in flag["reason"]
    tokens = _court_tokens(live)
    with sqlite3.connect(live.stack.root / "gateway" / "gateway.sqlite") as db:
        sightings = db.execute("SELECT digest, request_id, capability FROM token_sightings").fetchall()
        entries = [bytes(row[0]) for row in db.execute("SELECT entry FROM audit_entries")]
        lookups = {row[0] for row in db.execute("SELECT seq FROM audit_entries WHERE kind = 'lookup'")}
    assert set(flag["seqs"]) <= lookups and flag["seqs"]
    # Each request saw each distinct token once; the digests are keyed, not the tokens' hashes.
    per_request = {r: {d for d, req, _ in sightings if req == r} for r in (first, second, third)}
    assert per_request[first] == per_request[second] == per_request[third]
    assert len(per_request[first]) == len(tokens)
    digests = {bytes(d) for d, _, _ in sightings}
    assert not digests & {t[:8] for t in tokens} and not digests & {hashlib.sha256(t).digest()[:8] for t in tokens}
    forms = {form for t in tokens for form in (t, t.hex().encode(), base64.b64encode(t))}
    assert not [f for f in forms for entry in entries if f in entry], "a token in the audit log"


@pytest.mark.integration
def test_outside_working_hours_on_a_saturday(live: Live) -> None:
    live.clock.now = (MONDAY + timedelta(days=5)).replace(hour=22).astimezone(UTC)
    assert live.create("prosecutor-330803-33").status_code == 201
    flags = [f for f in live.flags("outside_working_hours") if f["actor"] == "prosecutor-330803-33"]
    assert len(flags) == 1 and "Saturday" in flags[0]["reason"] and len(flags[0]["seqs"]) == 1
    # The city's district next door cannot see it; the city can.
    assert [f for f in live.flags("outside_working_hours", "330802") if f["actor"] == "prosecutor-330803-33"] == []
    assert [f for f in live.flags("outside_working_hours", "330800") if f["actor"] == "prosecutor-330803-33"]


@pytest.mark.integration
def test_a_flag_is_triaged_by_an_auditor_who_sees_it_and_the_triage_is_audited(live: Live) -> None:
    live.clock.now = (MONDAY + timedelta(days=5)).replace(hour=23).astimezone(UTC)
    assert live.create("prosecutor-330803-34").status_code == 201
    (flag,) = [f for f in live.flags("outside_working_hours") if f["actor"] == "prosecutor-330803-34"]
    assert flag["triage"] is None and len(flag["key"]) == 24
    url = f"{live.stack.gateway_url}/v1/audit/anomalies/{flag['key']}/triage"
    auditor = live.token(["security_auditor"], "auditor-330000-01", "330000")

    def triage(token: str, body: dict[str, str], target: str = url) -> httpx.Response:
        return HTTP.post(target, json=body, headers={"authorization": f"Bearer {token}"})

    body = {"state": "acknowledged", "note": "已核实：周末值班"}
    assert triage(live.token(["prosecutor"], "prosecutor-330803-34"), body).status_code == 403
    assert (
        triage(live.token(["security_auditor"], "auditor-330802-01", "330802"), body).json()["code"]
        == "unknown_anomaly"
    )
    assert triage(auditor, body, url.replace(flag["key"], "0" * 24)).status_code == 404
    assert triage(auditor, body, url.replace(flag["key"], "not-a-key")).status_code == 400
    named = triage(auditor, {"state": "escalated", "note": "涉及 11010519491231002X"})
    assert (named.status_code, named.json()["code"]) == (400, "identifier_in_note")
    done = triage(auditor, body)
    assert done.status_code == 200 and done.json()["state"] == "acknowledged"
    (again,) = [f for f in live.flags("outside_working_hours") if f["actor"] == "prosecutor-330803-34"]
    assert again["key"] == flag["key"] and again["triage"]["note"] == "已核实：周末值班"
    assert again["triage"]["by"] == "auditor-330000-01"
    entries = HTTP.get(
        f"{live.stack.gateway_url}/v1/audit/entries", params={"kind": "anomaly.triage"},
        headers={"authorization": f"Bearer {auditor}"},
    ).json()["entries"]  # fmt: skip
    assert [(e["outcome"], e["detail"]["anomaly"], e["detail"]["code"]) for e in entries] == [
        ("acknowledged", flag["key"], "outside_working_hours")
    ]
    assert "周末值班" not in str(entries)


@pytest.mark.integration
def test_denial_burst_at_its_count(live: Live) -> None:
    live.clock.now = (MONDAY + timedelta(days=7)).astimezone(UTC)
    for _ in range(2):
        assert live.create("prosecutor-330803-34", purpose="查一下").status_code == 403
        live.clock.advance(minutes=2)
    assert [f for f in live.flags("denial_burst") if f["actor"] == "prosecutor-330803-34"] == []
    assert live.create("prosecutor-330803-34", purpose="查一下").status_code == 403
    flags = [f for f in live.flags("denial_burst") if f["actor"] == "prosecutor-330803-34"]
    assert len(flags) == 1 and len(flags[0]["seqs"]) == 3 and "purpose_malformed ×3" in flags[0]["reason"]


@pytest.mark.integration
def test_fast_approval_and_volume(live: Live) -> None:
    live.clock.now = (MONDAY + timedelta(days=8)).astimezone(UTC)
    head = live.stack.approver()
    waiting = []
    for _ in range(2):  # 600 subjects: over a district prosecutor's batch limit of 500
        refused = live.create("prosecutor-330803-35", subjects=600)
        assert refused.status_code == 409, refused.text
        waiting.append(refused.json()["request_id"])
    live.clock.advance(seconds=119)
    head(waiting[0])
    live.clock.advance(seconds=1)
    head(waiting[1])  # 120 s: not faster than the threshold
    fast = live.flags("fast_approval")
    assert [f["actor"] for f in fast] == ["dept-head-330803-01"] and "119 s" in fast[0]["reason"]
    # 1,200 subjects on the user's first day: above the minimum of 550 (no history to compare with).
    volume = [f for f in live.flags("volume_above_baseline") if f["actor"] == "prosecutor-330803-35"]
    assert len(volume) == 1 and "1200 subjects" in volume[0]["reason"] and len(volume[0]["seqs"]) == 2


@pytest.mark.integration
def test_every_export_is_flagged(live: Live) -> None:
    auditor = live.token(["security_auditor"], "auditor-330800-05", "330800")
    response = HTTP.get(
        f"{live.stack.gateway_url}/v1/audit/entries.csv",
        params={"kind": "request.created"},
        headers={"authorization": f"Bearer {auditor}"},
    )
    assert response.status_code == 200
    flags = [f for f in live.flags("export") if f["actor"] == "auditor-330800-05"]
    assert len(flags) == 1 and "kind=request.created" in flags[0]["reason"]


@pytest.mark.integration
def test_bad_periods_are_refused(live: Live) -> None:
    auditor = live.token(["security_auditor"], "auditor-330000-01", "330000")
    for params, code in (
        ({"since": "2026-01-01T00:00:00+08:00", "until": "2027-06-01T00:00:00+08:00"}, "bad_range"),
        ({"since": "2026-06-02T00:00:00+08:00", "until": "2026-06-01T00:00:00+08:00"}, "bad_range"),
        ({"until": "soon"}, "bad_until"),
    ):
        headers = {"authorization": f"Bearer {auditor}"}
        response = HTTP.get(f"{live.stack.gateway_url}/v1/audit/anomalies", params=params, headers=headers)
        assert (response.status_code, response.json()["code"]) == (400, code)
