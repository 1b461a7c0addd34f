"""Checking clue reports against the reference SQL join, row by row, and scanning for leaks."""

from __future__ import annotations

import base64
import codecs
import hashlib
import re
import shutil
import sqlite3
import tempfile
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing
from pathlib import Path

from devkit import reference
from devkit.environment import load_roster
from devkit.reference import read_csv, read_report
from xiezhi import oprf
from xiezhi.crypto import derive_token
from xiezhi.errors import InvalidIdentifier
from xiezhi.ids import IdType, SubjectId, normalise_subject_id
from xiezhi.supervision import SubjectKind, SupervisionModel
from xiezhi.wire import Capability


def subjects_file(data_dir: Path, model: SupervisionModel) -> Path:
    return data_dir / ("applicants.csv" if model.subjects is SubjectKind.APPLICANTS else "subjects.csv")


def expected_report(
    data_dir: Path,
    model: SupervisionModel,
    queries: reference.Queries = reference.REFERENCE_QUERIES,
    titles: Mapping[str, str] | None = None,
) -> tuple[list[list[str]], list[tuple[int, str]]]:
    """The report the reference join predicts for the model's list, and the (row, 案号) pairs it predicts invalid."""
    subjects = subjects_file(data_dir, model)
    return reference.expected_report(data_dir, model, subjects, queries, titles or roster_titles())


def roster_titles(roster: Path | None = None) -> dict[str, str]:
    """Every capability's title in `roster` (default: the reference roster), as its connector
    publishes it: the report's column titles."""
    return {str(c.id): c.title for entry in load_roster(roster) for c in entry.config.capabilities}


def assert_report_agrees(
    data_dir: Path,
    model: SupervisionModel,
    report: Path,
    queries: reference.Queries = reference.REFERENCE_QUERIES,
    *,
    request_id: str | None = None,
    titles: Mapping[str, str] | None = None,
) -> int:
    """Assert `report` and its errors file equal the reference (`queries`, one per capability)
    and name the model, the list they were made from and (if given) `request_id`; return the
    number of clues."""
    expected, invalid = expected_report(data_dir, model, queries, titles)
    about, actual = read_report(report)
    assert actual[0] == expected[0], f"{model.id}: header"
    mismatches = [(a, e) for a, e in zip(actual[1:], expected[1:], strict=False) if a != e]
    assert not mismatches, f"{model.id}: {len(mismatches)} rows differ, first {mismatches[0]}"
    assert len(actual) == len(expected), f"{model.id}: {len(actual) - 1} rows, expected {len(expected) - 1}"
    errors_about, errors = read_report(report.with_name(report.name + ".errors.csv"))
    assert [(int(r[0]), r[1]) for r in errors[1:]] == invalid, f"{model.id}: errors file"
    clues = sum(row[0] == "是" for row in actual[1:])
    listed = subjects_file(data_dir, model)
    assert about == errors_about, f"{model.id}: the errors file belongs to the report"
    assert (about["模型"], about["名单文件"], about["名单SHA-256"]) == (
        model.id,
        listed.name,
        hashlib.sha256(listed.read_bytes()).hexdigest(),
    ), f"{model.id}: the report names its list"
    counts = (about["核对行数"], about["线索数"], about["无效行数"])
    checked = len(reference.checked_rows(actual))
    assert counts == (str(checked), str(clues), str(len(invalid))), f"{model.id}: counts"
    if request_id is not None:
        assert about["请求编号"] == request_id, f"{model.id}: the report names its request"
    return clues


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


# A needle is found where it is really stored. Text is matched after decoding: every value of
# an SQLite database, and any other file that decodes strictly. Raw bytes (binary files,
# deleted records, old WAL frames) are searched only for encoded forms chance cannot make:
# one of at least 6 bytes turns up at a given offset of random bytes (a sealed blob) with
# probability 2^-48, about once in 280 TB-needles, where a scan does some 10^10. A name of two
# CJK characters is 6 bytes in UTF-8 but 4 in GB18030 or UTF-16 (once in 4 GB-needles), and
# in UTF-16 some are printable ASCII, which base64 text is full of (李琴 is "Ng4t"): those are
# matched in decoded text only.
MIN_RAW_BYTES = 6
SQLITE_HEADER = b"SQLite format 3\x00"


def find_leaks(folder: Path, needles: set[str]) -> list[tuple[str, str]]:
    """(file, needle) for every needle stored in a file under `folder` in UTF-8, GB18030 or UTF-16.

    An SQLite database is read through SQLite from a copy (with its WAL), so the original is
    left as it is; its raw bytes are searched too."""
    text, raw = _Needles(needles), _RawForms(needles)
    found: set[tuple[str, str]] = set()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits = raw.find(data)
        if data.startswith(SQLITE_HEADER):
            hits.update(needle for value in _sqlite_texts(path) for needle in text.find(value))
        elif (decoded := _as_text(data, gb18030=True)) is not None:
            hits |= text.find(decoded)
        found |= {(str(path), needle) for needle in hits}
    return sorted(found)


class _Needles:
    """Which of many strings occur in a text: a regex finds runs of their characters, and each
    run's substrings are looked up by their first characters."""

    def __init__(self, needles: Iterable[str]) -> None:
        self.needles = frozenset(n for n in needles if n)
        self.prefix = min(map(len, self.needles), default=1)
        self.lengths: dict[str, set[int]] = defaultdict(set)  # a prefix → lengths of the needles it starts
        for needle in self.needles:
            self.lengths[needle[: self.prefix]].add(len(needle))
        alphabet = "".join(sorted({c for needle in self.needles for c in needle}))
        self.runs = re.compile(f"[{re.escape(alphabet)}]{{{self.prefix},}}") if alphabet else None

    def find(self, text: str) -> set[str]:
        found: set[str] = set()
        for run in self.runs.finditer(text) if self.runs else ():
            chars = run.group()
            for at in range(len(chars) - self.prefix + 1):
                for length in self.lengths.get(chars[at : at + self.prefix], ()):
                    if chars[at : at + length] in self.needles:
                        found.add(chars[at : at + length])
        return found


