"""Check a clue report against a plain SQL join of the agency tables (devkit/reference.py).

    python deploy/compose/check_report.py --data STATE/data --subjects STATE/data/subjects.csv \
        --report STATE/reports/all.csv [--model housing_fund] [--request-id ID]

Reads the agency databases `DATA/agencies/<id>.sqlite` read-only, the list the report was
made from, the report and its errors file (`REPORT.errors.csv`). Exits 0 when the report's
table equals the reference join's row by row, its errors file lists exactly the rows the
reference finds invalid, and its header block names the model, the list (name and SHA-256),
the counts and (with `--request-id`) the request. Otherwise exits 1 naming the first
difference by row number and column; no identifier, name or case number is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from connectors.roster import Roster
from devkit.reference import NAME_COLUMN, checked_rows, expected_report, read_report
from xiezhi.errors import XiezhiError
from xiezhi.supervision import ModelCatalog

REPO_ROOT = Path(__file__).resolve().parents[2]


class Differs(Exception):
    """The report is not what the reference join predicts; the message says where."""


def check(
    data: Path,
    subjects: Path,
    report: Path,
    model_id: str,
    models: Path,
    request_id: str | None,
    roster: Path = REPO_ROOT / "deploy" / "connectors",
) -> int:
    """Raise Differs at the first difference; return the number of clues."""
    model = ModelCatalog.load(models).get(model_id)
    titles = {str(c.id): c.title for entry in Roster.load(roster) for c in entry.config.capabilities}
    expected, invalid = expected_report(data, model, subjects, titles=titles)
    about, actual = read_report(report)
    if not actual or actual[0] != expected[0]:
        raise Differs(f"{report.name}: the table's columns are not {', '.join(expected[0])}")
    header = expected[0]
    for at, (got, want) in enumerate(zip(actual[1:], expected[1:], strict=False), start=1):
        if got == want:
            continue
        if len(got) != len(want):
            raise Differs(f"{report.name}: table row {at} has {len(got)} cells, expected {len(want)}")
        column = next(i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w)
        if header[column] in ("案号", NAME_COLUMN):
            raise Differs(f"{report.name}: table row {at}: its {header[column]} is not the list's row {want[1]}'s")
        raise Differs(
            f"{report.name}: table row {at} (list row {want[1]}): {header[column]} is {got[column]!r}, "
            f"the reference join says {want[column]!r}"
        )
    if len(actual) != len(expected):
        raise Differs(f"{report.name}: {len(actual) - 1} table rows, the reference join has {len(expected) - 1}")
    errors_path = report.with_name(report.name + ".errors.csv")
    errors_about, errors = read_report(errors_path)
    listed = [int(row[0]) for row in errors[1:]]
    if listed != [number for number, _ in invalid]:
        raise Differs(
            f"{errors_path.name}: lists rows {listed[:10]}{'…' if len(listed) > 10 else ''}, the reference "
            f"finds rows {[n for n, _ in invalid][:10]}{'…' if len(invalid) > 10 else ''} invalid"
        )
    if [row[1] for row in errors[1:]] != [case_no for _, case_no in invalid]:
        raise Differs(f"{errors_path.name}: a row's 案号 is not the list's")
    if errors_about != about:
        raise Differs(f"{errors_path.name}: its header block is not the report's")
    clues = sum(row[0] == "是" for row in actual[1:])
    named = {
        "模型": model.id,
        "名单文件": subjects.name,
        "名单SHA-256": hashlib.sha256(subjects.read_bytes()).hexdigest(),
        "核对行数": str(len(checked_rows(actual))),
        "线索数": str(clues),
        "无效行数": str(len(invalid)),
    }
    if request_id is not None:
        named["请求编号"] = request_id
    for key, value in named.items():
        if about.get(key) != value:
            raise Differs(f"{report.name}: header {key} is {about.get(key)!r}, expected {value!r}")
    return clues


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the folder holding agencies/<id>.sqlite")
    parser.add_argument("--subjects", type=Path, required=True, help="the list the report was made from")
    parser.add_argument("--report", type=Path, required=True, help="the report CSV (its .errors.csv beside it)")
    parser.add_argument("--model", default="housing_fund")
    parser.add_argument("--models", type=Path, default=REPO_ROOT / "policies" / "models")
    parser.add_argument("--roster", type=Path, default=REPO_ROOT / "deploy" / "connectors",
                        help="the connectors' configurations (the capabilities' titles)")  # fmt: skip
    parser.add_argument("--request-id", help="the request the report must name")
    args = parser.parse_args()
    try:
        clues = check(args.data, args.subjects, args.report, args.model, args.models, args.request_id, args.roster)
    except Differs as error:
        sys.exit(f"check_report: {error}")
    except (OSError, ValueError, KeyError, XiezhiError) as error:
        sys.exit(f"check_report: cannot check {args.report.name}: {type(error).__name__}: {error}")
    rows = len(read_report(args.report)[1]) - 1
    print(f"check_report: {args.report.name} equals the reference join ({args.model}: {rows} rows, {clues} clues)")


if __name__ == "__main__":
    main()
