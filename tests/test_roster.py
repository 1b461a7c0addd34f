"""The roster (deploy/connectors/): one configuration file per connector, read by everything
that needs the list of agencies; adding one is adding a file."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from connectors.config import table_columns
from connectors.roster import Roster
from devkit.demo.generate import generate
from devkit.environment import ROSTER_DIR, ensure_pki
from tests.demo_run import FIFTH, FIFTH_CONFIG
from xiezhi.errors import InvalidInput
from xiezhi.wire import Capability

REFERENCE = ["court", "tax", "housing_fund", "civil_affairs"]


@pytest.fixture
def roster_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "roster"
    shutil.copytree(ROSTER_DIR, folder)
    return folder


def test_the_repository_roster_holds_the_four_agencies_in_order() -> None:
    roster = Roster.load(ROSTER_DIR)
    assert roster.names() == REFERENCE
    assert roster.path("tax") == ROSTER_DIR / "tax.yaml"
    assert all(entry.config.tables for entry in roster)  # the development kit builds databases from them
    capabilities = [c.id for entry in roster for c in entry.config.capabilities]
    assert all(Capability(c).connector in REFERENCE for c in capabilities) and len(capabilities) == 9


def test_a_new_file_joins_after_the_listed_ones(roster_dir: Path) -> None:
    (roster_dir / f"{FIFTH}.yaml").write_text(FIFTH_CONFIG, encoding="utf-8")
    roster = Roster.load(roster_dir)
    assert roster.names() == [*REFERENCE, FIFTH]
    assert roster.entry(FIFTH).config.tables["pension_payments"].startswith("person_id TEXT")


def test_without_an_order_file_the_order_is_by_file_name(roster_dir: Path) -> None:
    (roster_dir / "roster.yaml").unlink()
    assert Roster.load(roster_dir).names() == sorted(REFERENCE)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: (d / "roster.yaml").write_text("order: [court, pension]\n"), "no configuration file for pension"),
        (lambda d: (d / "roster.yaml").write_text("order: court\n"), "expected 'order: \\[connector"),
        (lambda d: (d / "roster.yaml").write_text("order: [tax, tax]\n"), "listed twice"),
        (
            lambda d: (d / "pension.yaml").write_text(FIFTH_CONFIG, encoding="utf-8"),
            f"pension.yaml: connector '{FIFTH}' must be in {FIFTH}.yaml",
        ),
        (lambda d: (d / "court.yaml").write_text("connector: court\n"), "court.yaml: title: Field required"),
        (
            lambda d: (d / "court.yaml").write_text(
                (d / "court.yaml").read_text(encoding="utf-8").replace("case_no TEXT,", "case_no,", 1)
            ),
            "tables: .*column definition 'case_no' is not 'name TYPE'",
        ),
    ],
)
def test_a_broken_roster_is_refused_naming_the_file(roster_dir: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    change(roster_dir)
    with pytest.raises(InvalidInput, match=message):
        Roster.load(roster_dir)


def test_an_empty_folder_is_no_roster(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no connector configurations"):
        Roster.load(tmp_path)


def test_table_columns_parse_names_and_types() -> None:
    assert table_columns("a TEXT, b_id text , c NUMERIC(12, 2)") == [
        ("a", "TEXT"),
        ("b_id", "TEXT"),
        ("c", "NUMERIC(12, 2)"),
    ]
    with pytest.raises(ValueError, match="share a name"):
        table_columns("a TEXT, a REAL")


def test_the_generator_builds_every_roster_database_from_its_tables(roster_dir: Path, tmp_path: Path) -> None:
    (roster_dir / f"{FIFTH}.yaml").write_text(FIFTH_CONFIG, encoding="utf-8")
    summary = generate(tmp_path / "data", seed=3, debtors=120, roster=Roster.load(roster_dir))
    with closing(sqlite3.connect(tmp_path / "data" / "agencies" / f"{FIFTH}.sqlite")) as connection:
        columns = [(row[1], row[2]) for row in connection.execute("PRAGMA table_info(pension_payments)")]
        assert connection.execute("SELECT COUNT(*) FROM pension_payments").fetchone() == (0,)
    assert columns == table_columns(Roster.load(roster_dir).entry(FIFTH).config.tables["pension_payments"])
    assert summary.table_rows[f"{FIFTH}.pension_payments"] == 0  # no generator for it: empty, and said so
    assert summary.table_rows["court.civil_cases"] > 0


def test_the_generator_refuses_a_connector_without_tables(roster_dir: Path, tmp_path: Path) -> None:
    without = "\n".join(line for line in FIFTH_CONFIG.splitlines() if "pension_payments:" not in line)
    (roster_dir / f"{FIFTH}.yaml").write_text(without.replace("tables:\n", ""), encoding="utf-8")
    with pytest.raises(InvalidInput, match=f"{FIFTH}.yaml: connector {FIFTH} declares no tables"):
        generate(tmp_path / "data", seed=3, debtors=120, roster=Roster.load(roster_dir))
    assert not (tmp_path / "data" / "agencies").exists()  # nothing half written


def test_the_generator_refuses_a_roster_missing_a_table_it_fills(roster_dir: Path, tmp_path: Path) -> None:
    court = roster_dir / "court.yaml"
    court.write_text(court.read_text(encoding="utf-8").replace("  civil_cases:", "  old_civil_cases:"))
    with pytest.raises(InvalidInput, match="court needs a table civil_cases of 8 columns"):
        generate(tmp_path / "data", seed=3, debtors=120, roster=Roster.load(roster_dir))


def test_the_development_pki_gains_a_certificate_for_a_new_connector(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path / "pki", REFERENCE)
    ca = pki.ca.read_bytes()
    assert not pki.connector(FIFTH).cert.exists()
    again = ensure_pki(tmp_path / "pki", [*REFERENCE, FIFTH])
    assert again.connector(FIFTH).cert.is_file() and again.ca.read_bytes() == ca  # same CA, one more party
