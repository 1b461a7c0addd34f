"""Tests for `xiezhi match` (cli/requester.py), in process: bad input is a message naming the
file or the row with a non-zero exit, never a traceback; the summary says "checked".

The gateway is the in-memory fake of tests/test_job.py; tests/test_commands.py runs the
command against a real stack, including an unreachable gateway.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

import requester.job
from cli.main import app
from tests.test_job import LIST, FakeGateway

PURPOSE = "（2023）浙0803执1号"


def _match(subjects: Path, out: Path) -> tuple[int, str, str, BaseException | None]:
    runner = CliRunner()
    args = ["match", "--gateway", "https://gateway.invalid", "--model", "housing_fund", "--purpose", PURPOSE]
    args += ["--subjects", str(subjects), "--out", str(out), "--no-progress"]
    result = runner.invoke(app, args, env={"XIEZHI_TOKEN": "token"})
    exception = None if isinstance(result.exception, SystemExit) else result.exception
    return result.exit_code, result.stdout, result.stderr, exception


@pytest.fixture(autouse=True)
def gateway(monkeypatch: pytest.MonkeyPatch) -> FakeGateway:
    fake = FakeGateway()
    monkeypatch.setattr(requester.job, "run_match", fake)
    return fake


def _write(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_the_summary_says_rows_checked(tmp_path: Path) -> None:
    code, stdout, stderr, exception = _match(_write(tmp_path / "s.csv", LIST), tmp_path / "o.csv")
    assert (code, exception) == (0, None), stderr
    assert "housing_fund: 2 rows checked, 1 clues, 1 invalid rows → " in stdout
    assert "matched" not in stdout


def test_a_missing_list_is_named(tmp_path: Path, gateway: FakeGateway) -> None:
    missing = tmp_path / "没有这个名单.csv"
    code, _, stderr, exception = _match(missing, tmp_path / "o.csv")
    assert (code, exception) == (2, None)
    assert f"{missing}: no such file" in stderr and "Traceback" not in stderr
    assert gateway.asked == []


def test_a_field_over_the_csv_limit_is_named_by_its_row(tmp_path: Path) -> None:
    huge = "9" * (csv.field_size_limit() + 10)
    subjects = _write(tmp_path / "s.csv", [*LIST, ["（2023）浙0803执4号", "丁", huge]])
    code, _, stderr, exception = _match(subjects, tmp_path / "o.csv")
    assert (code, exception) == (2, None)
    assert "s.csv: row 4 (line 5): a field is longer than" in stderr and "Traceback" not in stderr
    assert "99999" not in stderr


def test_a_malformed_csv_is_named_by_its_row(tmp_path: Path) -> None:
    subjects = tmp_path / "s.csv"
    subjects.write_bytes("案号,姓名,证件号码\n（2023）浙0803执1号,\x00,11010519491231002X\n".encode())
    code, _, stderr, exception = _match(subjects, tmp_path / "o.csv")
    assert (code, exception) == (2, None)
    assert "s.csv: row 1 (line 2): holds a NUL character" in stderr


def test_a_failed_run_leaves_no_report(tmp_path: Path, gateway: FakeGateway) -> None:
    from xiezhi.errors import Unavailable

    gateway.failure = Unavailable("gateway unreachable (ConnectError)", code="gateway_unreachable")
    out = tmp_path / "o.xlsx"
    out.write_bytes(b"last week's report")
    code, _, stderr, exception = _match(_write(tmp_path / "s.csv", LIST), out)
    assert (code, exception) == (2, None)
    assert "error (gateway_unreachable)" in stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.glob("o.previous-*.xlsx")] != []


def test_an_unwritable_report_is_a_message(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    code, _, stderr, exception = _match(_write(tmp_path / "s.csv", LIST), blocked / "o.csv")
    assert (code, exception) == (2, None)
    assert "cannot be written" in stderr and "Traceback" not in stderr
