"""The leak scanner of tests/agreement.py finds a name or an ID in every encoding it claims, and
nothing that is only a chance arrangement of bytes.

The needles are made up. 李琴 is the name that was reported in the gateway's SQLite WAL: its
UTF-16-LE bytes are the printable ASCII "Ng4t", which base64 text holds by chance.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import random
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.agreement import find_leaks

NAME = "李琴"  # two characters: 4 bytes in GB18030 and UTF-16, 6 in UTF-8
LONGER_NAME = "欧阳琴"  # three: 6 bytes in GB18030 and UTF-16, and not printable ASCII in UTF-16
ID = "33080319900101123X"
SHORT_ID = "330803900101123"  # the old 15-digit form, all digits: SQLite can hold it as an integer
NEEDLES = {NAME, LONGER_NAME, ID, SHORT_ID}
ENCODINGS = ["utf-8", "gb18030", "utf-16-le", "utf-16-be"]
BOMS = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}


def _random(size: int, seed: int = 7) -> bytes:
    """Bytes like a sealed blob's; seeded, so every run scans the same ones."""
    return random.Random(seed).randbytes(size)


def _found(folder: Path) -> dict[str, set[str]]:
    """What the scanner finds, by file name."""
    found: dict[str, set[str]] = {}
    for path, needle in find_leaks(folder, NEEDLES):
        found.setdefault(Path(path).name, set()).add(needle)
    return found


def _hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_forms_that_caused_false_alarms() -> None:
    assert NAME.encode("utf-16-le") == b"Ng4t"
    assert len(NAME.encode("gb18030")) == len(NAME.encode("utf-16-be")) == 4


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_text_file_in_each_encoding(tmp_path: Path, encoding: str) -> None:
    text = f"姓名：{NAME}，曾用名：{LONGER_NAME}\n证件号码：{ID}（旧号 {SHORT_ID}）\n"
    (tmp_path / "list.txt").write_bytes(BOMS.get(encoding, b"") + text.encode(encoding))
    assert _found(tmp_path) == {"list.txt": NEEDLES}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_inside_a_binary_file(tmp_path: Path, encoding: str) -> None:
    """Forms of at least 6 bytes are found among random bytes, at any offset and after a
    broken character (a lone UTF-8 lead byte, half a UTF-16 surrogate pair)."""
    broken = b"\xe6\x00\xd8\x81"
    planted = (_random(333, seed) + broken + needle.encode(encoding) for seed, needle in enumerate(sorted(NEEDLES)))
    pieces = [_random(1001), broken, *planted]
    blob = b"\x80\xff" + b"".join(pieces) + _random(77)  # \x80\xff: not text in any encoding
    (tmp_path / "sealed.bin").write_bytes(blob)
    # A two-character name is 6 bytes in UTF-8 only; in GB18030 or UTF-16 its 4 bytes could be chance.
    expected = NEEDLES if encoding == "utf-8" else NEEDLES - {NAME}
    assert _found(tmp_path) == {"sealed.bin": expected}


def _utf16_database(path: Path, journal: str = "delete") -> sqlite3.Connection:
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA encoding = 'UTF-16le'")
    connection.execute(f"PRAGMA journal_mode = {journal}")
    connection.execute("PRAGMA wal_autocheckpoint = 0")  # in WAL mode, the rows stay in the WAL
    connection.execute("CREATE TABLE people (name TEXT, id TEXT, old_id INTEGER, note BLOB)")
    note = f'{{"曾用名": "{LONGER_NAME}"}}'.encode("utf-16")  # a blob that is UTF-16 text, with its BOM
    connection.execute("INSERT INTO people VALUES (?, ?, ?, ?)", (NAME, ID, int(SHORT_ID), note))
    connection.commit()
    return connection


def test_a_utf16_sqlite_database(tmp_path: Path) -> None:
    """Its text is UTF-16 on disk, where 李琴 is plain "Ng4t": read through SQLite, it is found."""
    database = tmp_path / "gateway.sqlite"
    _utf16_database(database).close()
    raw = database.read_bytes()
    assert b"Ng4t" in raw and NAME.encode() not in raw
    assert _found(tmp_path) == {"gateway.sqlite": NEEDLES}


def test_a_sqlite_wal_is_read_and_left_as_it_is(tmp_path: Path) -> None:
    database = tmp_path / "gateway.sqlite"
    with closing(_utf16_database(database, journal="wal")) as writer:
        wal = tmp_path / "gateway.sqlite-wal"
        assert b"Ng4t" in wal.read_bytes() and b"Ng4t" not in database.read_bytes()  # only in the WAL
        before = {path.name: _hash(path) for path in tmp_path.iterdir()}
        # Through SQLite, everything; in the WAL's raw bytes, the forms chance cannot make.
        assert _found(tmp_path) == {"gateway.sqlite": NEEDLES, "gateway.sqlite-wal": {ID, LONGER_NAME}}
        assert {path.name: _hash(path) for path in tmp_path.iterdir()} == before
        writer.execute("INSERT INTO people (name) VALUES ('x')")  # the writer carries on
        writer.commit()


# ---- no chance matches -------------------------------------------------------------------


def test_base64_holding_ng4t_is_not_the_name(tmp_path: Path) -> None:
    text = base64.b64encode(_random(3000)).decode()
    text = text[:100] + "Ng4t" + text[100:] + "\n"
    (tmp_path / "telemetry.jsonl").write_text(f'{{"digest": "{text}"}}', encoding="utf-8")
    with closing(sqlite3.connect(tmp_path / "gateway.sqlite")) as connection:
        connection.execute("PRAGMA journal_mode = wal")
        connection.execute("PRAGMA wal_autocheckpoint = 0")
        connection.execute("CREATE TABLE entries (entry TEXT, raw BLOB)")
        connection.execute("INSERT INTO entries VALUES (?, ?)", (text, text.encode()))
        connection.commit()
        assert b"Ng4t" in (tmp_path / "gateway.sqlite-wal").read_bytes()
        assert find_leaks(tmp_path, {NAME}) == []


def test_random_bytes_holding_the_names_short_forms_are_not_the_name(tmp_path: Path) -> None:
    """李琴's 4-byte forms, as random bytes hold them by chance: in a binary file, and as
    short blobs (keyed digests) in a database, where a blob is not taken for GB18030 text."""
    forms = [NAME.encode(e) for e in ("gb18030", "utf-16-le", "utf-16-be")]
    (tmp_path / "sealed.bin").write_bytes(b"\x80\xff" + b"".join(_random(500, n) + f for n, f in enumerate(forms)))
    with closing(sqlite3.connect(tmp_path / "gateway.sqlite")) as connection:
        connection.execute("CREATE TABLE digests (digest BLOB)")
        connection.executemany("INSERT INTO digests VALUES (?)", [(f + _random(4, n),) for n, f in enumerate(forms)])
        connection.commit()
    assert find_leaks(tmp_path, {NAME}) == []