class _RawForms:
    """The needles' encoded forms that chance cannot make (see MIN_RAW_BYTES), found in raw bytes.

    UTF-8 and UTF-16 resynchronise after any bad byte (UTF-16 at a given parity), so decoding
    with replacement keeps every such form intact; GB18030 does not, so its forms are looked
    for byte by byte (as Latin-1 text: one character per byte)."""

    def __init__(self, needles: Iterable[str]) -> None:
        needles = set(needles)
        self.utf8 = _Needles(n for n in needles if _distinctive(n, "utf-8"))
        self.utf16 = {e: _Needles(n for n in needles if _distinctive(n, e)) for e in ("utf-16-le", "utf-16-be")}
        # ASCII needles are the same bytes in GB18030 as in UTF-8.
        gb = (n for n in needles if not n.isascii() and _distinctive(n, "gb18030"))
        self.gb = {n.encode("gb18030").decode("latin-1"): n for n in gb}
        self.gb_forms = _Needles(self.gb)

    def find(self, data: bytes) -> set[str]:
        found = self.utf8.find(data.decode("utf-8", "replace"))
        for encoding, forms in self.utf16.items():
            for parity in (0, 1):
                found |= forms.find(data[parity:].decode(encoding, "replace"))
        return found | {self.gb[form] for form in self.gb_forms.find(data.decode("latin-1"))}


def _distinctive(needle: str, encoding: str) -> bool:
    """Whether `needle` in `encoding` is long enough for raw bytes, and not printable ASCII
    standing for something else."""
    try:
        form = needle.encode(encoding)
    except UnicodeEncodeError:
        return False
    printable = all(32 <= byte < 127 or byte in b"\t\n\r" for byte in form)
    return len(form) >= MIN_RAW_BYTES and (needle.isascii() or not printable)


def _as_text(data: bytes, *, gb18030: bool) -> str | None:
    """`data` as text, if it decodes strictly as UTF-16 with a BOM, UTF-8, or (with `gb18030`)
    GB18030 that reads as text. Random bytes often decode as GB18030 (an 8-byte one in nine
    times, into printable characters): never tried for short values such as keyed digests."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return _decoded(data, "utf-16")
    if (text := _decoded(data, "utf-8-sig")) is not None or not gb18030:
        return text
    text = _decoded(data, "gb18030")
    return text if text is not None and _reads_as_text(text) else None


def _decoded(data: bytes, encoding: str) -> str | None:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return None


def _reads_as_text(text: str) -> bool:
    """No control character but white space, and no private-use, surrogate or unassigned one."""
    return all(c in "\t\n\r" or unicodedata.category(c) not in ("Cc", "Co", "Cs", "Cn") for c in text)


def _sqlite_texts(database: Path) -> Iterator[str]:
    """Every text value of an SQLite database, its WAL included; blobs that decode as text;
    integers in decimal. Read from a read-only copy, so the database and its WAL stay as they are."""
    with tempfile.TemporaryDirectory(prefix="xiezhi-leak-scan-") as scratch:
        copy = Path(scratch) / database.name
        _copy_at_rest(database, copy)
        with closing(sqlite3.connect(f"{copy.as_uri()}?mode=ro", uri=True)) as connection:
            connection.text_factory = lambda raw: raw.decode("utf-8", "replace")
            tables = [t for (t,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                quoted = '"' + table.replace('"', '""') + '"'
                for row in connection.execute(f"SELECT * FROM {quoted}"):
                    yield from (text for text in map(_value_text, row) if text is not None)


def _copy_at_rest(database: Path, copy: Path, attempts: int = 20) -> None:
    """Copy a database and its WAL, again until neither changed while copying (a running
    gateway may write meanwhile). Not its -shm: SQLite rebuilds that index from the WAL, and
    one copied at another moment could point past the copied WAL's end."""
    pairs = [(Path(f"{database}{suffix}"), Path(f"{copy}{suffix}")) for suffix in ("", "-wal")]
    for _ in range(attempts):
        before = [_file_state(source) for source, _ in pairs]
        for source, target in pairs:
            target.unlink(missing_ok=True)
            if source.exists():
                shutil.copyfile(source, target)
        if [_file_state(source) for source, _ in pairs] == before:
            return
    raise RuntimeError(f"{database.name} kept changing while it was copied")


def _file_state(path: Path) -> tuple[int, int] | None:
    if not path.exists():
        return None
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _value_text(value: object) -> str | None:
    if isinstance(value, bytes):
        return _as_text(value, gb18030=False)
    return str(value) if isinstance(value, str | int) else None


def subject_tokens(data_dir: Path, keys: Mapping[str, bytes], capabilities: Iterable[str]) -> set[bytes]:
    """Every token any valid ID in the data could have, per capability, under each connector's key.

    `keys` maps a connector to its OPRF secret key; a capability belongs to the connector
    its id starts with. This is what an index or a lookup could carry, computed here
    without the gateway."""
    inputs = sorted({s.oprf_input() for s in _valid_subjects(data_dir)})
    tokens: set[bytes] = set()
    for connector, key in keys.items():
        outputs = oprf.evaluate_batch(key, inputs, oprf.Mode.VOPRF)
        for capability in (c for c in map(Capability, capabilities) if c.connector == connector):
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
