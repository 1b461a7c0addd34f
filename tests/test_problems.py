"""xiezhi.problems: how a request that fails validation is answered, without echoing what it sent."""

from __future__ import annotations

from xiezhi.problems import responses, validation_problem

SHAPED = "110101199003077777"


def test_a_bad_body_is_invalid_body_naming_fields_not_values() -> None:
    title, detail, code = validation_problem(
        [
            {"loc": ("body", "tokens", f"court.x{SHAPED}", "[key]"), "msg": "String should match pattern"},
            {"loc": ("body", "blinded_elements", 3), "msg": "Value error, not valid base64"},
        ]
    )
    assert (title, code) == ("InvalidInput", "invalid_body")
    assert SHAPED not in detail and "court.x" not in detail  # a mapping's key is the caller's text
    assert "body.tokens.*" in detail and "body.blinded_elements.3" in detail


def test_a_bad_parameter_is_named_in_the_code() -> None:
    assert validation_problem([{"loc": ("query", "size"), "msg": "too big"}])[2] == "bad_size"
    assert validation_problem([{"loc": ("path", "request_id"), "msg": "pattern"}])[2] == "bad_request_id"
    assert validation_problem([])[2] == "invalid_body"


def test_declared_problems_carry_their_headers() -> None:
    declared = responses(401, 429, 503, 404)
    assert list(declared) == [401, 404, 429, 503]
    assert "WWW-Authenticate" in declared[401]["headers"] and "headers" not in declared[404]
    assert declared[503]["headers"]["Retry-After"]["schema"]["type"] == "integer"
