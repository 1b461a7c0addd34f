"""Tampering with a copy of a real gateway's database is caught by `xiezhi audit verify`,
which names the position, every time; and the log's own API and CLI give proofs that check.

A real stack runs a supervision model end to end (with an approval), then stops, so the
gateway signs a last checkpoint. Each case copies its database, drops the append-only
triggers as an attacker with file access would, changes the log, and runs the real CLI.
"""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DatabaseError

from audit_log import AuditLog, CheckpointSigner
from audit_log.entries import AuditEvent
from audit_log.merkle import leaf_hash
from audit_log.note import generate_signer
from audit_log.store import append_events
from devkit.environment import REPO_ROOT
from requester.job import match_file
from requester.protocol import MatchSpec
from tests.agreement import subjects_file
from tests.stack import HTTP, LEGAL_BASIS, PURPOSE, client_env, start_stack
from xiezhi.supervision import ModelCatalog

pytestmark = pytest.mark.integration  # every test runs a stack or the CLI

MODEL = ModelCatalog.load(REPO_ROOT / "policies" / "models").get("asset_sweep")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, generated: Path) -> dict[str, Any]:
    """A stack that ran one model and was stopped; its settings, database and an API export."""
    root = tmp_path_factory.mktemp("tamper")
    stack = start_stack(root, audit={"checkpoint_every_entries": 32})
    try:
        stack.publish(generated)
        token = stack.user_token(["prosecutor"])
        match_file(
            stack.gateway_url,
            token,
            MatchSpec(MODEL.id, PURPOSE, LEGAL_BASIS, batch_size=50),
            subjects_file(generated, MODEL),
            root / "report.csv",
            show_progress=False,
            workers=1,
            on_pending=stack.approver(),
        )
        auditor = root / "auditor.token"
        auditor.write_text(stack.user_token(["security_auditor"], subject="auditor-330803", org="330803"))
        export = run_cli(
            "audit",
            "export",
            "--gateway",
            stack.gateway_url,
            "--token-file",
            str(auditor),
            "--out",
            str(root / "export"),
            env=client_env("auditor"),
        )
        assert export.returncode == 0, export.stderr
        proof = run_cli(
            "audit", "proof", "inclusion", "--gateway", stack.gateway_url, "--token-file", str(auditor),
            "--seq", "3", "--log-key", stack.dev.audit_vkey, env=client_env("auditor"),
        )  # fmt: skip
        sizes = [
            c["size"]
            for c in HTTP.get(
                f"{stack.gateway_url}/v1/audit/checkpoints", headers={"authorization": f"Bearer {auditor.read_text()}"}
            ).json()
        ]
        assert len(sizes) >= 2, sizes
        consistency = run_cli(
            "audit", "proof", "consistency", "--gateway", stack.gateway_url, "--token-file", str(auditor),
            "--first", str(sizes[0]), "--second", str(sizes[-1]), "--log-key", stack.dev.audit_vkey,
            env=client_env("auditor"),
        )  # fmt: skip
    finally:
        stack.stop()
    return {
        "settings": stack.dev.gateway_config,
        "database": root / "gateway" / "gateway.sqlite",
        "export": root / "export",
        "root": root,
        "vkey": stack.dev.audit_vkey,
        "inclusion": proof,
        "consistency": consistency,
    }


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=120, env=env)


def verify_copy(finished: dict[str, Any], tmp_path: Path, tamper: Callable[[sqlite3.Connection], object]) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    copy = tmp_path / "copy.sqlite"
    shutil.copy(finished["database"], copy)
    with sqlite3.connect(copy) as db:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f"DROP TRIGGER {name}")
        tamper(db)
    result = run_cli("audit", "verify", str(copy), "--settings", str(finished["settings"]))
    assert result.returncode == 1, result.stdout + result.stderr
    return result.stdout


