"""The department head's and the prosecutor's views of the console, in a real headless
Chromium, against a real stack.

A prosecutor's run of a tier-3 model waits; the head signs in, reads the request (model and
capabilities in Chinese with their tiers, purpose, legal basis, how many subjects, why it
needs approval, the list's SHA-256, China time), approves it with a reason, and the waiting
run proceeds to its report, which names the approver. A prosecutor signs in and sees their
requests (status, progress, clues), their quota today and the models they may run, and
downloads a completed request's result. Nothing on either page overflows at 1366 px.

Uses Chromium as tests/test_console_browser.py does (its `browser` fixture).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devkit.environment import REPO_ROOT
from devkit.reference import read_report
from requester.gateway_client import GatewayClient
from requester.job import MatchSummary, match_file
from requester.protocol import MatchSpec
from tests.agreement import assert_report_agrees
from tests.polling import wait_until
from tests.stack import LEGAL_BASIS, PURPOSE, Clock, Stack, session_pki, start_stack
from tests.test_console_browser import TIMEOUT_MS, _api, _page, _sign_in, browser  # noqa: F401 (a fixture)
from xiezhi.supervision import ModelCatalog
from xiezhi.wire import RequestStatus

pytestmark = pytest.mark.integration  # a stack and Chromium

PROSECUTOR = "prosecutor-330803-51"
HEAD = "dept-head-330803-51"
WIDTH = 1366
CATALOG = ModelCatalog.load(REPO_ROOT / "policies" / "models")


@pytest.fixture
def stack(tmp_path: Path, generated: Path) -> Iterator[Stack]:
    running = start_stack(tmp_path / "stack", Clock(datetime.now(UTC)))
    try:
        running.publish(generated, connectors=("civil_affairs",))
        yield running
    finally:
        running.stop()


def _run_waiting(stack: Stack, generated: Path, out: Path) -> tuple[threading.Thread, list[MatchSummary | Exception]]:
    """The prosecutor's run of spouse_property (tier 3: it waits), in a thread that waits for
    the decision by reading its request's status, as `xiezhi match` does."""
    token = stack.user_token(["prosecutor"], subject=PROSECUTOR)
    client = GatewayClient(stack.gateway_url, token, tls=session_pki().client("requester"))
    outcome: list[MatchSummary | Exception] = []

    def decided(request_id: str) -> None:
        wait_until(lambda: client.view(request_id).status != RequestStatus.PENDING_APPROVAL, "the head's decision",
                   seconds=TIMEOUT_MS / 1000)  # fmt: skip

    def run() -> None:
        try:
            spec = MatchSpec("spouse_property", PURPOSE, LEGAL_BASIS)
            outcome.append(match_file(stack.gateway_url, token, spec, generated / "subjects.csv", out,
                                      show_progress=False, workers=1, on_pending=decided))  # fmt: skip
        except Exception as failure:  # reported by the test
            outcome.append(failure)

    thread = threading.Thread(target=run, name="prosecutor-run")
    thread.start()
    return thread, outcome


