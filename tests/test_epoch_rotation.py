"""A connector rotates its OPRF key while a request is in flight, end to end on the real stack.

The request that started under epoch 1 finishes on epoch 1 (its pinned key and indexes);
a request started after the rotation runs on epoch 2 and gets the same flags; the gateway
drops epoch 1's indexes only once nothing pins them; the connector then retires epoch 1's
key and refuses tickets for it. Rotation and retirement go through the `xiezhi` commands.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select

from audit_log import AuditRecord
from connectors.keys import KeyStore
from devkit import reference
from gateway.db import IndexDigest, Publication, make_engine
from requester.gateway_client import GatewayClient
from requester.subjects import read_subjects
from tests.stack import HTTP, LEGAL_BASIS, ORG, PURPOSE, ROSTER, Stack, channel, run_cli, session_pki, start_stack
from xiezhi import oprf
from xiezhi.crypto import batch_digest, derive_token
from xiezhi.errors import Conflict
from xiezhi.tickets import issue_ticket
from xiezhi.wire import ConnectorPlan, CreateMatchRequest, EvaluationBatch, LookupBatch, RowFlags, b64encode

MODEL = "repeated_debtor"  # the court connector's court.multiple_terminated
CAPABILITY = "court.multiple_terminated"
BATCH = 40


@pytest.fixture
def court(tmp_path: Path, generated: Path) -> Iterator[Stack]:
    """A stack with only the court connector's epoch-1 index published."""
    running = start_stack(tmp_path)
    try:
        running.publish(generated, connectors=("court",))
        yield running
    finally:
        running.stop()


@pytest.mark.integration
def test_rotation_lets_requests_in_flight_finish_on_their_epoch(court: Stack, generated: Path, tmp_path: Path) -> None:
    stack = court
    inputs = [row.subject.oprf_input() for row in read_subjects(generated / "subjects.csv")[0]]
    expected = _expected(generated)
    assert len(inputs) == len(expected) > 2 * BATCH and any(expected) and not all(expected)
    client = GatewayClient(stack.gateway_url, stack.user_token(["prosecutor"]), tls=session_pki().client("requester"))
    try:
        # A request pinned to epoch 1, half evaluated.
        first = client.create(_body(len(inputs)))
        (plan1,) = first.connectors
        assert plan1.epoch == 1
        half = len(inputs) // 2
        tokens1 = _evaluate(client, first.request_id, plan1, inputs[:half])

        # The connector rotates: a new key, its index rebuilt, published beside epoch 1's and activated.
        rotated = run_cli(*_rotate_args(stack, generated, tmp_path))
        assert rotated.returncode == 0, rotated.stderr
        assert "court: epoch 1 → 2 (published and active)" in rotated.stdout
        assert KeyStore(stack.key_dir("court")).epochs() == [1, 2]
        # Epoch 1's index the request in flight pins stays; the one no request pins goes.
        assert _publications(stack, epoch=1) == [CAPABILITY]
        activated = _entries(stack, "epoch.activated")[-1]
        assert (activated["epoch"], activated["pruned_publications"]) == (2, 1)
        published = _entries(stack, "index.publication")
        assert sorted(e["capability"] for e in published if (e["connector"], e["epoch"]) == ("court", 2)) == [
            "court.multiple_terminated",
            "court.winning_plaintiff_unpaid",
        ]

        # The request in flight finishes on epoch 1: its key, its proofs, its indexes.
        rest = _evaluate(client, first.request_id, plan1, inputs[half:])
        tokens1 = {c: tokens1[c] + rest[c] for c in tokens1}
        assert _flags(_lookup(client, first.request_id, tokens1)) == expected

        # A new request pins epoch 2 and gets exactly the same flags; every token differs.
        second = client.create(_body(len(inputs)))
        (plan2,) = second.connectors
        assert plan2.epoch == 2 and plan2.public_key != plan1.public_key
        tokens2 = _evaluate(client, second.request_id, plan2, inputs)
        assert tokens2[CAPABILITY][0] != tokens1[CAPABILITY][0]
        assert not set(tokens2[CAPABILITY]) & set(tokens1[CAPABILITY])
        assert _flags(_lookup(client, second.request_id, tokens2)) == expected
    finally:
        client.close()

    # Nothing pins epoch 1 any more: the next activation drops its publications and tokens.
    reactivated = HTTP.post(
        f"{stack.gateway_url}/v1/connectors/court/epochs/2/activate",
        headers={"authorization": f"Bearer {stack.connector_token('court')}"},
    )
    assert reactivated.status_code == 200, reactivated.text
    activated = _entries(stack, "epoch.activated")[-1]
    assert (activated["epoch"], activated["pruned_publications"]) == (2, 1)
    assert _publications(stack, epoch=1) == []
    assert _publications(stack, epoch=2) == ["court.multiple_terminated", "court.winning_plaintiff_unpaid"]
    assert _orphan_digests(stack) == 0

    # The connector retires epoch 1: its key is gone and its tickets are refused as retired.
    retired = run_cli("connector", "retire-epoch", "--key-dir", str(stack.key_dir("court")), "--epoch", "1")
    assert retired.returncode == 0, retired.stderr
    assert not (stack.key_dir("court") / "epoch-0001.key").exists()
    refused = _ticketed(stack, epoch=1)
    assert refused.status_code == 409 and refused.json()["code"] == "epoch_retired", refused.text
    assert _ticketed(stack, epoch=2).status_code == 200
    newest = run_cli("connector", "retire-epoch", "--key-dir", str(stack.key_dir("court")), "--epoch", "2")
    assert newest.returncode == 2 and "epoch_current" in newest.stderr


