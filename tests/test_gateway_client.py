"""The requester's gateway client tries transient failures again, within its attempts, and nothing else.

An in-memory transport (httpx.MockTransport) stands in for the gateway: connect errors are
tried again for every call; lost connections, timeouts and 502/503 only for calls safe to
repeat (reads, evaluations, lookups, failure reports, cancels); a 4xx never.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from requester.gateway_client import NO_RETRIES, GatewayClient, RetryPolicy
from xiezhi import errors
from xiezhi.wire import CreateMatchRequest, LookupBatch

QUICK = RetryPolicy(attempts=4, budget_seconds=60, first_wait_seconds=0, max_wait_seconds=0)
VIEW = {
    "request_id": "r-1",
    "model": "housing_fund",
    "status": "evaluating",
    "subject_count": 2,
    "scope": "330803",
    "reveals": [],
    "connectors": [],
    "created_at": "2026-06-01T09:30:00Z",
}
LOOKUP = LookupBatch(first_row=0, tokens={"housing_fund.balance_positive": [bytes(16)]})
CREATE = CreateMatchRequest(model="housing_fund", subject_count=2)


class Gateway:
    """Answers each call with the next of `answers`: a status code, or an exception to raise."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if answer >= 300:
            body = {"title": "x", "status": answer, "detail": "refused", "code": f"code_{answer}"}
            return httpx.Response(answer, json=body)
        if request.url.path.endswith("/lookups"):
            return httpx.Response(200, json={"rows": [{"row": 0, "clue": False, "flags": {}}]})
        return httpx.Response(200, json=VIEW)


def _client(gateway: Gateway, retry: RetryPolicy = QUICK) -> GatewayClient:
    return GatewayClient(
        "https://gateway.test", "token", retry=retry, transport=httpx.MockTransport(gateway), insecure_http=False
    )


def _lost() -> Exception:
    return httpx.RemoteProtocolError("Server disconnected without sending a response.")


def _refused() -> Exception:
    return httpx.ConnectError("Connection refused")


@pytest.mark.parametrize("failure", [503, 502, _lost(), _refused(), httpx.ReadTimeout("timed out")], ids=repr)
def test_a_repeatable_call_is_tried_again_after_a_transient_failure(failure: int | Exception) -> None:
    gateway = Gateway(failure, failure, 200)
    assert _client(gateway).view("r-1").request_id == "r-1"
    assert gateway.calls == 3
    lookup = Gateway(failure, 200)
    assert len(_client(lookup).lookup("r-1", LOOKUP).rows) == 1 and lookup.calls == 2


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, errors.InvalidInput),
        (404, errors.NotFound),
        (409, errors.Conflict),
        (429, errors.TooManyRequests),
        (500, errors.XiezhiError),
    ],
)
def test_a_refusal_is_never_tried_again(status: int, error: type[errors.XiezhiError]) -> None:
    gateway = Gateway(status, 200)
    with pytest.raises(error) as refused:
        _client(gateway).view("r-1")
    assert refused.value.code == f"code_{status}" and gateway.calls == 1


@pytest.mark.parametrize("failure", [503, _lost(), httpx.ReadTimeout("timed out")], ids=repr)
def test_a_call_not_safe_to_repeat_is_not_tried_again_once_sent(failure: int | Exception) -> None:
    gateway = Gateway(failure, 200)
    with pytest.raises(errors.Unavailable):
        _client(gateway).create(CREATE)
    assert gateway.calls == 1


def test_a_call_that_never_connected_is_tried_again_even_if_not_repeatable() -> None:
    gateway = Gateway(_refused(), 200)
    assert _client(gateway).create(CREATE).request_id == "r-1" and gateway.calls == 2


@pytest.mark.parametrize(
    ("make", "error"),
    [(lambda: 503, errors.Unavailable), (_refused, errors.Unavailable), (lambda: 502, errors.ConnectorError)],
)
def test_attempts_are_bounded_and_the_last_failure_is_raised(
    make: Callable[[], int | Exception], error: type[errors.XiezhiError]
) -> None:
    gateway = Gateway(*(make() for _ in range(6)))
    with pytest.raises(error):
        _client(gateway).view("r-1")
    assert gateway.calls == QUICK.attempts
    once = Gateway(make(), 200)
    with pytest.raises(error):
        _client(once, NO_RETRIES).view("r-1")
    assert once.calls == 1


def test_the_time_budget_ends_the_tries() -> None:
    gateway = Gateway(*([503] * 6))
    spent = RetryPolicy(attempts=6, budget_seconds=0, first_wait_seconds=0, max_wait_seconds=0)
    with pytest.raises(errors.Unavailable):
        _client(gateway, spent).view("r-1")
    assert gateway.calls == 1  # no try starts after the budget
