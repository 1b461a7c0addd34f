"""The connector's index build, incremental and resumable, against a real gateway.

The court's agency database is changed in about 1% of its rows (rows deleted, a 'performed'
flag flipped, new cases for other people, an existing person's ID in another spelling); the
next build evaluates only the subjects whose rows changed and publishes deltas; the reports
then equal the plain SQL join of the changed tables, and the build's tokens equal a clean
build's, byte for byte. A build stopped at each step, or after the gateway applied a delta
but before the connector recorded it, and run again, ends with the same tokens.
"""

from __future__ import annotations

import functools
import itertools
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.build_state import BuildState, state_key
from connectors.config import ConnectorConfig
from connectors.incremental import BuildReport, Hook, IndexPublisher, build_and_publish_incremental, state_path
from connectors.indexer import build
from connectors.keys import KeyStore
from connectors.publisher import Publisher
from connectors.roster import Roster
from devkit.environment import REPO_ROOT, ROSTER_DIR
from requester.job import match_file
from requester.protocol import MatchSpec
from tests.agreement import assert_report_agrees, find_leaks, subject_id_forms, subjects_file
from tests.polling import wait_until
from tests.stack import LEGAL_BASIS, PURPOSE, Stack, client_for, session_pki, start_stack
from xiezhi.supervision import ModelCatalog

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("incremental_build")]  # one worker: rounds in order

CATALOG = ModelCatalog.load(REPO_ROOT / "policies" / "models")
COURT_MODELS = ("litigated_claims", "repeated_debtor")


class Stopped(Exception):
    """Raised by a test's hook to stop a build where a crash would."""


class Court:
    def __init__(self, stack: Stack, data: Path, out: Path) -> None:
        self.stack, self.data, self.out = stack, data, out
        self.database = data / "agencies" / "court.sqlite"
        self.config = ConnectorConfig.from_file(Roster.load(ROSTER_DIR).path("court"), database_url=self.url)
        self.keys = KeyStore(stack.key_dir("court"))

    @property
    def url(self) -> str:
        return f"sqlite:///{self.database}"

    def publisher(self) -> Publisher:
        return Publisher(
            self.stack.gateway_url, self.stack.connector_token("court"), tls=session_pki().connector("court")
        )

    def build(
        self, state_dir: Path, publisher: IndexPublisher | None = None, hook: Hook = lambda _step: None
    ) -> BuildReport:
        epoch = self.keys.current()
        return build_and_publish_incremental(
            self.config,
            self.keys.key_pair(epoch),
            epoch,
            state_dir,
            publisher or self.publisher(),
            workers=1,
            hook=hook,
        )

    def state_tokens(self, state_dir: Path) -> dict[str, list[bytes]]:
        epoch = self.keys.current()
        state = BuildState(state_path(state_dir, "court", epoch), state_key(self.keys.key_pair(epoch).sk))
        try:
            return {c.id: state.tokens(c.id) for c in self.config.capabilities}
        finally:
            state.close()

    def clean_tokens(self) -> dict[str, list[bytes]]:
        """What the whole build in memory makes of the agency database as it is now."""
        epoch = self.keys.current()
        built = build(self.config, self.keys.key_pair(epoch), epoch, workers=1)
        return {index.capability.id: list(index.tokens) for index in built.capabilities}

    def reports_agree(self, name: str) -> None:
        for model_id in COURT_MODELS:
            model = CATALOG.get(model_id)
            summary = match_file(
                self.stack.gateway_url,
                self.stack.user_token(["prosecutor"]),
                MatchSpec(model.id, PURPOSE, LEGAL_BASIS, batch_size=97),
                subjects_file(self.data, model),
                self.out / f"{name}-{model.id}.csv",
                show_progress=False,
                workers=1,
                on_pending=self.stack.approver(),
                tls=session_pki().client(client_for(["prosecutor"])),
            )
            assert_report_agrees(self.data, model, summary.report, request_id=summary.request_id)