def test_key_store_retirement(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path)
    assert [keys.rotate(), keys.rotate(), keys.rotate()] == [1, 2, 3]
    with pytest.raises(Conflict) as newest:
        keys.retire(3)
    assert newest.value.code == "epoch_current"
    keys.key_pair(1)  # cached before another process retires it
    KeyStore(tmp_path).retire(1)
    with pytest.raises(Conflict) as retired:
        keys.key_pair(1)
    assert retired.value.code == "epoch_retired"
    assert keys.epochs() == [2, 3] and keys.retired() == [1]
    with pytest.raises(Conflict):
        keys.retire(3)
    keys.retire(2)
    assert keys.retired() == [1, 2]
    assert keys.rotate() == 4 and keys.epochs() == [3, 4]
    keys.retire(3)
    assert keys.rotate() == 5  # a retired number is never reused, whatever was retired last


# ---- helpers -------------------------------------------------------------------------------


def _body(count: int) -> CreateMatchRequest:
    return CreateMatchRequest(model=MODEL, purpose=PURPOSE, legal_basis=LEGAL_BASIS, subject_count=count)


def _evaluate(
    client: GatewayClient, request_id: str, plan: ConnectorPlan, inputs: list[bytes]
) -> dict[str, list[bytes]]:
    """Blind, relay, verify and finalize `inputs` batch by batch; the tokens per capability."""
    tokens: dict[str, list[bytes]] = {c: [] for c in plan.capabilities}
    for first in range(0, len(inputs), BATCH):
        part = inputs[first : first + BATCH]
        blinded = oprf.blind(part, oprf.Mode.VOPRF)
        elements = [b.blinded_element for b in blinded]
        answer = client.evaluate(request_id, plan.connector, EvaluationBatch(blinded_elements=elements))
        assert answer.epoch == plan.epoch
        outputs = oprf.finalize(
            part, [b.blind for b in blinded], answer.evaluated_elements, elements, answer.proof, plan.public_key,
            oprf.Mode.VOPRF,
        )  # fmt: skip
        for capability in plan.capabilities:
            tokens[capability].extend(derive_token(output, capability) for output in outputs)
    return tokens


