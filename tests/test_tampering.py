"""A connector that evaluates under a key other than the one it published is caught.

The requester verifies every batch's DLEQ proof against the published public key; a
connector that answers with any other key — a wrong, stale or malicious evaluation — fails
the proof, and the client refuses to produce a report.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from requester.job import match_file
from requester.protocol import MatchSpec
from tests.stack import LEGAL_BASIS, PURPOSE, Stack
from xiezhi import oprf
from xiezhi.errors import ProofError


def test_evaluation_under_another_key_fails_proof_verification(
    fresh_stack: Stack, generated: Path, tmp_path: Path
) -> None:
    fresh_stack.publish(generated, connectors=("court",))
    # The connector's serving process has not loaded its key yet; swap the file under it.
    key_file = fresh_stack.key_dir("court") / "epoch-0001.key"
    key_file.write_bytes(oprf.generate_key_pair(oprf.Mode.VOPRF).sk)
    out = tmp_path / "report.csv"
    with pytest.raises(ProofError):
        match_file(
            fresh_stack.gateway_url,
            fresh_stack.user_token(["prosecutor"]),
            MatchSpec("litigated_claims", PURPOSE, LEGAL_BASIS),
            generated / "subjects.csv",
            out,
            show_progress=False,
            workers=1,
        )
    assert not out.exists(), "no report may be written from an unverified evaluation"
