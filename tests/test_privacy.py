"""The parties table of the design, one test per row, on a live stack and its transcripts.

Four real connectors and the gateway run over mutual TLS; a recording middleware on each
connector keeps every request body that reaches it (the connector's whole view), and a
log handler keeps every log record the processes write. Then:

- gateway: its database, files and logs hold no subject ID in any normal form, no name,
  no token and no connector key;
- connector: what arrives is blinded elements, counts and the ticket, nothing identifying,
  and the same subject asked twice arrives as unrelated points;
- requester: flags only for its own rows and only for capabilities it may see;
- auditor: entries carry who, what, why and counts, never an ID, a name or a per-person flag;
- tokens: one subject's tokens differ across capabilities, connectors and epochs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from sqlmodel import Session, select

from connectors.keys import KeyStore
from devkit.environment import REPO_ROOT
from gateway import indexes
from gateway.auth import Principal
from gateway.authz import Authorizer, load_policy_dir, permit
from gateway.db import Publication, make_engine
from gateway.keyring import LocalKeyring
from gateway.sealing import Sealer, SqlDataKeys
from gateway.vault import Vault
from requester.gateway_client import GatewayClient
from requester.job import MatchSummary, match_file
from requester.protocol import MatchSpec
from requester.subjects import read_subjects
from tests.agreement import (
    find_leaks,
    find_token_leaks,
    subject_id_forms,
    subject_names,
    subject_tokens,
    subjects_file,
)
from tests.stack import HTTP, LEGAL_BASIS, PURPOSE, Stack, start_stack
from xiezhi import oprf
from xiezhi.crypto import derive_token
from xiezhi.errors import Denied, NotFound
from xiezhi.supervision import ModelCatalog
from xiezhi.wire import b64decode

pytestmark = pytest.mark.integration  # every test runs a stack

CATALOG = ModelCatalog.load(REPO_ROOT / "policies" / "models")
TICKET_CLAIMS = {"iss", "aud", "sub", "rid", "epoch", "cnt", "dig", "jti", "iat", "exp"}


@dataclass
class Arrival:
    connector: str
    method: str
    path: str
    body: bytes


class Recording:
    """ASGI middleware keeping every request that reaches a connector, body included."""

    def __init__(self, app: Any, connector: str, sink: list[Arrival]) -> None:
        self.app, self.connector, self.sink = app, connector, sink

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def recorded() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        await self.app(scope, recorded, send)
        self.sink.append(Arrival(self.connector, scope["method"], scope["path"], b"".join(chunks)))


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.name} {record.levelname} {text}")


@dataclass
class Live:
    stack: Stack
    generated: Path
    out: Path
    arrivals: list[Arrival]
    logs: Captured
    runs: dict[str, MatchSummary] = field(default_factory=dict)

    def run(self, name: str, model: str, roles: list[str] | None = None) -> MatchSummary:
        summary = match_file(
            self.stack.gateway_url,
            self.stack.user_token(roles or ["prosecutor"]),
            MatchSpec(model, PURPOSE, LEGAL_BASIS, batch_size=97),
            subjects_file(self.generated, CATALOG.get(model)),
            self.out / f"{name}.csv",
            show_progress=False,
            workers=1,
            on_pending=self.stack.approver(),
        )
        self.runs[name] = summary
        return summary


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, generated: Path) -> Iterator[Live]:
    arrivals: list[Arrival] = []
    logs = Captured()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(logs)
    root.setLevel(logging.DEBUG)

    def record(name: str, app: FastAPI) -> None:
        app.add_middleware(Recording, connector=name, sink=arrivals)

    stack = start_stack(tmp_path_factory.mktemp("privacy"), prepare_connector=record)
    try:
        stack.publish(generated)
        live = Live(stack, generated, tmp_path_factory.mktemp("reports"), arrivals, logs)
        live.run("sweep-1", "asset_sweep")
        live.run("sweep-2", "asset_sweep")
        live.run("spouse", "spouse_property")
        yield live
    finally:
        stack.stop()
        root.removeHandler(logs)
        root.setLevel(previous)


def _evaluations(live: Live) -> list[Arrival]:
    return [a for a in live.arrivals if a.path == "/v1/evaluate"]


def test_gateway_row_database_files_and_logs_hold_no_id_name_token_or_key(live: Live, tmp_path: Path) -> None:
    gateway_dir = live.stack.root / "gateway"
    (tmp_path / "logs.txt").write_text("\n".join(live.logs.lines), encoding="utf-8")
    assert len(live.logs.lines) > 10, "the processes logged while the runs went through"
    ids, names = subject_id_forms(live.generated), subject_names(live.generated)
    tokens = subject_tokens(live.generated, live.stack.oprf_keys(), {c for m in CATALOG for c in m.looks_up})
    keys = set(live.stack.oprf_keys().values())
    for folder in (gateway_dir, tmp_path):
        assert find_leaks(folder, ids) == []
        assert find_leaks(folder, names) == []
        assert find_token_leaks(folder, tokens) == []
        assert find_token_leaks(folder, keys) == []
    # What the gateway does hold: the keyring lives beside it, not in its database folder.
    assert not list(gateway_dir.rglob("keyring*"))


def test_connector_row_sees_only_blinded_elements_counts_and_the_ticket(live: Live, tmp_path: Path) -> None:
    evaluations = _evaluations(live)
    assert {a.connector for a in evaluations} == set(live.stack.connector_urls)
    assert {a.path for a in live.arrivals} <= {"/v1/evaluate", "/witness/add-checkpoint", "/healthz"}
    per_request: dict[tuple[str, str], list[bytes]] = {}
    for arrival in evaluations:
        body = json.loads(arrival.body)
        assert set(body) == {"ticket", "blinded_elements"}
        elements = [b64decode(e) for e in body["blinded_elements"]]
        assert all(len(e) == 32 for e in elements)
        claims = jwt.decode(body["ticket"], options={"verify_signature": False})
        assert set(claims) == TICKET_CLAIMS and claims["cnt"] == len(elements)
        assert claims["aud"] == f"connector:{arrival.connector}"
        per_request.setdefault((claims["rid"], arrival.connector), []).extend(elements)
    (tmp_path / "connector-view.bin").write_bytes(b"\n".join(a.body for a in live.arrivals))
    assert find_leaks(tmp_path, subject_id_forms(live.generated)) == []
    assert find_leaks(tmp_path, subject_names(live.generated)) == []
    # The same list asked twice reaches the court as two unrelated sets of points.
    first, second = (live.runs[n].request_id for n in ("sweep-1", "sweep-2"))
    one, two = per_request[(str(first), "court")], per_request[(str(second), "court")]
    assert len(one) == len(two) == live.runs["sweep-1"].rows
    assert set(one).isdisjoint(two)


def test_requester_row_gets_flags_only_for_its_own_rows_and_granted_capabilities(live: Live) -> None:
    summary = live.runs["sweep-1"]
    owner = GatewayClient(live.stack.gateway_url, live.stack.user_token(["prosecutor"]))
    result = owner.result(str(summary.request_id))
    model = CATALOG.get("asset_sweep")
    assert [r.row for r in result.rows] == list(range(summary.rows))  # its own rows, by position only
    assert all(tuple(r.flags) == model.reveals for r in result.rows)
    # Another prosecutor of the same organisation cannot tell the request exists.
    other = GatewayClient(live.stack.gateway_url, live.stack.user_token(["prosecutor"], subject="prosecutor-330803-02"))
    with pytest.raises(NotFound):
        other.result(str(summary.request_id))
    # An assistant may not see marriage records: the model over them is refused outright.
    with pytest.raises(Denied):
        live.run("spouse-assistant", "spouse_property", roles=["assistant"])


def test_auditor_row_entries_carry_no_id_name_token_or_per_person_flag(live: Live, tmp_path: Path) -> None:
    auditor = live.stack.user_token(["security_auditor"], subject="audit-330000-01", org="330000")
    entries = HTTP.get(
        f"{live.stack.gateway_url}/v1/audit/entries",
        params={"limit": 1000},
        headers={"authorization": f"Bearer {auditor}"},
    ).json()["entries"]
    assert {"request.created", "relay", "lookup", "result.read"} <= {e["kind"] for e in entries}
    (tmp_path / "entries.json").write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    assert find_leaks(tmp_path, subject_id_forms(live.generated)) == []
    assert find_leaks(tmp_path, subject_names(live.generated)) == []
    tokens = subject_tokens(live.generated, live.stack.oprf_keys(), {c for m in CATALOG for c in m.looks_up})
    assert find_token_leaks(tmp_path, tokens) == []
    for entry in (e for e in entries if e["kind"] == "lookup"):
        detail = entry["detail"]
        assert set(detail) <= {"rows", "first_row", "clues"} | {k for k in detail if k.startswith("matches.")}
        assert all(isinstance(v, int) for v in detail.values())  # counts, not flags per person


def test_tokens_separate_capabilities_connectors_and_epochs(live: Live, tmp_path: Path) -> None:
    subjects, _ = read_subjects(subjects_file(live.generated, CATALOG.get("asset_sweep")))
    inputs = [row.subject.oprf_input() for row in subjects][:50]
    keys = live.stack.oprf_keys()
    court = oprf.evaluate_batch(keys["court"], inputs, oprf.Mode.VOPRF)
    tax = oprf.evaluate_batch(keys["tax"], inputs, oprf.Mode.VOPRF)
    store = KeyStore(tmp_path / "court-keys")
    store.rotate(), store.rotate()
    epochs = [oprf.evaluate_batch(store.key_pair(e).sk, inputs, oprf.Mode.VOPRF) for e in (1, 2)]
    by_capability = [
        {derive_token(o, c) for o in court} for c in ("court.winning_plaintiff_unpaid", "court.multiple_terminated")
    ]
    across_connectors = [{derive_token(o, "court.multiple_terminated") for o in outputs} for outputs in (court, tax)]
    across_epochs = [{derive_token(o, "court.multiple_terminated") for o in outputs} for outputs in epochs]
    for one, two in (by_capability, across_connectors, across_epochs):
        assert len(one) == len(two) == len(inputs) and one.isdisjoint(two)
    # On the live index: every subject in court.multiple_terminated's index is found by its own
    # token there, and by its token for the other capability nowhere in that index.
    engine = make_engine(f"sqlite:///{live.stack.root / 'gateway' / 'gateway.sqlite'}")
    keyring = LocalKeyring(live.stack.dev.root / "keys" / "keyring.json")
    vault = Vault(Sealer(keyring, SqlDataKeys(engine), lambda: datetime.now(UTC)))
    outputs = oprf.evaluate_batch(keys["court"], [row.subject.oprf_input() for row in subjects], oprf.Mode.VOPRF)
    own = [derive_token(o, "court.multiple_terminated") for o in outputs]
    other = [derive_token(o, "court.winning_plaintiff_unpaid") for o in outputs]
    prosecutor = Principal("prosecutor-330803-01", "330803", frozenset({"prosecutor"}), clearance=3)
    authorizer = Authorizer(load_policy_dir(REPO_ROOT / "policies"))
    allowed = permit(prosecutor, "r-1", "run", authorizer.decide(prosecutor, "model:asset_sweep", "run"))
    with Session(engine) as session:
        publication = session.exec(
            select(Publication).where(Publication.capability == "court.multiple_terminated", Publication.committed)
        ).one()
        assert len(indexes.present(session, vault, allowed, publication.id, 1, own)) > 0
        assert indexes.present(session, vault, allowed, publication.id, 1, other) == set()
    engine.dispose()
