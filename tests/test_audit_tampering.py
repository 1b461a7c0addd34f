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
from audit_log.entries import AuditEvent, canonical_entry
from audit_log.merkle import CompactRange, leaf_hash
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
    stack = start_stack(root, audit={"checkpoint_every_entries": 32, "publish_dir": str(root / "published")})
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
        # The gateway stops (signing a last checkpoint the witnesses cosign); an auditor then
        # keeps what each witness cosigned, read from the witnesses themselves.
        stack.servers[-1].stop()
        kept = run_cli(
            "audit", "witness-checkpoints", "--settings", str(stack.dev.gateway_config),
            "--out", str(root / "witnesses.jsonl"), env=client_env("auditor"),
        )  # fmt: skip
        assert kept.returncode == 0, kept.stdout + kept.stderr
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


def tampered_copy(finished: dict[str, Any], tmp_path: Path, tamper: Callable[[sqlite3.Connection], object]) -> Path:
    """A copy of the gateway's database, its triggers dropped as an attacker with file access
    would, changed by `tamper`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    copy = tmp_path / "copy.sqlite"
    shutil.copy(finished["database"], copy)
    with sqlite3.connect(copy) as db:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f"DROP TRIGGER {name}")
        tamper(db)
    return copy


def verify_copy(
    finished: dict[str, Any], tmp_path: Path, tamper: Callable[[sqlite3.Connection], object], *held: Path
) -> str:
    """Verify a tampered copy (holding it to `held` checkpoint files); it must fail."""
    copy = tampered_copy(finished, tmp_path, tamper)
    options = [arg for path in held for arg in ("--checkpoints", str(path))]
    result = run_cli("audit", "verify", str(copy), "--settings", str(finished["settings"]), *options)
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


# ---- what a database administrator can do that the log alone cannot show -----------------------
# Each case below leaves a log consistent with itself. What catches it is held outside the
# database: each witness's newest cosigned checkpoint (read from the witnesses by
# `xiezhi audit witness-checkpoints`), the checkpoints the gateway published to its folder, and
# the witnesses' quorum.


def checkpoint_sizes(db: sqlite3.Connection) -> list[int]:
    return [row[0] for row in db.execute("SELECT size FROM audit_checkpoints ORDER BY size")]


def roll_back(db: sqlite3.Connection, to: int) -> None:
    """Cut the log back to `to` entries as a restore from an old backup would leave it: later
    entries, checkpoints, cosignatures and nodes gone, the tail rewound."""
    db.execute("DELETE FROM audit_entries WHERE seq >= ?", (to,))
    db.execute("DELETE FROM audit_cosignatures WHERE size > ?", (to,))
    db.execute("DELETE FROM audit_checkpoints WHERE size > ?", (to,))
    db.execute("DELETE FROM audit_nodes WHERE (idx + 1) << level > ?", (to,))
    rechain(db, to)


def rechain(db: sqlite3.Connection, start: int, entries: list[dict[str, Any]] | None = None) -> None:
    """Write `entries` (payloads) from position `start` on, each placed and chained after the
    one before, with leaf hashes and the tail recomputed: a rewrite no chain check can see."""
    leaves = [
        bytes(row[0]) for row in db.execute("SELECT leaf_hash FROM audit_entries WHERE seq < ? ORDER BY seq", (start,))
    ]
    db.execute("DELETE FROM audit_entries WHERE seq >= ?", (start,))
    db.execute("DELETE FROM audit_nodes")
    columns = "seq, recorded_at, kind, actor, org, request_id, model, connector, outcome, purpose, entry, leaf_hash"
    for offset, payload in enumerate(entries or []):
        seq = start + offset
        entry = canonical_entry(payload, seq, leaves[-1] if leaves else bytes(32))
        leaves.append(leaf_hash(entry))
        fields = ("kind", "actor", "org", "request_id", "model", "connector", "outcome", "purpose")
        row = (seq, payload["at"], *(payload.get(name) for name in fields), entry, leaves[-1])
        db.execute(f"INSERT INTO audit_entries ({columns}) VALUES ({', '.join('?' * 12)})", row)
    tree = CompactRange()
    tree.extend(leaves)
    db.execute(
        "UPDATE audit_tail SET size = ?, frontier = ?, last_leaf = ?",
        (len(leaves), tree.to_bytes(), leaves[-1] if leaves else bytes(32)),
    )


def payloads(db: sqlite3.Connection, start: int) -> list[dict[str, Any]]:
    rows = db.execute("SELECT entry FROM audit_entries WHERE seq >= ? ORDER BY seq", (start,)).fetchall()
    payloads = [json.loads(row[0]) for row in rows]
    for payload in payloads:
        del payload["seq"], payload["prev"]
    return payloads


def test_the_untouched_log_verifies_against_the_witnesses_and_the_published_checkpoints(
    finished: dict[str, Any],
) -> None:
    root = finished["root"]
    held = [line for line in (root / "witnesses.jsonl").read_text().splitlines() if line]
    assert len(held) == 4  # one newest cosigned checkpoint per witness
    result = run_cli(
        "audit", "verify", str(finished["database"]), "--settings", str(finished["settings"]),
        "--checkpoints", str(root / "witnesses.jsonl"), "--checkpoints", str(root / "published" / "checkpoints.jsonl"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # The published `checkpoint` file is the newest checkpoint, with the witnesses' cosignatures.
    newest = (root / "published" / "checkpoint").read_text()
    with sqlite3.connect(finished["database"]) as db:
        assert newest.split("\n")[1] == str(max(checkpoint_sizes(db)))
    assert newest.count("\u2014 xiezhi.dev/witness/") == 4


def test_a_rollback_to_an_earlier_checkpoint_is_caught_by_the_witnesses(
    finished: dict[str, Any], tmp_path: Path
) -> None:
    root, cut = finished["root"], []

    def restore_old_backup(db: sqlite3.Connection) -> None:
        cut.append(checkpoint_sizes(db)[-3])
        roll_back(db, cut[0])

    out = verify_copy(finished, tmp_path, restore_old_backup, root / "witnesses.jsonl")
    assert f"first bad entry at position {cut[0]}" in out and "[log_rolled_back]" in out and "witness" in out
    # The gateway's published checkpoints, as an auditor copied them, catch it as well.
    out = verify_copy(finished, tmp_path / "published", restore_old_backup, root / "published" / "checkpoints.jsonl")
    assert f"first bad entry at position {cut[0]}" in out and "[log_rolled_back]" in out
    # So they do on an export of the rolled-back database.
    export = tmp_path / "export"
    made = run_cli("audit", "export", "--database", str(tmp_path / "copy.sqlite"), "--out", str(export))
    assert made.returncode == 0, made.stderr
    checked = run_cli(
        "audit",
        "verify",
        str(export),
        "--log-key",
        str(finished["vkey"]),
        "--checkpoints",
        str(root / "witnesses.jsonl"),
    )
    assert checked.returncode == 1 and "[log_rolled_back]" in checked.stdout, checked.stdout + checked.stderr


def test_deleted_checkpoints_and_rewritten_entries_are_caught(finished: dict[str, Any], tmp_path: Path) -> None:
    root = finished["root"]

    def rewrite(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM audit_cosignatures")
        db.execute("DELETE FROM audit_checkpoints")
        rest = payloads(db, 40)
        rest[0]["outcome"] = "deny" if rest[0]["outcome"] != "deny" else "allow"
        rechain(db, 40, rest)

    out = verify_copy(finished, tmp_path, rewrite, root / "witnesses.jsonl")
    assert "TAMPERED" in out and "checkpoint_missing" in out
    # The published checkpoints bound the rewrite between two of them, not at entry 0.
    with sqlite3.connect(finished["database"]) as db:
        before = max(size for size in checkpoint_sizes(db) if size <= 40)
    out = verify_copy(finished, tmp_path / "published", rewrite, root / "published" / "checkpoints.jsonl")
    assert f"first bad entry at position {before}" in out and "[checkpoint_mismatch]" in out


def test_stripped_cosignatures_are_caught(finished: dict[str, Any], tmp_path: Path) -> None:
    strip = lambda db: db.execute("DELETE FROM audit_cosignatures")  # noqa: E731
    # The log alone: checkpoints no quorum of its witnesses cosigned.
    assert "[unwitnessed_checkpoints]" in verify_copy(finished, tmp_path, strip)
    # Held against what the witnesses hold: named per witness.
    out = verify_copy(finished, tmp_path / "held", strip, finished["root"] / "witnesses.jsonl")
    assert out.count("[cosignature_missing]") == 4  # one per witness


def test_deleted_checkpoints_are_caught(finished: dict[str, Any], tmp_path: Path) -> None:
    out = verify_copy(
        finished, tmp_path, lambda db: db.execute("DELETE FROM audit_checkpoints"), finished["root"] / "witnesses.jsonl"
    )
    assert "[checkpoint_missing]" in out


def test_a_rechained_insertion_is_named_where_the_checkpoints_bound_it(
    finished: dict[str, Any], tmp_path: Path
) -> None:
    bounds: list[int] = []

    def insert(db: sqlite3.Connection) -> None:
        rest = payloads(db, 50)
        forged = dict(rest[0], outcome="allow", action="read")
        rechain(db, 50, [forged, *rest])
        bounds.append(max(size for size in checkpoint_sizes(db) if size <= 50))

    out = verify_copy(finished, tmp_path, insert)
    assert f"first bad entry at position {bounds[0]}" in out and "inserted, removed or changed" in out
    assert bounds[0] > 0

    def delete(db: sqlite3.Connection) -> None:
        rechain(db, 50, payloads(db, 51))

    out = verify_copy(finished, tmp_path / "deleted", delete)
    assert f"first bad entry at position {bounds[0]}" in out


def test_an_insert_or_replace_on_the_gateways_database_is_refused(finished: dict[str, Any], tmp_path: Path) -> None:
    copy = tmp_path / "copy.sqlite"
    shutil.copy(finished["database"], copy)
    with sqlite3.connect(copy) as db:
        before = db.execute("SELECT entry FROM audit_entries WHERE seq = 5").fetchone()[0]
        for statement in (
            "INSERT OR REPLACE INTO audit_entries SELECT seq, recorded_at, kind, actor, org, request_id, model, "
            "connector, 'allow', purpose, entry, leaf_hash FROM audit_entries WHERE seq = 5",
            "REPLACE INTO audit_checkpoints SELECT size, root, '', issued_at FROM audit_checkpoints LIMIT 1",
        ):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(statement)
        assert db.execute("SELECT entry FROM audit_entries WHERE seq = 5").fetchone()[0] == before
    result = run_cli("audit", "verify", str(copy), "--settings", str(finished["settings"]))
    assert result.returncode == 0, result.stdout
