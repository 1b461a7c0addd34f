"""Checking clue reports against the reference SQL join, row by row, and scanning for leaks."""

from __future__ import annotations

import base64
import csv
import re
import sqlite3
from contextlib import closing
from pathlib import Path

from tests import reference
from xiezhi import oprf
from xiezhi.crypto import derive_token
from xiezhi.errors import InvalidIdentifier
from xiezhi.ids import IdType, SubjectId, normalise_subject_id
from xiezhi.supervision import SubjectKind, SupervisionModel


def read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def subjects_file(data_dir: Path, model: SupervisionModel) -> Path:
    return data_dir / ("applicants.csv" if model.subjects is SubjectKind.APPLICANTS else "subjects.csv")


def expected_report(
    data_dir: Path, model: SupervisionModel, queries: reference.Queries = reference.REFERENCE_QUERIES
) -> tuple[list[list[str]], list[tuple[int, str]]]:
    """The report the reference join predicts, and the (row, 案号) pairs it predicts invalid."""
    flags = reference.expected_flags(data_dir, queries=queries)
    rows, invalid = [], []
    for number, case_no, key in reference.subject_rows(subjects_file(data_dir, model)):
        if key is None:
            invalid.append((number, case_no))
            continue
        subject_flags = {capability: key in flags[capability] for capability in model.looks_up}
        clue = model.clue.evaluate(subject_flags)
        rows.append([str(number), case_no, _yes(clue), *(_yes(subject_flags[c]) for c in model.reveals)])
    return [["行号", "案号", "线索", *model.reveals], *rows], invalid


def assert_report_agrees(
    data_dir: Path, model: SupervisionModel, report: Path, queries: reference.Queries = reference.REFERENCE_QUERIES
) -> int:
    """Assert `report` and its errors file equal the reference (`queries`, one per capability);
    return the number of clues."""
    expected, invalid = expected_report(data_dir, model, queries)
    actual = read_csv(report)
    assert actual[0] == expected[0], f"{model.id}: header"
    mismatches = [(a, e) for a, e in zip(actual[1:], expected[1:], strict=False) if a != e]
    assert not mismatches, f"{model.id}: {len(mismatches)} rows differ, first {mismatches[0]}"
    assert len(actual) == len(expected), f"{model.id}: {len(actual) - 1} rows, expected {len(expected) - 1}"
    errors = read_csv(report.with_name(report.name + ".errors.csv"))
    assert [(int(r[0]), r[1]) for r in errors[1:]] == invalid, f"{model.id}: errors file"
    return sum(row[2] == "是" for row in actual[1:])


def _yes(value: bool) -> str:
    return "是" if value else "否"


# ---- leak scanning -------------------------------------------------------------------


def id_forms(value: str, id_type: IdType) -> set[str]:
    """Every spelling of a normalised ID someone might search a leak for."""
    forms = {value, value.lower()}
    if id_type is IdType.RESIDENT and value[6:8] == "19":
        forms.add(value[:6] + value[8:17])  # the old 15-digit form
    return forms


def subject_id_forms(data_dir: Path) -> set[str]:
    """All forms of every valid ID in the agency tables and both lists, plus the raw values."""
    forms: set[str] = set()
    for raw in _raw_ids(data_dir):
        forms.add(raw.strip())
        try:
            subject = normalise_subject_id(raw)
        except InvalidIdentifier:
            continue
        forms |= id_forms(subject.value, subject.id_type)
    return {f for f in forms if len(f) >= 15}


def subject_names(data_dir: Path) -> set[str]:
    """Every person's or company's name in the agency tables and both lists (two characters or more)."""
    names: set[str] = set()
    for database in (data_dir / "agencies").glob("*.sqlite"):
        with closing(sqlite3.connect(database)) as connection:
            for (table,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
                columns = [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
                for column in (c for c in columns if c.endswith("_name")):
                    names |= {v for (v,) in connection.execute(f"SELECT {column} FROM {table}") if isinstance(v, str)}
    for name in ("subjects.csv", "applicants.csv"):
        rows = read_csv(data_dir / name)
        at = next(rows[0].index(h) for h in ("姓名", "名称") if h in rows[0])
        names |= {row[at] for row in rows[1:] if len(row) > at}
    return {n.strip() for n in names if len(n.strip()) >= 2}


def _raw_ids(data_dir: Path) -> list[str]:
    raws = []
    for database in (data_dir / "agencies").glob("*.sqlite"):
        with closing(sqlite3.connect(database)) as connection:
            for (table,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
                columns = [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
                for column in (c for c in columns if c.endswith("_id")):
                    raws += [v for (v,) in connection.execute(f"SELECT {column} FROM {table}") if isinstance(v, str)]
    for name in ("subjects.csv", "applicants.csv"):
        rows = read_csv(data_dir / name)
        at = rows[0].index("证件号码")
        raws += [row[at] for row in rows[1:] if len(row) > at]
    return raws


def find_leaks(folder: Path, needles: set[str]) -> list[tuple[str, str]]:
    """(file, needle) for every needle found in any file under `folder` (UTF-8 and UTF-16)."""
    encoded = {n: (n.encode(), n.encode("utf-16-le")) for n in needles}
    found = []
    for path in (p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [(str(path), n) for n, forms in encoded.items() if any(f in data for f in forms)]
    return found


def subject_tokens(data_dir: Path, keys: dict[str, bytes], capabilities: set[str]) -> set[bytes]:
    """Every token any valid ID in the data could have, per capability, under each connector's key.

    `keys` maps a connector to its OPRF secret key; a capability belongs to the connector
    its id starts with. This is what an index or a lookup could carry, computed here
    without the gateway."""
    inputs = sorted({s.oprf_input() for s in _valid_subjects(data_dir)})
    tokens: set[bytes] = set()
    for connector, key in keys.items():
        outputs = oprf.evaluate_batch(key, inputs, oprf.Mode.VOPRF)
        for capability in (c for c in capabilities if c.split(".", 1)[0] == connector):
            tokens |= {derive_token(output, capability) for output in outputs}
    return tokens


def find_token_leaks(folder: Path, tokens: set[bytes]) -> list[tuple[str, str]]:
    """(file, form) for every token found under `folder`: raw bytes, hex, base64 or base64url."""
    width = len(next(iter(tokens)))
    encoded = {t.hex().encode(): "hex" for t in tokens} | {t.hex().upper().encode(): "HEX" for t in tokens}
    for token in tokens:
        encoded[base64.b64encode(token).rstrip(b"=")] = "base64"
        encoded[base64.urlsafe_b64encode(token).rstrip(b"=")] = "base64url"
    sizes = {len(e) for e in encoded}
    found = []
    for path in (p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if any(data[i : i + width] in tokens for i in range(len(data) - width + 1)):
            found.append((str(path), "raw"))
        for run in re.finditer(rb"[0-9A-Za-z+/_-]{%d,}" % min(sizes), data):
            text = run.group()
            hits = {
                encoded[text[i : i + n]] for n in sizes for i in range(len(text) - n + 1) if text[i : i + n] in encoded
            }
            found += [(str(path), form) for form in sorted(hits)]
    return found


def _valid_subjects(data_dir: Path) -> list[SubjectId]:
    subjects = []
    for raw in _raw_ids(data_dir):
        try:
            subjects.append(normalise_subject_id(raw))
        except InvalidIdentifier:
            continue
    return subjects
