"""The build state's queries (`connectors.build_state`): how SQLite runs the one that gathers
the evidence of the subjects a change touched.

An incremental build reads the rows of a few hundred touched subjects out of millions; read
the wrong way round (every row of the capability, the page of subjects scanned for each) it
cost more than the rest of the build. The plan must look each subject of the page up in the
indexes."""

from __future__ import annotations

from pathlib import Path

from connectors import build_state
from connectors.build_state import BuildState, state_key


def test_the_evidence_of_touched_subjects_is_looked_up_by_subject(tmp_path: Path) -> None:
    state = BuildState(tmp_path / "state.sqlite", state_key(bytes(32)))
    db = state._db
    rows = [("c", n.to_bytes(16, "big"), (n // 4).to_bytes(16, "big"), None, b"v") for n in range(20_000)]
    db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?)", rows)
    db.executemany("INSERT INTO fresh VALUES (?, ?, ?, ?, ?)", rows[:2_000])
    state.end_fresh()
    db.execute("CREATE TEMP TABLE page (subject BLOB)")
    db.executemany("INSERT INTO temp.page VALUES (?)", [(n.to_bytes(16, "big"),) for n in range(0, 600, 2)])
    plan = [detail for *_, detail in db.execute("EXPLAIN QUERY PLAN " + build_state._EVIDENCE, ("c",))]
    assert "SEARCH r USING INDEX rows_subject (capability=? AND subject=?)" in plan, plan
    assert "SEARCH f USING INDEX fresh_subject (capability=? AND subject=?)" in plan, plan
    # And finds each page subject's rows: four published, and four fresh below subject 500.
    found = db.execute(build_state._EVIDENCE, ("c",)).fetchall()
    assert len(found) == 300 * 4 + 250 * 4
    state.close()


def test_the_rows_gone_are_looked_up_by_their_key(tmp_path: Path) -> None:
    state = BuildState(tmp_path / "state.sqlite", state_key(bytes(32)))
    db = state._db
    db.executemany(
        "INSERT INTO rows VALUES (?, ?, ?, ?, ?)",
        [("c", n.to_bytes(16, "big"), b"s", None, b"v") for n in range(20_000)],
    )
    db.executemany("INSERT INTO gone VALUES (?, ?)", [("c", n.to_bytes(16, "big")) for n in range(0, 20_000, 100)])
    for query in (build_state._TOUCHED, build_state._INVALID_GONE):
        plan = [detail for *_, detail in db.execute("EXPLAIN QUERY PLAN " + query, ("c",))]
        assert "SEARCH r USING INDEX sqlite_autoindex_rows_1 (capability=? AND row=?)" in plan, plan
    assert db.execute(build_state._INVALID_GONE, ("c",)).fetchone() == (0,)
    assert len(db.execute(build_state._TOUCHED, ("c",)).fetchall()) == 1  # every gone row had subject b"s"
    state.close()
