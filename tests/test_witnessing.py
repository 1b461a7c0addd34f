"""The gateway's witnessing (`gateway.witnessing`) against a verification running at the same
time: a witness's view is read only once the cosignature it carries has been kept.

The witness is the real `audit_log.witness.Witness`; the HTTP between the gateway and it is
httpx's MockTransport (the end-to-end tests run it over mutual TLS), so the test can hold the
witness's answer back after the witness has cosigned, as a slow network would."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from audit_log import CheckpointSigner
from audit_log.note import COSIGNATURE_V1
from audit_log.witness import Witness
from audit_log.witness_policy import open_signed
from gateway.links import ConnectorLinks
from gateway.witnessing import Witnessing
from tests.polling import WAIT_SECONDS
from tests.test_audit import AT, LOG_KEY, event, new_log
from tests.test_witness_policy import WITNESS_KEYS


def test_a_verification_reads_a_witness_only_after_its_cosignature_is_kept(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    log.append_many([event(n) for n in range(5)])
    size = CheckpointSigner(log, LOG_KEY, lambda: AT).issue()
    assert size == 5
    witness = Witness(WITNESS_KEYS["court"], LOG_KEY.verifier(), tmp_path / "court.json", clock=lambda: AT.timestamp())
    cosigned, answer = threading.Event(), threading.Event()

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":  # the newest checkpoint the witness cosigned
            note = witness.latest_note()
            return httpx.Response(200, text=note) if note else httpx.Response(404)
        line = witness.add_checkpoint(request.content.decode())
        cosigned.set()
        answer.wait(WAIT_SECONDS)  # the answer is slow to come back
        return httpx.Response(200, text=line)

    links = ConnectorLinks(
        {"court": "http://court.test"}, None, timeout_seconds=5.0, insecure_http=True,
        transport=httpx.MockTransport(handle),
    )  # fmt: skip
    witnessing = Witnessing(log, {"court": WITNESS_KEYS["court"].verifier(COSIGNATURE_V1)}, links, lambda: AT,
                            LOG_KEY.verifier())  # fmt: skip
    exchange = threading.Thread(target=witnessing.cosign, args=("court", size))
    exchange.start()
    assert cosigned.wait(WAIT_SECONDS)
    views: list[list[str]] = []
    reader = threading.Thread(target=lambda: views.append([v.note for v in witnessing.held_views()]))
    reader.start()
    reader.join(0.5)
    assert reader.is_alive(), "the witness's view was read while its cosignature was on its way"
    answer.set()
    exchange.join(WAIT_SECONDS)
    reader.join(WAIT_SECONDS)
    (notes,) = views
    (note,) = notes
    held = open_signed(note, LOG_KEY.verifier(), {"court": WITNESS_KEYS["court"].verifier(COSIGNATURE_V1)}, "court")
    assert held.checkpoint.size == size and held.cosigners == {"court"}
    # What the verification then reads from the log holds that cosignature.
    assert [c.witness for c in log.cosignatures(size)] == ["court"]
    links.close()