def test_a_department_head_approves_from_the_web_and_the_run_proceeds(
    browser: Any,  # noqa: F811 (the fixture imported above)
    stack: Stack,
    generated: Path,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    out = tmp_path / "clues.csv"
    thread, outcome = _run_waiting(stack, generated, out)
    head = stack.user_token(["dept_head"], subject=HEAD, org="330803")
    wait_until(lambda: len(_api(stack, "/v1/approvals", head).json()) == 1, "the request waiting for approval")
    (waiting,) = _api(stack, "/v1/approvals", head).json()

    page = _page(browser, stack, client="requester", viewport={"width": WIDTH, "height": 900})
    _sign_in(page, stack, head)
    card = page.locator(f"article.approval[data-request='{waiting['request_id']}']")
    expect(card).to_be_visible(timeout=TIMEOUT_MS)
    text = card.inner_text()
    listed = generated / "subjects.csv"
    for shown in (
        "配偶财产线索",  # the model's title
        "现为已婚（最近一次登记为结婚）",  # a capability's title, as the connector publishes it
        "三级 高度敏感",
        PROSECUTOR,
        "330803",
        PURPOSE,
        LEGAL_BASIS,
        str(waiting["subject_count"]),
        "涉及三级（高度敏感）数据",  # why it needs approval
        hashlib.sha256(listed.read_bytes()).hexdigest(),  # the list's SHA-256, as the client stated it
        _china(waiting["requested_at"]),
    ):
        assert shown in text, shown
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    clipped = page.evaluate(
        "[...document.querySelectorAll('.approval dd, .approval li')].filter(e => e.scrollWidth > e.clientWidth + 1)"
        ".length"
    )
    assert clipped == 0
    page.screenshot(path=str(tmp_path / "approvals-1366.png"), full_page=True)

    card.locator("button.approve").click()  # no reason yet: refused on the page
    expect(card.locator(".decision .message")).to_contain_text("请填写理由", timeout=TIMEOUT_MS)
    card.locator("textarea.reason").fill("同意核查，已核对名单")
    card.locator("button.approve").click()
    expect(page.locator("#approvals-message")).to_contain_text("已批准", timeout=TIMEOUT_MS)

    thread.join(TIMEOUT_MS / 1000)
    (summary,) = outcome
    assert isinstance(summary, MatchSummary), summary
    about, _ = read_report(out)
    assert (about["审批人"], about["请求编号"]) == (HEAD, waiting["request_id"])
    assert_report_agrees(generated, CATALOG.get("spouse_property"), out)

    page.select_option("#approvals-status", "approved")
    decided = page.locator(f"article.approval[data-request='{waiting['request_id']}']")
    expect(decided).to_contain_text("同意核查，已核对名单", timeout=TIMEOUT_MS)
    expect(decided).to_contain_text(HEAD)
    page.context.close()


def _china(iso: str) -> str:
    """A time as the console shows it: China time, seconds, a space between date and time."""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC) + timedelta(hours=8)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def test_a_prosecutor_sees_their_requests_quota_and_models_and_downloads_a_result(
    browser: Any,  # noqa: F811 (the fixture imported above)
    stack: Stack,
    generated: Path,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    token = stack.user_token(["prosecutor"], subject=PROSECUTOR)
    spec = MatchSpec("spouse_property", PURPOSE, LEGAL_BASIS)
    summary = match_file(stack.gateway_url, token, spec, generated / "subjects.csv", tmp_path / "clues.csv",
                         show_progress=False, workers=1, on_pending=stack.approver())  # fmt: skip
    me = _api(stack, "/v1/me", token).json()

    page = _page(browser, stack, client="requester", viewport={"width": WIDTH, "height": 900}, accept_downloads=True)
    _sign_in(page, stack, token)
    row = page.locator(f"#requests tr[data-request='{summary.request_id}']")
    expect(row).to_be_visible(timeout=TIMEOUT_MS)
    expect(row).to_contain_text("已完成")
    expect(row).to_contain_text("配偶财产线索")
    expect(row.locator("td.clues")).to_have_text(str(summary.clues))
    expect(row).to_contain_text(f"{summary.rows} / {summary.rows}")
    quota = me["quota"]
    assert quota["used_today"] == summary.rows  # what the run spent
    expect(page.locator("#quota")).to_contain_text(f"剩余 {quota['remaining_today']} / {quota['subjects_per_day']}")
    model = page.locator("article.model[data-model='spouse_property']")
    expect(model).to_contain_text("可运行")
    expect(model).to_contain_text("近年离婚登记 · 三级 高度敏感")
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    page.screenshot(path=str(tmp_path / "requester-1366.png"), full_page=True)

    with page.expect_download(timeout=TIMEOUT_MS) as downloading:
        row.locator("button.download").click()
    saved = tmp_path / "result.csv"
    downloading.value.save_as(saved)
    about, table = read_report(saved)
    assert about["请求编号"] == summary.request_id and about["模型名称"] == "配偶财产线索"
    assert table[0] == ["序号", "线索", "现为已婚（最近一次登记为结婚）", "近年离婚登记"]
    assert len(table) - 1 == summary.rows and sum(r[1] == "是" for r in table[1:]) == summary.clues
    # The same flags, row for row, as the report the CLI wrote from the list.
    _, report = read_report(tmp_path / "clues.csv")
    checked = [r for r in report[1:] if r[0] in ("是", "否")]
    assert [r[1:] for r in table[1:]] == [[r[0], *r[4:]] for r in checked]
    page.context.close()