def size(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COUNT(*) FROM audit_entries").fetchone()[0])


def test_the_untouched_log_verifies_live_and_exported(finished: dict[str, Any]) -> None:
    live = run_cli("audit", "verify", str(finished["database"]), "--settings", str(finished["settings"]), "--json")
    assert live.returncode == 0, live.stdout + live.stderr
    report = json.loads(live.stdout)
    assert report["ok"] and report["entries"] > 60 and report["latest_checkpoint"] == report["entries"]
    # Every connector witnessed the checkpoints (the last one at shutdown may race), and the
    # verifier checked each cosignature.
    witnesses = {f"xiezhi.dev/witness/{c}" for c in ("court", "tax", "housing_fund", "civil_affairs")}
    assert set(report["cosigned"]) == witnesses
    assert all(count >= report["checkpoints"] - 1 >= 1 for count in report["cosigned"].values())
    exported = run_cli("audit", "verify", str(finished["export"]), "--log-key", str(finished["vkey"]), "--json")
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert json.loads(exported.stdout)["entries"] >= report["checkpoints"]


def test_proofs_from_the_api_check_out_in_the_cli(finished: dict[str, Any]) -> None:
    inclusion, consistency = finished["inclusion"], finished["consistency"]
    assert inclusion.returncode == 0 and "entry 3 is included" in inclusion.stdout, inclusion.stderr
    assert consistency.returncode == 0 and "extends the one of size" in consistency.stdout, consistency.stderr


def test_the_gateways_log_tables_refuse_update_and_delete(finished: dict[str, Any], tmp_path: Path) -> None:
    copy = tmp_path / "copy.sqlite"
    shutil.copy(finished["database"], copy)
    engine = create_engine(f"sqlite:///{copy}")
    for table in ("audit_entries", "audit_checkpoints", "audit_cosignatures"):
        for statement in (f"DELETE FROM {table}", f"UPDATE {table} SET rowid = rowid"):
            with engine.begin() as connection, pytest.raises(DatabaseError, match="append-only"):
                connection.execute(text(statement))
    engine.dispose()


@pytest.mark.parametrize("position", [0, 57, -1])
def test_one_changed_byte_is_named(finished: dict[str, Any], tmp_path: Path, position: int) -> None:
    changed: list[int] = []

    def tamper(db: sqlite3.Connection) -> None:
        seq = position % size(db)
        entry = bytearray(db.execute("SELECT entry FROM audit_entries WHERE seq = ?", (seq,)).fetchone()[0])
        entry[entry.index(b'"outcome":"') + 11] ^= 0x01  # one byte of the outcome
        db.execute("UPDATE audit_entries SET entry = ? WHERE seq = ?", (bytes(entry), seq))
        changed.append(seq)

    out = verify_copy(finished, tmp_path, tamper)
    assert f"first bad entry at position {changed[0]}" in out


def test_an_entry_rewritten_as_text_by_sql_is_named(finished: dict[str, Any], tmp_path: Path) -> None:
    # SQLite's replace() turns the blob into text: the verifier must report it, not crash.
    out = verify_copy(
        finished,
        tmp_path,
        lambda db: db.execute("UPDATE audit_entries SET entry = replace(entry, 'o', '0') WHERE seq = 12"),
    )
    assert "first bad entry at position 12" in out


def test_a_changed_entry_is_named_even_with_its_leaf_hash_recomputed(finished: dict[str, Any], tmp_path: Path) -> None:
    def tamper(db: sqlite3.Connection) -> None:
        entry = db.execute("SELECT entry FROM audit_entries WHERE seq = 40").fetchone()[0]
        changed = entry.replace(b'"outcome":"allow"', b'"outcome":"deny!"').replace(
            b'"outcome":"ok"', b'"outcome":"no"'
        )
        assert changed != entry
        db.execute("UPDATE audit_entries SET entry = ?, leaf_hash = ? WHERE seq = 40", (changed, leaf_hash(changed)))

    assert "first bad entry at position 40" in verify_copy(finished, tmp_path, tamper)


def test_a_deleted_entry_is_named(finished: dict[str, Any], tmp_path: Path) -> None:
    out = verify_copy(finished, tmp_path, lambda db: db.execute("DELETE FROM audit_entries WHERE seq = 33"))
    assert "first bad entry at position 33" in out and "missing" in out


def test_two_reordered_entries_are_named(finished: dict[str, Any], tmp_path: Path) -> None:
    def swap_contents(db: sqlite3.Connection) -> None:
        a, b = (
            db.execute("SELECT entry, leaf_hash FROM audit_entries WHERE seq = ?", (s,)).fetchone() for s in (20, 25)
        )
        db.execute("UPDATE audit_entries SET entry = ?, leaf_hash = ? WHERE seq = 20", b)
        db.execute("UPDATE audit_entries SET entry = ?, leaf_hash = ? WHERE seq = 25", a)

    assert "first bad entry at position 20" in verify_copy(finished, tmp_path, swap_contents)

    def swap_numbers(db: sqlite3.Connection) -> None:
        db.execute("UPDATE audit_entries SET seq = -1 WHERE seq = 71")
        db.execute("UPDATE audit_entries SET seq = 71 WHERE seq = 72")
        db.execute("UPDATE audit_entries SET seq = 72 WHERE seq = -1")

    assert "first bad entry at position 71" in verify_copy(finished, tmp_path / "b", swap_numbers)


def test_a_truncated_tail_is_named(finished: dict[str, Any], tmp_path: Path) -> None:
    cut: list[int] = []

    def truncate(db: sqlite3.Connection) -> None:
        cut.append(size(db) - 5)
        db.execute("DELETE FROM audit_entries WHERE seq >= ?", (cut[0],))

    out = verify_copy(finished, tmp_path, truncate)
    assert f"first bad entry at position {cut[0]}" in out and "truncated" in out


def test_a_whole_log_recomputed_and_signed_by_another_key_is_caught(finished: dict[str, Any], tmp_path: Path) -> None:
    def rewrite(db: sqlite3.Connection) -> None:
        rows = db.execute("SELECT entry FROM audit_entries ORDER BY seq").fetchall()
        for table in ("audit_entries", "audit_nodes", "audit_cosignatures", "audit_checkpoints"):
            db.execute(f"DELETE FROM {table}")
        db.execute("UPDATE audit_tail SET size = 0, frontier = X'', last_leaf = ?", (bytes(32),))
        db.commit()
        events = []
        for (entry,) in rows:
            fields = json.loads(entry)
            fields.pop("seq"), fields.pop("prev")
            if fields["outcome"] == "deny":
                fields["outcome"] = "allow"  # the reason to rewrite a log
            events.append(AuditEvent.model_validate(fields))
        engine = create_engine(f"sqlite:///{tmp_path / 'copy.sqlite'}")
        log = AuditLog.existing(engine)
        with engine.begin() as connection:
            append_events(connection, events)
        forger = generate_signer("xiezhi.dev/audit")  # same origin, another key
        CheckpointSigner(log, forger, lambda: datetime.now(UTC)).issue()
        engine.dispose()

    out = verify_copy(finished, tmp_path, rewrite)
    assert "first bad entry at position 0" in out and "does not carry the log's signature" in out


def test_export_redacts_other_organisations_and_still_verifies(finished: dict[str, Any]) -> None:
    lines = (Path(finished["export"]) / "entries.jsonl").read_bytes().splitlines()
    redacted = [line for line in lines if line.startswith(b'{"leaf_hash":')]
    visible = [json.loads(line) for line in lines if not line.startswith(b'{"leaf_hash":')]
    assert all(e["org"] in (None, "330803") for e in visible)
    assert len(visible) > 50
    for line in redacted:
        assert len(base64.b64decode(json.loads(line)["leaf_hash"])) == 32