ROUNDS = itertools.count()


def change_one_percent(database: Path) -> int:
    """Delete, flip and add about 1% of the court's rows, some in other ID spellings, other
    rows each time it is called; returns how many rows changed."""
    round_ = next(ROUNDS)
    with sqlite3.connect(database) as db:
        civil = db.execute("SELECT rowid, plaintiff_id FROM civil_cases ORDER BY rowid").fetchall()
        cases = db.execute("SELECT rowid, debtor_id FROM enforcement_cases ORDER BY rowid").fetchall()
        step = 100
        deleted = [r for r, _ in civil[::step]]
        db.executemany("DELETE FROM civil_cases WHERE rowid = ?", [(r,) for r in deleted])
        flipped = [r for r, _ in civil[50::step]]
        db.executemany(
            "UPDATE civil_cases SET performed = CASE WHEN performed IN (1, '1') THEN 0 ELSE 1 END WHERE rowid = ?",
            [(r,) for r in flipped],
        )
        # New unperformed judgments for debtors, their IDs with a lowercase x or full-width digits.
        newcomers = [debtor for _, debtor in cases[25 + 7 * round_ :: step // 2] if isinstance(debtor, str)]
        spelled = [_respell(debtor, i) for i, debtor in enumerate(newcomers)]
        db.executemany(
            "INSERT INTO civil_cases (case_no, plaintiff_id, plaintiff_name, defendant_id, outcome, judgment_amount,"
            " performed, closed_on) VALUES (?, ?, '新原告', NULL, '判决', 5000, 0, '2025-06-30')",
            [(f"（2025）浙0803民初{9000 + 100 * round_ + i}号", spelling) for i, spelling in enumerate(spelled)],
        )
        # A second 终本 case for some debtors.
        again = [debtor for _, debtor in cases[75 + 7 * round_ :: step] if isinstance(debtor, str)]
        db.executemany(
            "INSERT INTO enforcement_cases (case_no, debtor_id, debtor_name, applicant_id, applicant_name, amount_owed,"
            " status, terminated_on) VALUES (?, ?, '被执行人', NULL, '申请人', 1000, '终本', '2025-07-01')",
            [(f"（2025）浙0803执{7000 + 100 * round_ + i}号", debtor) for i, debtor in enumerate(again)],
        )
        return len(deleted) + len(flipped) + len(spelled) + len(again)


def _respell(value: str, i: int) -> str:
    if i % 2:
        return value.lower()
    return "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in value)  # full-width digits


@pytest.fixture(scope="module")
def court(generated: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Court]:
    data = tmp_path_factory.mktemp("court-data")
    shutil.copytree(generated, data, dirs_exist_ok=True)
    stack = start_stack(tmp_path_factory.mktemp("court-stack"))
    try:
        stack.publish(data)
        yield Court(stack, data, tmp_path_factory.mktemp("court-reports"))
    finally:
        stack.stop()


def test_one_percent_changed_publishes_deltas_equal_to_a_clean_build(court: Court, tmp_path: Path) -> None:
    state_dir = tmp_path / "build"
    first = court.build(state_dir)
    assert all(c.full for c in first.capabilities)
    subjects = first.subjects
    unchanged = court.build(state_dir)  # nothing changed: nothing evaluated, empty deltas
    assert unchanged.subjects == 0 and all((c.added, c.removed) == (0, 0) for c in unchanged.capabilities)

    changed = change_one_percent(court.database)
    again = court.build(state_dir)
    assert not any(c.full for c in again.capabilities)
    assert 0 < again.subjects <= changed < subjects  # at most one subject evaluated per changed row
    assert sum(c.added + c.removed for c in again.capabilities) > 0
    assert court.state_tokens(state_dir) == court.clean_tokens()
    court.reports_agree("after-delta")


@pytest.mark.parametrize("stop_at", ["scanned:court.multiple_terminated", "diffed:court.winning_plaintiff_unpaid",
                                     "evaluated-chunk", "published:court.winning_plaintiff_unpaid"])  # fmt: skip
def test_a_build_stopped_at_a_step_resumes_to_the_same_tokens(court: Court, tmp_path: Path, stop_at: str) -> None:
    state_dir = tmp_path / "build"
    court.build(state_dir)
    change_one_percent(court.database)

    def stop(step: str) -> None:
        if step == stop_at:
            raise Stopped(step)

    with pytest.raises(Stopped):
        court.build(state_dir, hook=stop)
    resumed = court.build(state_dir)
    assert not any(c.full for c in resumed.capabilities)
    assert court.state_tokens(state_dir) == court.clean_tokens()
    court.reports_agree(f"resumed-{stop_at.replace(':', '-')}")


def test_a_delta_the_gateway_applied_is_not_sent_twice(court: Court, tmp_path: Path) -> None:
    """Stopped after the gateway applied the delta and before the state recorded it: the run
    again sees the gateway's newer version and takes the delta as done."""
    state_dir = tmp_path / "build"
    court.build(state_dir)
    change_one_percent(court.database)
    real = court.publisher()

    class CrashAfterDelta:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def publish_delta(self, *args: object) -> object:
            real.publish_delta(*args)  # type: ignore[arg-type]
            raise Stopped("after the gateway applied the delta")

    with pytest.raises(Stopped):
        court.build(state_dir, publisher=CrashAfterDelta())  # type: ignore[arg-type]
    resumed = court.build(state_dir)
    assert court.state_tokens(state_dir) == court.clean_tokens()
    assert any(c.added or c.removed for c in resumed.capabilities)
    court.reports_agree("applied-once")


def test_the_state_holds_no_id_in_any_form(court: Court, tmp_path: Path) -> None:
    state_dir = tmp_path / "build"
    court.build(state_dir)
    leaks = find_leaks(state_dir, subject_id_forms(court.data))
    assert leaks == [], leaks[:3]


def test_the_command_killed_at_random_points_resumes_to_the_same_tokens(court: Court, tmp_path: Path) -> None:
    """`xiezhi connector publish`, a real process, killed (SIGKILL) at a random moment once its
    build has begun, several times over; the same command then completes, and the tokens equal
    a clean build's."""
    state_dir = tmp_path / "build"
    court.build(state_dir)
    change_one_percent(court.database)
    token_file = tmp_path / "court.token"
    token_file.write_text(court.stack.connector_token("court"), encoding="utf-8")
    tls = session_pki().connector("court")
    command = [
        sys.executable, "-m", "cli", "connector", "publish", "--config", str(Roster.load(ROSTER_DIR).path("court")),
        "--key-dir", str(court.stack.key_dir("court")), "--gateway", court.stack.gateway_url,
        "--token-file", str(token_file), "--database-url", court.url, "--state-dir", str(state_dir),
        "--tls-cert", str(tls.cert), "--tls-key", str(tls.key), "--tls-ca", str(tls.ca),
    ]  # fmt: skip
    chaos = random.Random(14)
    state = state_path(state_dir, "court", court.keys.current())
    killed_mid_build = 0
    for _ in range(3):
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(functools.partial(_begun, state, process), "the build recorded a step")
        time.sleep(chaos.uniform(0.0, 0.5))  # not a wait for anything: a moment picked at random
        process.kill()
        killed_mid_build += process.wait() == -signal.SIGKILL and _steps(state) > 0
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert killed_mid_build >= 1  # at least one run died with its build under way
    assert court.state_tokens(state_dir) == court.clean_tokens()
    court.reports_agree("after-kills")


def _steps(state: Path) -> int:
    """How many steps the run in the state file has recorded (read as another process would)."""
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM progress").fetchone()[0])


def _begun(state: Path, process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is not None or (state.exists() and _steps(state) > 0)