def _lookup(client: GatewayClient, request_id: str, tokens: dict[str, list[bytes]]) -> list[RowFlags]:
    rows = len(next(iter(tokens.values())))
    for first in range(0, rows, BATCH):
        part = {c: values[first : first + BATCH] for c, values in tokens.items()}
        client.lookup(request_id, LookupBatch(first_row=first, tokens=part))
    return list(client.result(request_id).rows)


def _flags(rows: list[RowFlags]) -> list[bool]:
    return [row.flags[CAPABILITY] for row in sorted(rows, key=lambda r: r.row)]


def _expected(generated: Path) -> list[bool]:
    """The reference SQL join's answer for each valid row of the subject list, in order."""
    yes = reference.expected_flags(generated)[CAPABILITY]
    return [key in yes for _, _, key in reference.subject_rows(generated / "subjects.csv") if key is not None]


def _rotate_args(stack: Stack, generated: Path, tmp_path: Path) -> list[str]:
    token = tmp_path / "court.token"
    token.write_text(stack.connector_token("court"), encoding="utf-8")
    files = session_pki().connector("court")
    return [
        "connector", "rotate", "--config", str(ROSTER.path("court")), "--key-dir", str(stack.key_dir("court")),
        "--gateway", stack.gateway_url, "--token-file", str(token),
        "--database-url", f"sqlite:///{generated / 'agencies' / 'court.sqlite'}",
        "--tls-cert", str(files.cert), "--tls-key", str(files.key), "--tls-ca", str(files.ca),
    ]  # fmt: skip


def _entries(stack: Stack, kind: str) -> list[dict[str, Any]]:
    """The audit log's entries of `kind` (read from the gateway's store), oldest first."""
    engine = make_engine(f"sqlite:///{stack.root / 'gateway' / 'gateway.sqlite'}")
    try:
        with Session(engine) as session:
            records = session.exec(select(AuditRecord).where(AuditRecord.kind == kind).order_by(col(AuditRecord.seq)))
            entries = [json.loads(r.entry) for r in records]
    finally:
        engine.dispose()
    # The connector is a column of its own; epochs, capabilities and counts are the detail.
    return [{"connector": e["connector"], **e["detail"]} for e in entries]


def _publications(stack: Stack, *, epoch: int) -> list[str]:
    engine = make_engine(f"sqlite:///{stack.root / 'gateway' / 'gateway.sqlite'}")
    try:
        with Session(engine) as session:
            query = select(Publication).where(Publication.connector == "court", Publication.epoch == epoch)
            return sorted(p.capability for p in session.exec(query))
    finally:
        engine.dispose()


def _orphan_digests(stack: Stack) -> int:
    """Token digests whose publication is gone (a pruned epoch must take its tokens along)."""
    engine = make_engine(f"sqlite:///{stack.root / 'gateway' / 'gateway.sqlite'}")
    try:
        with Session(engine) as session:
            live = set(session.exec(select(Publication.id)))
            return sum(1 for p in session.exec(select(IndexDigest.publication_id)) if p not in live)
    finally:
        engine.dispose()


def _ticketed(stack: Stack, *, epoch: int) -> httpx.Response:
    """One element sent to the court connector with a valid gateway ticket for `epoch`."""
    elements: list[bytes] = [oprf.blind([b"retired-epoch-probe"], oprf.Mode.VOPRF)[0].blinded_element]
    kid, key = stack.gateway_ticket_key()
    ticket = issue_ticket(
        key, kid=kid, issuer="xiezhi-gateway", connector="court", request_id="r-probe", requester_org=ORG,
        epoch=epoch, count=1, digest=batch_digest(elements), now=datetime.now(UTC), ttl_seconds=60,
    )  # fmt: skip
    body = {"ticket": ticket, "blinded_elements": [b64encode(e) for e in elements]}
    return channel(session_pki().gateway()).post(f"{stack.connector_urls['court']}/v1/evaluate", json=body)
