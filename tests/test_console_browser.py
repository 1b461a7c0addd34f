"""The auditor's console in a real headless Chromium, against a real stack.

A prosecutor runs a model on a Saturday night (so there is an anomaly to see) and makes a
denied request; then, in the browser: a prosecutor's token is turned away; an auditor signs
in, searches by user and by decision, opens an entry and sees its inclusion proof verified
by the page's own WebCrypto code, sees the anomaly flag and follows it, exports the search
as CSV. Then one byte of one entry is changed in the gateway's SQLite database behind its
back, and after a reload the banner names exactly that entry. A system administrator signs
in and sees each connector's health: one stopped connector marked unreachable, reachable
again once it restarts.

Uses Debian's Chromium (/usr/bin/chromium) through Playwright's Python driver; nothing is
downloaded ($XIEZHI_CHROMIUM names another build). Without Chromium the test skips, except
in CI (CI=true), where it fails.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from audit_log.merkle import LeafList, inclusion_proof, leaf_hash, root_of
from audit_log.note import generate_signer
from gateway.quotas import CHINA
from requester.job import match_file
from requester.protocol import MatchSpec
from tests.polling import wait_until
from tests.stack import CONNECTORS, HTTP, LEGAL_BASIS, PURPOSE, Clock, Stack, session_pki, start_stack

pytestmark = pytest.mark.integration  # every test runs a stack and Chromium

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SATURDAY_NIGHT = datetime(2026, 6, 6, 23, 0, tzinfo=CHINA)
PROSECUTOR = "prosecutor-330803-41"
AUDITOR = "auditor-330800-41"
# A bound on each wait for the page (it ends a stuck test), not a speed check: generous for a loaded machine.
TIMEOUT_MS = 60_000
# Counts the answers the page has read (Response.json), so a test can wait until it handled one.
COUNT_ANSWERS_READ = """() => {
  const json = Response.prototype.json;
  window.answersRead = 0;
  Response.prototype.json = function () {
    return json.call(this).finally(() => { window.answersRead += 1; });
  };
}"""


def _chromium() -> str | None:
    """The browser to drive: $XIEZHI_CHROMIUM if set, else Debian's, else any `chromium` on PATH."""
    configured = os.environ.get("XIEZHI_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    return CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI must run the browser test (scripts/ensure-chromium installs Chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[dev]')")
    executable = _chromium()
    if executable is None:
        where = os.environ.get("XIEZHI_CHROMIUM") or CHROMIUM
        _missing(f"Chromium is not installed at {where} (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def stack(tmp_path: Path, generated: Path) -> Iterator[Stack]:
    clock = Clock(SATURDAY_NIGHT.astimezone(UTC))
    running = start_stack(tmp_path / "stack", clock, audit={"checkpoint_every_seconds": 0.2})
    try:
        running.publish(generated, connectors=("court",))
        token = running.user_token(["prosecutor"], subject=PROSECUTOR)
        spec = MatchSpec("repeated_debtor", PURPOSE, LEGAL_BASIS)
        match_file(running.gateway_url, token, spec, generated / "subjects.csv", tmp_path / "report.csv",
                   show_progress=False, workers=1)  # fmt: skip
        bad = {"model": "repeated_debtor", "subject_count": 5, "purpose": "查一下", "legal_basis": LEGAL_BASIS}
        headers = {"authorization": f"Bearer {token}"}
        denied = HTTP.post(f"{running.gateway_url}/v1/requests", json=bad, headers=headers)
        assert denied.status_code == 403
        yield running
    finally:
        running.stop()


def _api(stack: Stack, path: str, token: str, **params: Any) -> httpx.Response:
    return HTTP.get(stack.gateway_url + path, params=params, headers={"authorization": f"Bearer {token}"})


def _checkpointed(stack: Stack, token: str, seq: int) -> None:
    """Wait (bounded) until the writer has signed a checkpoint covering `seq`."""

    def covered() -> bool:
        return int(_api(stack, "/v1/audit/checkpoint", token).json().get("size", 0)) > seq

    wait_until(covered, f"a checkpoint covering entry {seq}")


def _page(browser: Any, stack: Stack, client: str = "auditor", **options: Any) -> Any:
    """A page whose browser presents client system `client`'s certificate to the gateway.

    The development CA is not in Chromium's trust store, so certificate errors are ignored for
    this page: the connection is still TLS, and the gateway still requires and checks the
    client certificate (without it the handshake fails: see the test below)."""
    files = session_pki().client(client)
    certificate = {"origin": stack.gateway_url, "certPath": str(files.cert), "keyPath": str(files.key)}
    context = browser.new_context(client_certificates=[certificate], ignore_https_errors=True, **options)
    return context.new_page()


def test_the_console_is_served_only_over_tls_with_a_client_certificate(browser: Any, stack: Stack) -> None:
    assert stack.gateway_url.startswith("https://")
    bare = browser.new_context(ignore_https_errors=True).new_page()
    with pytest.raises(Exception, match="ERR_"):
        bare.goto(f"{stack.gateway_url}/console/", timeout=TIMEOUT_MS)
    bare.context.close()
    page = _page(browser, stack)
    assert page.goto(f"{stack.gateway_url}/console/", timeout=TIMEOUT_MS).status == 200
    assert page.evaluate("window.isSecureContext") is True
    page.context.close()


def _sign_in(page: Any, stack: Stack, token: str) -> None:
    page.goto(f"{stack.gateway_url}/console/")
    page.fill("#token", token)
    page.click("#login-button")


def _column(page: Any, index: int) -> list[str]:
    """The texts of one column once the search under way has answered."""
    from playwright.sync_api import expect

    expect(page.locator("#search-status")).to_contain_text("entries shown", timeout=TIMEOUT_MS)
    cells: list[str] = page.locator(f"#results tbody tr td:nth-child({index})").all_text_contents()
    return cells


def _agreement_cases() -> list[dict[str, Any]]:
    """Every (index, size) up to 17 leaves: proofs and roots from the log's own Python code."""
    cases = []
    for size in range(1, 18):
        leaves = [leaf_hash(f"entry {i}".encode()) for i in range(size)]
        root = root_of(leaves)
        for index in range(size):
            proof = inclusion_proof(LeafList(leaves), index, size)
            cases.append(
                {"index": index, "size": size, "leaf": leaves[index].hex(), "proof": [h.hex() for h in proof],
                 "root": root.hex()}
            )  # fmt: skip
    return cases


# Runs the console's own proof code on the Python log's proofs, and parses verifier keys
# whose base64 holds '+' (a key id check that splits on every '+' would refuse them).
AGREEMENT = """async ([cases, keys]) => {
  const hex = (h) => Uint8Array.from(h.match(/../g) || [], (b) => parseInt(b, 16));
  const out = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const roots = [];
  for (const c of cases) {
    roots.push(out(await XiezhiProof.rootFromInclusion(c.index, c.size, hex(c.leaf), c.proof.map(hex))));
  }
  let refused = 0;
  try { await XiezhiProof.rootFromInclusion(1, 4, hex(cases[0].leaf), []); } catch (e) { refused += 1; }
  const names = [];
  for (const key of keys) names.push((await XiezhiProof.parseVerifierKey(key, 1)).name);
  return { roots, refused, names };
}"""


def _keys_with_plus() -> list[str]:
    keys: list[str] = []
    while len(keys) < 3:
        key = str(generate_signer("xiezhi.test/console").verifier())
        if "+" in key.split("+", 2)[2]:
            keys.append(key)
    return keys


def test_a_prosecutor_cannot_use_the_console(browser: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    prosecutor = stack.user_token(["prosecutor"], subject=PROSECUTOR)
    assert _api(stack, "/v1/audit/entries", prosecutor).status_code == 403
    page = _page(browser, stack)
    _sign_in(page, stack, prosecutor)
    expect(page.locator("#login-message")).to_contain_text("for security auditors", timeout=TIMEOUT_MS)
    expect(page.locator("#app")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    # A token the gateway refuses (401) sends the user back to sign in again.
    page.fill("#token", "not-a-token")
    page.click("#login-button")
    expect(page.locator("#login-message")).to_contain_text("sign in again", timeout=TIMEOUT_MS)
    expect(page.locator("#app")).to_be_hidden()
    page.context.close()


def test_the_auditor_console_end_to_end(browser: Any, stack: Stack, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    auditor = stack.user_token(["security_auditor"], subject=AUDITOR, org="330800")
    created = _api(stack, "/v1/audit/entries", auditor, kind="request.created", user=PROSECUTOR).json()["entries"]
    target = created[0]["seq"]
    _checkpointed(stack, auditor, target)
    page = _page(browser, stack, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    _sign_in(page, stack, auditor)
    expect(page.locator("#banner")).to_contain_text("Log verified", timeout=TIMEOUT_MS)
    expect(page.locator("#banner")).to_have_class("banner ok")
    expect(page.locator("#alarm")).to_be_hidden()

    # The page's proof code agrees with the log's on every proof shape.
    cases = _agreement_cases()
    checked = page.evaluate(AGREEMENT, [cases, _keys_with_plus()])
    assert checked["roots"] == [c["root"] for c in cases] and checked["refused"] == 1
    assert checked["names"] == ["xiezhi.test/console"] * 3

    # Search by user, then by decision.
    page.fill("#f-user", PROSECUTOR)
    page.click("#search-button")
    actors = _column(page, 4)
    assert actors and set(actors) == {PROSECUTOR}
    assert {"request.created", "lookup", "result.read", "decision"} <= set(_column(page, 3))
    # The unfiltered search the clear button starts answers only after the search by
    # decision: its late answer must not replace the newer one's rows.
    held: list[Any] = []
    page.route("**/v1/audit/entries?*", lambda route: held.append(route))
    page.click("#clear-button")
    page.fill("#f-decision", "deny")
    page.click("#search-button")
    # Waiting in the page (not in Python) lets the driver deliver the held requests.
    wait_until(lambda: len(held) >= 2, "both searches held", pause=lambda s: page.wait_for_timeout(s * 1000))
    assert len(held) == 2 and "decision=deny" in held[1].request.url
    held[1].continue_()
    outcomes = _column(page, 7)
    assert outcomes and set(outcomes) == {"deny"}
    page.evaluate(COUNT_ANSWERS_READ)
    with page.expect_response(lambda r: r.url == held[0].request.url, timeout=TIMEOUT_MS):
        held[0].continue_()
    # Once the page has read the late answer, what it does with it (drop it, or wrongly draw
    # it) has run too: that follows in the same chain of promise callbacks.
    page.wait_for_function("() => window.answersRead >= 1", timeout=TIMEOUT_MS)
    assert set(_column(page, 7)) == {"deny"}
    page.unroute("**/v1/audit/entries?*")

    # The policy's changes, newest first: the seed the gateway recorded at its first start.
    seeded = page.locator("#policy-changes li").last
    expect(seeded).to_contain_text("seed", timeout=TIMEOUT_MS)

    # One click on a request id in the list shows that request's whole story.
    page.click("#clear-button")
    page.fill("#f-user", PROSECUTOR)
    page.select_option("#f-kind", "lookup")
    page.click("#search-button")
    expect(page.locator("#search-status")).to_contain_text("entries shown", timeout=TIMEOUT_MS)
    story_of = created[0]["request_id"]
    page.locator(f"#results tbody tr td.story[title^='{story_of}']").first.click()
    expect(page.locator("#f-request")).to_have_value(story_of, timeout=TIMEOUT_MS)
    kinds = set(_column(page, 3))
    assert {"decision", "request.created", "relay", "lookup", "result.read"} <= kinds, kinds
    assert set(_column(page, 11)) == {story_of[:8]}

    # The auditor's own reads (every search is a logged decision) are folded by default.
    page.click("#clear-button")
    page.fill("#f-user", AUDITOR)
    page.click("#search-button")
    expect(page.locator("#search-status")).to_contain_text("of your own reads folded", timeout=TIMEOUT_MS)
    own = page.locator("#results tbody tr.own")
    assert own.count() > 0 and not any(own.nth(i).is_visible() for i in range(own.count()))
    page.check("#show-own")
    expect(own.first).to_be_visible(timeout=TIMEOUT_MS)
    page.uncheck("#show-own")
    page.fill("#f-user", "")

    # Open the request's creation entry: the browser checks its inclusion proof itself.
    page.click("#clear-button")
    page.fill("#f-request", created[0]["request_id"])
    page.select_option("#f-kind", "request.created")
    page.click("#search-button")
    page.click(f"#results tbody tr[data-seq='{target}']")
    proof = page.locator("#proof")
    expect(proof).to_contain_text("Inclusion proof verified against checkpoint", timeout=TIMEOUT_MS)
    expect(proof).to_contain_text("signed by xiezhi.dev/audit")
    stored = json.loads(page.locator("#detail-entry").text_content())
    assert stored["seq"] == target
    # Rendered as fields, not JSON: the purpose, the kind, each detail key on its own line.
    fields = page.locator("#detail-fields")
    expect(fields.locator("dd[data-field='kind']")).to_have_text("request.created")
    expect(fields.locator("dd[data-field='purpose']")).to_have_text(PURPOSE)
    expect(fields.locator("dd[data-field='detail.subjects']")).to_have_text(str(stored["detail"]["subjects"]))
    assert page.locator("#detail details").get_attribute("open") is None  # the JSON stays folded

    # The Saturday-night run is flagged; following the flag shows exactly its entries.
    flag = page.locator("#anomalies li[data-code='outside_working_hours']")
    expect(flag).to_contain_text(PROSECUTOR, timeout=TIMEOUT_MS)
    expect(flag).to_contain_text("Saturday")
    expect(flag.locator(".explain")).to_contain_text("工作时间以外")  # what the flag means, in Chinese
    # Triaged in the page, with a note: the flag then says so, and the log holds the triage.
    expect(flag.locator(".triage")).to_contain_text("未处理")
    flag.locator(".triage-form select").select_option("escalated")
    flag.locator(".triage-form input").fill("周六深夜批量查询，已转纪检部门核实")
    flag.locator(".triage-form button").click()
    triaged = page.locator("#anomalies li[data-code='outside_working_hours']").first
    expect(triaged.locator(".triage")).to_contain_text("已上报", timeout=TIMEOUT_MS)
    expect(triaged.locator(".triage")).to_contain_text(AUDITOR)
    logged = _api(stack, "/v1/audit/entries", auditor, kind="anomaly.triage").json()["entries"]
    assert [(e["actor"], e["outcome"]) for e in logged] == [(AUDITOR, "escalated")]
    assert "纪检" not in json.dumps(logged)  # the note's text stays out of the log (its digest is in)
    flag.click()
    expect(page.locator("#seq-filter")).to_be_visible()
    flagged = [f for f in _api(stack, "/v1/audit/anomalies", auditor).json() if f["code"] == "outside_working_hours"]
    expect(page.locator("#results tbody tr.flagged")).to_have_count(len(flagged[0]["seqs"]), timeout=TIMEOUT_MS)
    shown = sorted(int(s) for s in _column(page, 1))
    assert shown == sorted(flagged[0]["seqs"])

    # Export the flagged entries; the file holds exactly them, and the export is itself logged.
    with page.expect_download(timeout=TIMEOUT_MS) as download:
        page.click("#export-button")
    saved = tmp_path / "export.csv"
    download.value.save_as(saved)
    raw = saved.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert sorted(int(r["seq"]) for r in rows) == shown and {r["actor"] for r in rows} == {PROSECUTOR}
    expect(page.locator("#search-status")).to_contain_text(f"Exported {len(rows)} entries")
    exports = _api(stack, "/v1/audit/entries", auditor, kind="audit.export", user=AUDITOR).json()["entries"]
    assert [e["detail"]["rows"] for e in exports] == [len(rows)]

    # A witness refuses the log's checkpoint (raised here through the running gateway's own
    # alarm service, as its witnessing does): a red banner names it after a reload.
    services = stack.servers[-1].app.state.services
    services.alarms.raise_alarm("witness_refusal", "court", "witness_ahead", "witness court has cosigned a larger log")
    page.reload()
    alarm = page.locator("#alarm")
    expect(alarm).to_contain_text("court — witness court has cosigned a larger log [witness_ahead]", timeout=TIMEOUT_MS)
    expect(alarm).to_have_class("banner bad")

    # Change one byte of one entry behind the gateway's back: the banner names that entry.
    with sqlite3.connect(stack.root / "gateway" / "gateway.sqlite") as db:
        db.execute("DROP TRIGGER audit_entries_no_update")
        entry = bytes(db.execute("SELECT entry FROM audit_entries WHERE seq = ?", (target,)).fetchone()[0])
        at = entry.index(b'"subjects":') + len(b'"subjects":')
        changed = entry[:at] + bytes([entry[at] ^ 0x01]) + entry[at + 1 :]  # one digit of the count
        db.execute("UPDATE audit_entries SET entry = ? WHERE seq = ?", (changed, target))
    page.reload()
    banner = page.locator("#banner")
    expect(banner).to_contain_text(f"Tampering detected at entry {target}:", timeout=TIMEOUT_MS)
    expect(banner).to_have_class("banner bad")
    page.fill("#f-request", created[0]["request_id"])
    page.select_option("#f-kind", "request.created")
    page.click("#search-button")
    page.click(f"#results tbody tr[data-seq='{target}']")
    expect(proof).to_contain_text("Inclusion proof FAILED", timeout=TIMEOUT_MS)
    expect(proof).to_have_class("proof bad")
    assert errors == []
    page.context.close()


def test_the_system_administrator_sees_each_connectors_health(browser: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    admin = stack.user_token(["system_admin"], subject="sysadmin-330000-01", org="330000")
    page = _page(browser, stack, client="admin")
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    _sign_in(page, stack, admin)
    status = page.locator("#system-status")
    expect(status).to_contain_text(f"All {len(CONNECTORS)} connectors reachable", timeout=TIMEOUT_MS)
    expect(page.locator("#app")).to_be_hidden()
    rows = page.locator("#connectors tbody tr")
    expect(rows).to_have_count(len(CONNECTORS))
    court = page.locator("#connectors tbody tr[data-connector='court']")
    expect(court).to_have_attribute("data-reachable", "true")
    expect(court.locator("td:nth-child(3)")).to_have_text("1")  # its published index's epoch
    expect(court.locator("td:nth-child(4)")).to_contain_text(" s)")  # the age, readable and in seconds
    expect(page.locator("#connectors tbody tr[data-connector='tax'] td:nth-child(4)")).to_contain_text("no index")

    stack.stop_connector("tax")
    page.click("#system-refresh")
    tax = page.locator("#connectors tbody tr[data-connector='tax']")
    expect(tax).to_have_class("unreachable", timeout=TIMEOUT_MS)
    expect(tax.locator("td:nth-child(2)")).to_have_text("✗ 不可达 · unreachable")
    expect(status).to_contain_text(f"1 of {len(CONNECTORS)} connectors unreachable: tax")
    expect(status).to_have_class("message error")

    stack.start_connector("tax")
    page.click("#system-refresh")
    expect(status).to_contain_text(f"All {len(CONNECTORS)} connectors reachable", timeout=TIMEOUT_MS)
    expect(tax).to_have_attribute("data-reachable", "true")
    shown = page.locator("#system").inner_text()
    assert admin not in shown and "sysadmin-330000-01" not in shown
    assert errors == []
    page.context.close()
