"""The one whole demo run the tests share: `xiezhi demo` as a process, as a user runs it.

It runs on the hand-built data set (`tests/handmade.py`, unlike anything the generator
writes) and with a fifth agency joined by configuration alone, as an operator would add it:
a social-security connector answering "draws a pension" — a configuration file beside the
roster's four, its database in the data folder, a supervision model file and the
capability's tier in the policy. No Python names it anywhere.

Tests reach it through the `demo_run` fixture (tests/conftest.py); every test that uses it
is in the xdist group "demo", so one worker runs the demo once for all of them.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from devkit.environment import REPO_ROOT, ROSTER_DIR
from tests import handmade
from tests.handmade import BAD, A, B, D, E, F, G, fifteen, full_width
from tests.stack import run_cli

FIFTH = "social_security"
PENSION = "social_security.pension_drawn"

FIFTH_CONFIG = """\
# 人力资源和社会保障局 — pension payments (养老金发放).
connector: social_security
title: 人力资源和社会保障局
database_url: ${XIEZHI_SOCIAL_SECURITY_DATABASE_URL:-sqlite:///social_security.sqlite}
tables:
  pension_payments: person_id TEXT, person_name TEXT, month TEXT, amount REAL, status TEXT
capabilities:
  - id: social_security.pension_drawn
    title: 正在领取养老金
    tier: 2
    query: |
      SELECT person_id AS subject_id
      FROM pension_payments
      WHERE status = '正常发放' AND amount > 0
"""

PENSION_MODEL = """\
id: pension
title: 养老金
description: >
  终本案件被执行人正在领取养老金，可依法冻结、扣划（包头青山模式）。
subjects: debtors
looks_up: [social_security.pension_drawn]
reveals: [social_security.pension_drawn]
clue: social_security.pension_drawn
"""

# The plain SQL join a reviewer would write over the raw table (norm: devkit/reference.py).
PENSION_REFERENCE = (
    FIFTH,
    "SELECT norm(person_id) FROM pension_payments WHERE status = '正常发放' AND amount > 0",
)

# Who draws a pension, reasoned out by hand from the rows below.
PENSION_EXPECTED = {A, E, F}  # E is an applicant, on no debtor list


@dataclass(frozen=True)
class DemoRun:
    data: Path  # the agencies' databases and the procuratorate's lists
    work: Path  # the demo's work folder: reports, services' state, logs, telemetry
    roster: Path  # deploy/connectors/ plus the fifth agency
    policies: Path  # policies/ plus the pension model and its capability's tier
    done: subprocess.CompletedProcess[str]

    @property
    def connectors(self) -> list[str]:
        return sorted(p.name for p in (self.work / "connectors").iterdir() if p.is_dir())


def start(root: Path) -> DemoRun:
    """Build the data and the configuration under `root`, then run `xiezhi demo` over them."""
    data = handmade.build(root / "data")
    _pension_database(data / "agencies" / f"{FIFTH}.sqlite")
    roster = root / "roster"
    shutil.copytree(ROSTER_DIR, roster)
    (roster / f"{FIFTH}.yaml").write_text(FIFTH_CONFIG, encoding="utf-8")
    policies = root / "policies"
    shutil.copytree(REPO_ROOT / "policies", policies)
    (policies / "models" / "pension.yaml").write_text(PENSION_MODEL, encoding="utf-8")
    with (policies / "policy.csv").open("a", encoding="utf-8") as rules:
        rules.write(f"p3, {PENSION}, 2\n")
    work = root / "work"
    done = run_cli(
        "demo", "--data", str(data), "--workdir", str(work), "--roster", str(roster), "--policies", str(policies)
    )
    return DemoRun(data, work, roster, policies, done)


def _pension_database(path: Path) -> None:
    rows = [
        (fifteen(A), "甲某", "2025-05", 2300.0, "正常发放"),  # A draws, recorded in the 15-digit form
        (full_width(E), "戊某", "2025-05", 1800.0, "正常发放"),  # E draws, full-width digits
        (B, "乙某", "2025-05", 2100.0, "暂停发放"),  # B's payments are suspended
        (D.lower(), "丁某", "2025-05", 0.0, "正常发放"),  # D is on the roll with nothing paid
        (f"{F[:6]} {F[6:]}", "己某", "2025-05", 1500.0, "正常发放"),  # F draws, spaced
        (F, "己某", "2019-12", 1400.0, "终止发放"),  # … an older, ended payment of F's does not matter
        (G, "庚某", "2020-01", 800.0, "终止发放"),  # G's pension ended
        (BAD, "无效", "2025-05", 900.0, "正常发放"),  # an invalid number: never indexed
    ]
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute(
            "CREATE TABLE pension_payments (person_id TEXT, person_name TEXT, month TEXT, amount REAL, status TEXT)"
        )
        connection.executemany("INSERT INTO pension_payments VALUES (?, ?, ?, ?, ?)", rows)
