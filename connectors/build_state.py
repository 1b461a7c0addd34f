"""What a connector's index build keeps between runs and while it runs, in a local SQLite file.

One file per connector and key epoch (`<state_dir>/<connector>-epoch-NNNN.sqlite`, mode 0600,
inside the connector's own folder). Between runs nothing in it reads as personal data without
the epoch's OPRF key, from which its key is derived:

- `rows`: every evidence row the last published build read, by a keyed digest of the row
  (BLAKE2b under the state key), with its subject's keyed digest and what the reduction needs:
  a keyed digest of the row's `key` (distinct keys) or the key itself (`latest_value_is`
  orders by it: a date or a number), and a keyed digest of its `value`;
- `subjects`: each subject's OPRF input, sealed (AES-256-GCM under the state key), so a
  subject whose membership changes can be evaluated without reading its rows again;
- `members`: per capability, the subjects published and their tokens; `bases`: the
  gateway's publication of each capability, which deltas change.

A run works in `scan` (each row's digest and content as read, in a file of its own beside
the state, `…sqlite.scan`, written without a journal: a scan is never resumed, only started
again, so the file is made anew at each start and a crash cannot leave it half-written
for a later read; it holds the rows as the agency's database gave them while the run lasts,
and is emptied at its end), `fresh` (the rows the
published build did not read, normalised), `gone` (the published rows no longer read),
`changes` and `progress`, and moves its result into the tables above capability by
capability, each in one transaction once the gateway committed it, so a
run killed at any point starts again where it stopped.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from connectors.publisher import CHUNK_TOKENS, TokenStream
from xiezhi.crypto import aes256gcm_open, aes256gcm_seal
from xiezhi.wire import TOKEN_BYTES

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (capability TEXT, row BLOB, subject BLOB, key, value BLOB,
                                 PRIMARY KEY (capability, row));
CREATE INDEX IF NOT EXISTS rows_subject ON rows (capability, subject);
CREATE TABLE IF NOT EXISTS subjects (subject BLOB PRIMARY KEY, sealed BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS members (capability TEXT, subject BLOB, token BLOB NOT NULL,
                                    PRIMARY KEY (capability, subject));
CREATE TABLE IF NOT EXISTS bases (capability TEXT PRIMARY KEY, publication TEXT NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counts (capability TEXT PRIMARY KEY, invalid INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS fresh (capability TEXT, row BLOB, subject BLOB, key, value BLOB);
CREATE TABLE IF NOT EXISTS gone (capability TEXT, row BLOB, PRIMARY KEY (capability, row));
CREATE TABLE IF NOT EXISTS changes (capability TEXT, subject BLOB, kind TEXT, token BLOB,
                                    PRIMARY KEY (capability, subject));
CREATE TABLE IF NOT EXISTS progress (step TEXT PRIMARY KEY, rows INTEGER, invalid INTEGER, detail TEXT);
"""
_RUN_TABLES = ("fresh", "gone", "changes", "progress")
_RUN_INDEXES = ("fresh_row", "fresh_subject")  # built once their table is filled
_NONCE = 12
_PAGE = 5_000  # rows or subjects read at a time from a working table
_DIGEST_PAGE = 50_000  # row digests alone (16 bytes each) read at a time
# The rows now of the subjects in `temp.page`: the published rows not gone, and the new ones.
# CROSS JOIN makes the page the outer loop (SQLite keeps the written order): each of its
# subjects is looked up in the index; the planner, knowing nothing of the temporary table,
# would otherwise walk every row of the capability and scan the page for each.
_EVIDENCE = """
SELECT p.subject, e.key, e.value FROM temp.page p LEFT JOIN (
    SELECT r.subject, r.key, r.value FROM temp.page q CROSS JOIN rows r
    ON r.capability = ?1 AND r.subject = q.subject
    WHERE NOT EXISTS (SELECT 1 FROM gone g WHERE g.capability = ?1 AND g.row = r.row)
    UNION ALL
    SELECT f.subject, f.key, f.value FROM temp.page q CROSS JOIN fresh f
    ON f.capability = ?1 AND f.subject = q.subject
) e ON e.subject = p.subject ORDER BY p.subject
"""

# The subjects of the new rows and of the rows gone; and how many of the rows gone had an
# invalid ID. Each gone row is looked up in `rows` by its key (CROSS JOIN keeps that order).
_TOUCHED = """
SELECT subject FROM fresh WHERE capability = ?1 AND subject IS NOT NULL
UNION SELECT r.subject FROM gone g CROSS JOIN rows r ON r.capability = g.capability AND r.row = g.row
WHERE g.capability = ?1 AND r.subject IS NOT NULL
"""
_INVALID_GONE = """
SELECT count(*) FROM gone g CROSS JOIN rows r ON r.capability = g.capability AND r.row = g.row
WHERE g.capability = ?1 AND r.subject IS NULL
"""


def _grouped(rows: list[tuple[bytes, object, bytes | None]]) -> Iterator[tuple[bytes, list[tuple[object, bytes]]]]:
    """(subject, key, value) rows in subject order → each subject with its (key, value) pairs."""
    current: bytes | None = None
    evidence: list[tuple[object, bytes]] = []
    for subject, key, value in rows:
        if subject != current:
            if current is not None:
                yield current, evidence
            current, evidence = subject, []
        if value is not None:
            evidence.append((key, value))
    if current is not None:
        yield current, evidence


def state_key(oprf_secret_key: bytes) -> bytes:
    """The build state's key, derived from the epoch's OPRF secret key (HMAC-SHA-256)."""
    return hmac.digest(oprf_secret_key, b"xiezhi/build-state/v1", "sha256")


class BuildState:
    """The state file of one connector's builds under one epoch key. Not thread-safe."""

    def __init__(self, path: Path, key: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fresh = not path.exists()
        self._db = sqlite3.connect(path, isolation_level=None)
        if fresh:
            os.chmod(path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._key = key
        self._scan_path = path.with_name(path.name + ".scan")
        self._attach_scan()

    def close(self) -> None:
        self._db.close()

    def _attach_scan(self) -> None:
        fresh = not self._scan_path.exists()
        self._db.execute("ATTACH DATABASE ? AS scanning", (str(self._scan_path),))
        if fresh:
            os.chmod(self._scan_path, 0o600)
        self._db.execute("PRAGMA scanning.journal_mode=OFF")
        self._db.execute("PRAGMA scanning.synchronous=OFF")
        self._db.execute("CREATE TABLE IF NOT EXISTS scanning.scan (row BLOB, content TEXT)")

    def _new_scan(self) -> None:
        """An empty scan file, made anew (an earlier one may have been cut off mid-write)."""
        self._db.execute("DETACH DATABASE scanning")
        self._scan_path.unlink(missing_ok=True)
        self._attach_scan()

    # ---- keyed digests and sealing ---------------------------------------------------------

    def keyed(self, data: bytes) -> bytes:
        """A 16-byte keyed digest (BLAKE2b under the state key) of `data`."""
        return hashlib.blake2b(data, key=self._key, digest_size=16).digest()

    def digest(self, *parts: object) -> bytes:
        """A 16-byte keyed digest of `parts` (their reprs, separated): equal parts, equal digests."""
        text = "\x1f".join(repr(part) for part in parts).encode("utf-8")
        return hashlib.blake2b(text, key=self._key, digest_size=16).digest()

    def row_key(self, capability: str) -> bytes:
        """The key the agency's database digests `capability`'s rows under (`connectors.row_digests`)."""
        return hmac.digest(self._key, b"xiezhi/row-digest/v1/" + capability.encode("utf-8"), "sha256")

    def seal(self, subject: bytes, oprf_input: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + aes256gcm_seal(self._key, nonce, oprf_input, subject)

    def open(self, subject: bytes, sealed: bytes) -> bytes:
        return aes256gcm_open(self._key, sealed[:_NONCE], sealed[_NONCE:], subject)

    # ---- progress ------------------------------------------------------------------------------

    def done(self, step: str) -> tuple[int, int, str] | None:
        row = self._db.execute("SELECT rows, invalid, detail FROM progress WHERE step = ?", (step,)).fetchone()
        return None if row is None else (int(row[0]), int(row[1]), str(row[2]))

    def mark(self, step: str, rows: int = 0, invalid: int = 0, detail: str = "") -> None:
        self._db.execute("INSERT OR REPLACE INTO progress VALUES (?, ?, ?, ?)", (step, rows, invalid, detail))

    def finish_run(self) -> None:
        """Forget the run's working tables: the next run starts from the published state."""
        self._new_scan()
        with self.transaction():
            for index in _RUN_INDEXES:
                self._db.execute(f"DROP INDEX IF EXISTS {index}")
            for table in _RUN_TABLES:
                self._db.execute(f"DELETE FROM {table}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ---- scanning -----------------------------------------------------------------------------
    #
    # A capability's rows go to `scan` as they stream (digest and content, no index: appending
    # stays cheap); an index is built once the scan is done, and set operations against the
    # published `rows` then find the new rows (`fresh`) and the rows gone (`gone`). The scan
    # holds one capability's rows at a time.

    def start_scan(self, capability: str) -> None:
        """Forget what a stopped scan of `capability` left; drop the indexes while rows stream in."""
        self._new_scan()
        with self.transaction() as db:
            for index in _RUN_INDEXES:
                db.execute(f"DROP INDEX IF EXISTS {index}")
            for table in ("fresh", "gone"):
                db.execute(f"DELETE FROM {table} WHERE capability = ?", (capability,))

    def add_scan(self, rows: Iterable[tuple[bytes, str]]) -> None:
        with self.transaction() as db:
            db.executemany("INSERT INTO scanning.scan VALUES (?, ?)", rows)

    def end_scan(self) -> None:
        self._db.execute("CREATE INDEX IF NOT EXISTS scanning.scan_row ON scan (row)")

    def new_rows(self, capability: str) -> Iterator[tuple[bytes, str]]:
        """The rows of this scan the published build did not read: (digest, content), in
        content order — a row's content starts with its raw ID, so one person's rows come
        together and the caller normalises each ID once. Read page by page from a temporary
        table: a cursor left open while the caller writes would keep the write-ahead log from
        being checkpointed, and it would grow with the table."""
        self._db.execute("DROP TABLE IF EXISTS temp.new_rows")
        self._db.execute(
            """CREATE TEMP TABLE new_rows AS SELECT DISTINCT s.row, s.content FROM scanning.scan s
               WHERE NOT EXISTS
               (SELECT 1 FROM rows r WHERE r.capability = ?1 AND r.row = s.row) ORDER BY s.content""",
            (capability,),
        )
        last = 0
        while page := self._db.execute(
            "SELECT rowid, row, content FROM temp.new_rows WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, _PAGE)
        ).fetchall():
            last = page[-1][0]
            yield from ((row, content) for _, row, content in page)
        self._db.execute("DROP TABLE temp.new_rows")

    def add_fresh(self, rows: Iterable[tuple[str, bytes, bytes | None, object, bytes]]) -> None:
        """New rows, each once (`new_rows` gives distinct rows); indexed by `end_fresh`."""
        self._db.executemany("INSERT INTO fresh VALUES (?, ?, ?, ?, ?)", rows)

    def end_fresh(self) -> None:
        self._db.execute("CREATE INDEX IF NOT EXISTS fresh_row ON fresh (capability, row)")
        self._db.execute("CREATE INDEX IF NOT EXISTS fresh_subject ON fresh (capability, subject)")

    def add_subjects(self, subjects: Iterable[tuple[bytes, bytes]]) -> None:
        self._db.executemany("INSERT OR IGNORE INTO subjects VALUES (?, ?)", subjects)

    def has_rows(self, capability: str) -> bool:
        """Whether a published build of `capability` read any row."""
        query = "SELECT 1 FROM rows WHERE capability = ? LIMIT 1"
        return self._db.execute(query, (capability,)).fetchone() is not None

    def published_rows(self, capability: str) -> Iterator[bytes]:
        """The digests of the rows the published build read, ascending, page by page (see
        `new_rows` on why no cursor stays open)."""
        after = b""
        query = "SELECT row FROM rows WHERE capability = ? AND row > ? ORDER BY row LIMIT ?"
        while page := self._db.execute(query, (capability, after, _DIGEST_PAGE)).fetchall():
            yield from (row for (row,) in page)
            after = page[-1][0]

    def add_gone(self, capability: str, rows: Iterable[bytes]) -> None:
        """Record published rows this scan no longer holds (found by a merge, not `find_gone`)."""
        with self.transaction() as db:
            db.executemany("INSERT OR IGNORE INTO gone VALUES (?, ?)", ((capability, row) for row in rows))

    def find_gone(self, capability: str) -> None:
        """Record the published rows this scan no longer holds."""
        self._db.execute(
            """INSERT OR IGNORE INTO gone SELECT r.capability, r.row FROM rows r WHERE r.capability = ?1
               AND NOT EXISTS (SELECT 1 FROM scanning.scan s WHERE s.row = r.row)""",
            (capability,),
        )

    # ---- changes ------------------------------------------------------------------------------

    def affected(self, capability: str) -> Iterator[tuple[bytes, list[tuple[object, bytes]]]]:
        """Each subject whose rows changed since the published build (a row new or gone), with
        its rows now (none if all are gone), in subject order."""
        self._db.execute("DROP TABLE IF EXISTS temp.touched")
        self._db.execute("CREATE TEMP TABLE touched (subject BLOB PRIMARY KEY)")
        self._db.execute("INSERT OR IGNORE INTO temp.touched " + _TOUCHED, (capability,))
        # Page by page over the touched subjects (see `new_rows` on why no cursor stays open).
        after = b""
        while True:
            self._db.execute("DROP TABLE IF EXISTS temp.page")
            self._db.execute(
                "CREATE TEMP TABLE page AS SELECT subject FROM temp.touched WHERE subject > ? ORDER BY subject LIMIT ?",
                (after, _PAGE),
            )
            rows = self._db.execute(_EVIDENCE, (capability,)).fetchall()
            if not rows:
                return
            yield from _grouped(rows)
            after = rows[-1][0]

    def member_token(self, capability: str, subject: bytes) -> bytes | None:
        row = self._db.execute(
            "SELECT token FROM members WHERE capability = ? AND subject = ?", (capability, subject)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def add_changes(self, changes: Iterable[tuple[str, bytes, str, bytes | None]]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO changes VALUES (?, ?, ?, ?)", changes)

    def unevaluated(self, after: bytes, limit: int) -> list[tuple[bytes, bytes, list[str]]]:
        """Up to `limit` subjects (after `after`, in order) that some capability adds and that
        have no token yet: (subject, OPRF input, capabilities)."""
        rows = self._db.execute(
            """SELECT c.subject, s.sealed, group_concat(c.capability, ' ') FROM changes c
               JOIN subjects s ON s.subject = c.subject
               WHERE c.kind = 'add' AND c.token IS NULL AND c.subject > ?
               GROUP BY c.subject ORDER BY c.subject LIMIT ?""",
            (after, limit),
        ).fetchall()
        return [(subject, self.open(subject, sealed), caps.split(" ")) for subject, sealed, caps in rows]

    def set_tokens(self, tokens: Iterable[tuple[bytes, str, bytes]]) -> None:
        with self.transaction() as db:
            db.executemany("UPDATE changes SET token = ? WHERE capability = ? AND subject = ?", tokens)

    def changed_tokens(self, capability: str, kind: str) -> TokenStream:
        """The tokens this run adds to (or removes from) `capability`'s set, streamed in order."""
        query = "SELECT token FROM changes WHERE capability = ? AND kind = ? ORDER BY token"

        def chunks() -> Iterator[bytes]:
            cursor = self._db.cursor().execute(query, (capability, kind))
            while part := cursor.fetchmany(CHUNK_TOKENS):
                yield b"".join(bytes(t) for (t,) in part)

        count, digest = 0, hashlib.sha256()
        for chunk in chunks():
            count += len(chunk) // TOKEN_BYTES
            digest.update(chunk)
        return TokenStream(count, digest.hexdigest(), chunks)

    def tokens(self, capability: str) -> list[bytes]:
        """The published set of `capability`, sorted."""
        query = "SELECT token FROM members WHERE capability = ? ORDER BY token"
        return [bytes(t) for (t,) in self._db.execute(query, (capability,))]

    def member_count(self, capability: str) -> int:
        return int(self._db.execute("SELECT count(*) FROM members WHERE capability = ?", (capability,)).fetchone()[0])

    # ---- published state ---------------------------------------------------------------------

    def base(self, capability: str) -> tuple[str, int] | None:
        row = self._db.execute("SELECT publication, version FROM bases WHERE capability = ?", (capability,)).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    def commit_capability(self, capability: str, publication: str, version: int, *, full: bool = False) -> None:
        """The gateway holds this run's set of `capability` as `publication` version `version`
        (`full`: a whole set, which the epoch's activation then needs): make it the published
        state, in one transaction."""
        with self.transaction() as db:
            db.execute(
                """INSERT OR REPLACE INTO members SELECT capability, subject, token FROM changes
                   WHERE capability = ? AND kind = 'add'""",
                (capability,),
            )
            db.execute(
                """DELETE FROM members WHERE capability = ?1 AND subject IN
                   (SELECT subject FROM changes WHERE capability = ?1 AND kind = 'remove')""",
                (capability,),
            )
            invalid = self.invalid(capability)
            db.execute(
                """DELETE FROM rows WHERE capability = ?1 AND row IN (SELECT row FROM gone WHERE capability = ?1)""",
                (capability,),
            )
            db.execute("INSERT OR IGNORE INTO rows SELECT * FROM fresh WHERE capability = ?", (capability,))
            db.execute("INSERT OR REPLACE INTO counts VALUES (?, ?)", (capability, invalid))
            db.execute("INSERT OR REPLACE INTO bases VALUES (?, ?, ?)", (capability, publication, version))
            db.execute("INSERT OR REPLACE INTO progress VALUES (?, 0, 0, '')", (f"published:{capability}",))
            if full:
                db.execute("INSERT OR REPLACE INTO progress VALUES (?, 0, 0, '')", (f"full:{capability}",))

    def invalid(self, capability: str) -> int:
        """Distinct rows with an ID that fails, once this run's changes are in (or after)."""
        if self.done(f"published:{capability}") is not None:
            row = self._db.execute("SELECT invalid FROM counts WHERE capability = ?", (capability,)).fetchone()
            return 0 if row is None else int(row[0])
        before = self._db.execute("SELECT invalid FROM counts WHERE capability = ?", (capability,)).fetchone()
        fresh = self._db.execute(
            "SELECT count(*) FROM fresh WHERE capability = ? AND subject IS NULL", (capability,)
        ).fetchone()[0]
        gone = self._db.execute(_INVALID_GONE, (capability,)).fetchone()[0]
        return (0 if before is None else int(before[0])) + int(fresh) - int(gone)
