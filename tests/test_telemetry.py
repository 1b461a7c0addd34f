"""Telemetry: redaction of every signal, W3C trace context from client to connector, and a
whole demo run whose telemetry and logs hold no ID, name, token or key.

Nothing here is mocked: the redactor runs inside real OpenTelemetry providers writing the
JSON-lines file a service writes; the propagation test runs a real gateway and connectors
on loopback (tests/stack.py) and the real client; the scan reads the files of the tests'
shared `xiezhi demo` run (tests/demo_run.py), whose services are separate processes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re
import threading
import unicodedata
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from pydantic import BaseModel

from connectors.keys import KeyStore
from connectors.roster import Roster
from requester.job import match_file
from requester.protocol import MatchSpec
from tests.agreement import find_leaks, subject_id_forms, subject_names, subject_tokens
from tests.demo_run import DemoRun
from tests.stack import HTTP, LEGAL_BASIS, PURPOSE, LoopbackServer, channel, session_pki, start_stack
from xiezhi.ids import clean, resident_id_check_char, uscc_check_char
from xiezhi.redaction import REDACTED, RedactingFilter, scrub
from xiezhi.telemetry import (
    ActiveTelemetry,
    Telemetry,
    TelemetrySettings,
    annotate,
    count_decision,
    count_matches,
    span,
    trace_headers,
)
from xiezhi.tls import connector_identity, pinned

# ---- secrets in every form the redactor must blank ---------------------------------------------


def _resident_id_ending_in_x() -> str:
    for sequence in range(1000):
        first17 = f"33080319800101{sequence:03d}"
        if resident_id_check_char(first17) == "X":
            return first17 + "X"
    raise AssertionError("no sequence number gives check character X")


RESIDENT = _resident_id_ending_in_x()
_FULL_WIDTH = str.maketrans("0123456789Xx", "０１２３４５６７８９ｘｘ")
USCC = "91330803MA2B3C4D1" + uscc_check_char("91330803MA2B3C4D1")
TOKEN = hashlib.sha256(b"a token").digest()[:16]
ELEMENT = hashlib.sha256(b"a blinded element").digest()
CALLER_JWT = jwt.encode({"sub": "prosecutor-330803-01", "roles": ["prosecutor"]}, "k" * 32, algorithm="HS256")

SECRETS = {
    "resident id": RESIDENT,
    "resident id, lowercase x": RESIDENT.lower(),
    "resident id, full-width": RESIDENT.translate(_FULL_WIDTH),
    "resident id, spaced": f"{RESIDENT[:6]} {RESIDENT[6:14]} {RESIDENT[14:]}",
    "resident id, ideographic spaces and dashes": f"{RESIDENT[:6]}\u3000{RESIDENT[6:14]}-{RESIDENT[14:]}",
    "old 15-digit id": RESIDENT[:6] + RESIDENT[8:17],
    "credit code": USCC,
    "credit code, lowercase": USCC.lower(),
    "passport": "E12345678",
    "name": "张伟",
    "name with a middle dot": "阿依古丽·买买提",
    "token, hex": TOKEN.hex(),
    "token, base64": base64.b64encode(TOKEN).decode(),
    "token, base64url": base64.urlsafe_b64encode(TOKEN).decode().rstrip("="),
    "element, base64": base64.b64encode(ELEMENT).decode(),
    "jwt": CALLER_JWT,
    "bearer header": f"Bearer {CALLER_JWT}",
    "private key": "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEICUQUSbDsmaFF2cexNzFQb0cEgfuAOxXSlaPnbtDEbSz\n"
    "-----END PRIVATE KEY-----",
}

SAFE: dict[str, str | int] = {
    "xiezhi.model": "housing_fund",
    "xiezhi.connector": "court",
    "xiezhi.capability": "court.winning_plaintiff_unpaid",
    "xiezhi.request_id": "2f1e0c5a-9b1d-4c7e-8a3f-0e6d2c1b4a59",
    "xiezhi.org": "330803",
    "http.route": "/v1/requests/{request_id}/evaluations/{connector}",
    "http.response.status_code": 200,
    "xiezhi.batch_size": 2000,
}


def _leaked(secret: str, text: str) -> bool:
    """`secret` in `text`, as written or folded (NFKC, no spaces or punctuation, upper case)."""
    return secret in text or clean(secret) in clean(text)


@pytest.mark.parametrize("secret", SECRETS.values(), ids=SECRETS.keys())
def test_scrub_blanks_the_secret_and_keeps_the_text_around_it(secret: str) -> None:
    scrubbed = scrub(f"relay of {secret} done")
    assert not _leaked(secret, scrubbed), scrubbed
    assert scrubbed.startswith("relay of ") and scrubbed.endswith(" done") and REDACTED in scrubbed


def test_scrub_keeps_what_telemetry_needs() -> None:
    for safe in (
        "POST /v1/requests/{request_id}/lookups",
        "/v1/audit/export/entries.jsonl",
        "court.winning_plaintiff_unpaid",
        "evaluated request=2f1e0c5a-9b1d-4c7e-8a3f-0e6d2c1b4a59 org=330803 count=1281 epoch=1",
        "127.0.0.1:54144 - POST /v1/requests/2f1e0c5a-9b1d-4c7e-8a3f-0e6d2c1b4a59/lookups HTTP/1.1 200",
    ):
        assert scrub(safe) == safe


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("secret", SECRETS.values(), ids=SECRETS.keys())
def test_every_signal_is_redacted_and_safe_attributes_pass(secret: str, tmp_path: Path) -> None:
    path = tmp_path / "service.jsonl"
    telemetry = Telemetry(TelemetrySettings(exporter="file", path=path, prometheus=True), "xiezhi-gateway")
    logger = logging.getLogger(f"test.telemetry.{id(path)}")
    logger.propagate = False
    stream = io.StringIO()
    plain = logging.StreamHandler(stream)
    plain.addFilter(RedactingFilter())
    logger.addHandler(plain)
    telemetry.bridge_logging(logger)
    with telemetry.activate():
        with span(f"lookup {secret}", SAFE):
            annotate({"xiezhi.reason": secret, "subject.id": secret, "url.path": f"/v1/subjects/{secret}"})
            trace.get_current_span().add_event(f"seen {secret}", {"xiezhi.outcome": secret, "name": secret})
            count_matches(secret, 1)
            count_decision("run", "model", "deny", secret)
            try:
                raise ValueError(f"no index for {secret}")
            except ValueError:
                logger.exception("lookup failed for %s", secret)
    scraped = (telemetry.prometheus_text() or b"").decode()
    telemetry.shutdown()
    logger.removeHandler(plain)

    # Prometheus text, scraped at /metrics, passes the same redaction.
    assert "xiezhi_matches_total{" in scraped and 'xiezhi_capability="[redacted]"' in scraped, scraped
    assert not _leaked(secret, scraped), scraped

    text = path.read_text(encoding="utf-8")
    assert not _leaked(secret, text), text
    assert not _leaked(secret, stream.getvalue()), stream.getvalue()
    rows = _rows(path)
    (traced,) = [r for r in rows if r["signal"] == "span"]
    assert traced["name"] == REDACTED
    assert traced["attributes"] == {**SAFE, "xiezhi.reason": REDACTED, "xiezhi.redacted_attributes": 2}
    assert traced["events"] == [
        {"name": REDACTED, "attributes": {"xiezhi.outcome": REDACTED, "xiezhi.redacted_attributes": 1}}
    ]
    metrics = {r["name"]: r["points"] for r in rows if r["signal"] == "metric"}
    assert [p["attributes"] for p in metrics["xiezhi.matches"]] == [{"xiezhi.capability": REDACTED}]
    assert metrics["xiezhi.decisions"][0]["attributes"]["xiezhi.reason"] == REDACTED
    (log,) = [r for r in rows if r["signal"] == "log"]
    assert log["body"].startswith("lookup failed for ") and log["body"].endswith("[ValueError]")
    assert "Traceback" not in stream.getvalue() and "[ValueError]" in stream.getvalue()


@pytest.mark.integration
def test_fastapi_native_telemetry_passes_the_same_redaction(tmp_path: Path) -> None:
    # FastAPI records the path, the query, and logs exceptions "including exception messages
    # and stack traces"; none of that may carry the ID the request sent.
    path = tmp_path / "service.jsonl"
    telemetry = Telemetry(TelemetrySettings(exporter="file", path=path), "xiezhi-gateway")
    app = FastAPI(telemetry=telemetry.fastapi_options())
    app.add_middleware(ActiveTelemetry, telemetry=telemetry)

    class Body(BaseModel):
        count: int

    @app.get("/v1/subjects/{subject}")
    def fail(subject: str) -> None:
        raise ValueError(f"no record for {subject}")

    @app.post("/v1/lookups")
    def lookup(body: Body) -> dict[str, int]:
        return {"count": body.count}

    server = LoopbackServer(app).start()  # plain HTTP: this app is not a service of ours
    try:
        assert httpx.get(f"{server.url}/v1/subjects/{RESIDENT}?id={RESIDENT.lower()}").status_code == 500
        assert httpx.post(f"{server.url}/v1/lookups", json={"count": RESIDENT}).status_code == 422
    finally:
        server.stop()  # the lifespan's end; FastAPI never shuts down providers it was given
        telemetry.shutdown()

    text = path.read_text(encoding="utf-8")
    assert not _leaked(RESIDENT, text) and RESIDENT[:17] not in text
    rows = _rows(path)
    server_spans = [r for r in rows if r["signal"] == "span" and r["kind"] == "SERVER"]
    assert {r["name"] for r in server_spans} == {"GET /v1/subjects/{subject}", "POST /v1/lookups"}
    assert all("url.path" not in r["attributes"] and "url.query" not in r["attributes"] for r in server_spans)
    logs = {r["event_name"]: r for r in rows if r["signal"] == "log"}
    assert logs["http.server.request.exception"]["attributes"]["exception.type"] == "ValueError"
    assert "exception.message" not in logs["http.server.request.exception"]["attributes"]
    assert "fastapi.validation.failed" in logs
    assert any(r["signal"] == "metric" and r["name"] == "http.server.request.duration" for r in rows)


@pytest.mark.integration
def test_otlp_export_goes_through_redaction_too() -> None:
    received: list[tuple[str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append((self.path, self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_port}"
    telemetry = Telemetry(TelemetrySettings(exporter="otlp", otlp_endpoint=endpoint), "xiezhi-gateway")
    try:
        with telemetry.activate(), span("gateway.lookup", {**SAFE, "xiezhi.reason": RESIDENT}):
            count_matches(RESIDENT, 1)
    finally:
        telemetry.shutdown()
        collector.shutdown()
    assert {path for path, _ in received} >= {"/v1/traces", "/v1/metrics"}
    sent = b"".join(body for _, body in received)
    assert b"gateway.lookup" in sent and b"court.winning_plaintiff_unpaid" in sent and REDACTED.encode() in sent
    assert RESIDENT.encode() not in sent and RESIDENT[:17].encode() not in sent


def test_without_telemetry_the_helpers_do_nothing() -> None:
    with Telemetry.off().activate(), span("gateway.lookup", SAFE):
        annotate({"xiezhi.rows": 1})
        count_matches("court.winning_plaintiff_unpaid", 1)
        assert trace_headers() == {}
        assert not trace.get_current_span().is_recording()


def test_telemetry_settings_from_the_command_line(tmp_path: Path) -> None:
    assert TelemetrySettings.parse("file:" + str(tmp_path / "t.jsonl")).path == tmp_path / "t.jsonl"
    assert TelemetrySettings.parse("otlp:http://collector:4318").otlp_endpoint == "http://collector:4318"
    assert TelemetrySettings.parse("console").exporter == "console"
    for bad in ("file", "syslog", "console:x"):
        with pytest.raises(ValueError):
            TelemetrySettings.parse(bad)


# ---- one match, traced from the client through the gateway to the connectors -------------------


def _by_signal(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = [row for path in sorted(folder.glob("*.jsonl")) for row in _rows(path)]
    return [r for r in rows if r["signal"] == "span"], [r for r in rows if r["signal"] == "metric"]


def _points(metrics: list[dict[str, Any]], service: str, name: str) -> list[dict[str, Any]]:
    return [p for m in metrics if m["service"] == service and m["name"] == name for p in m["points"]]


@pytest.mark.integration
def test_one_trace_from_client_through_gateway_to_connectors(tmp_path: Path, generated: Path) -> None:
    folder = tmp_path / "telemetry"
    stack = start_stack(tmp_path / "stack", telemetry=folder)
    requester = Telemetry(TelemetrySettings(exporter="file", path=folder / "requester.jsonl"), "xiezhi-requester")
    try:
        stack.publish(generated)
        with requester.activate():
            summary = match_file(
                stack.gateway_url,
                stack.user_token(["prosecutor"]),
                MatchSpec("housing_fund", PURPOSE, LEGAL_BASIS, batch_size=97),
                generated / "subjects.csv",
                tmp_path / "report.csv",
                show_progress=False,
                workers=1,
                on_pending=stack.approver(),
            )
        # The same metrics, scraped as Prometheus text from the gateway (no token: mutual TLS)
        # and from a connector (which admits the administrators' system for it).
        scraped = tmp_path / "scraped"
        scraped.mkdir()
        gateway_text = HTTP.get(f"{stack.gateway_url}/metrics")
        connector_text = channel(session_pki().client("admin")).get(
            f"{stack.connector_urls['housing_fund']}/metrics",
            extensions=pinned(connector_identity("housing_fund")),
        )
        for name, answer in (("gateway", gateway_text), ("connector", connector_text)):
            assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain"), answer.text
            (scraped / f"{name}.prom").write_text(answer.text, encoding="utf-8")
        refused = channel(session_pki().client("requester")).get(
            f"{stack.connector_urls['housing_fund']}/metrics",
            extensions=pinned(connector_identity("housing_fund")),
        )
        assert refused.status_code == 403
    finally:
        requester.shutdown()
        stack.stop()  # each service exports what is pending, metrics one last time
    prometheus = (scraped / "gateway.prom").read_text(encoding="utf-8")
    assert "xiezhi_decisions_total{" in prometheus and 'xiezhi_outcome="allow",xiezhi_reason="allowed"}' in prometheus
    assert re.search(r'^xiezhi_clues_total\{[^}]*xiezhi_model="housing_fund"\} [1-9]', prometheus, re.M)
    assert "xiezhi_batch_size_bucket{" in (scraped / "connector.prom").read_text(encoding="utf-8")
    assert find_leaks(scraped, subject_id_forms(generated) | subject_names(generated)) == []
    spans, metrics = _by_signal(folder)
    by_id = {s["span_id"]: s for s in spans}
    (root,) = [s for s in spans if s["name"] == "client.match"]
    run = [s for s in spans if s["trace_id"] == root["trace_id"]]
    services = {s["service"] for s in run}
    assert services == {"xiezhi-requester", "xiezhi-gateway", "xiezhi-connector-housing_fund"}
    names = {s["name"] for s in run}
    assert {"authz.decide", "relay.evaluate", "connector.evaluate", "gateway.lookup", "audit.append"} <= names
    assert {"gateway.create", "gateway.evaluate", "POST /v1/requests/{request_id}/lookups"} <= names

    def ancestors(span_: dict[str, Any]) -> Iterator[dict[str, Any]]:
        while span_["parent_span_id"] in by_id:
            span_ = by_id[span_["parent_span_id"]]
            yield span_

    evaluations = [s for s in run if s["name"] == "connector.evaluate"]
    assert evaluations
    for evaluation in evaluations:
        chain = list(ancestors(evaluation))
        # Its server span's parent is the gateway's relay span: the traceparent header crossed.
        at = next(i for i, s in enumerate(chain) if s["kind"] == "SERVER")
        server, relay = chain[at], chain[at + 1]
        assert server["name"] == "POST /v1/evaluate" and server["service"] == "xiezhi-connector-housing_fund"
        assert relay["name"] == "relay.evaluate" and relay["service"] == "xiezhi-gateway"
        assert chain[-1] is root
    assert sum(s["attributes"]["xiezhi.batch_size"] for s in evaluations) == summary.rows

    assert _points(metrics, "xiezhi-gateway", "xiezhi.requests")
    assert {p["attributes"]["xiezhi.outcome"] for p in _points(metrics, "xiezhi-gateway", "xiezhi.decisions")}
    assert _points(metrics, "xiezhi-gateway", "xiezhi.operation.duration")
    assert _points(metrics, "xiezhi-gateway", "http.server.request.duration")
    batches = _points(metrics, "xiezhi-gateway", "xiezhi.batch.size")
    lookups = [p for p in batches if p["attributes"]["xiezhi.operation"] == "gateway.lookup"]
    assert lookups and max(p["max"] for p in lookups) <= 97
    assert sum(p["value"] for p in _points(metrics, "xiezhi-gateway", "xiezhi.clues")) == summary.clues > 0
    assert sum(p["value"] for p in _points(metrics, "xiezhi-gateway", "xiezhi.matches")) > 0
    evaluated = _points(metrics, "xiezhi-connector-housing_fund", "xiezhi.batch.size")
    assert sum(p["sum"] for p in evaluated) == summary.rows


# ---- a whole demo run: nothing secret in any telemetry file or service log ---------------------

_RUN = re.compile(r"[0-9A-Za-z+/=_\-\u3400-\u9fff·]+")
_BETWEEN = re.compile(r"(?<=[0-9A-Za-z])[ \t\-_.](?=[0-9A-Za-z])")


class LeakScanner:
    """Finds any needle inside the letter, digit and base64 runs of a text, also after NFKC
    folding, upper-casing and with the spaces and dashes between characters removed."""

    def __init__(self, needles: Mapping[str, str]) -> None:
        self._needles = needles  # form → what it is
        self._lengths = sorted({len(n) for n in needles})

    def find(self, text: str) -> set[str]:
        folded = unicodedata.normalize("NFKC", text)
        runs = set(_RUN.findall(folded)) | set(_RUN.findall(_BETWEEN.sub("", folded)))
        found: set[str] = set()
        for run in runs | {r.upper() for r in runs}:
            for size in (n for n in self._lengths if n <= len(run)):
                found |= {
                    self._needles[w] for i in range(len(run) - size + 1) if (w := run[i : i + size]) in self._needles
                }
        return found


def _encodings(label: str, secret: bytes) -> dict[str, str]:
    forms = (secret.hex(), base64.b64encode(secret).decode(), base64.urlsafe_b64encode(secret).decode())
    return {form.rstrip("="): label for form in forms}


def _key_needles(workdir: Path) -> dict[str, str]:
    """Every private key the demo made: OPRF keys, signing keys, TLS keys, key-encryption keys."""
    needles: dict[str, str] = {}
    for path in (p for p in workdir.rglob("*.key") if p.is_file()):
        data = path.read_bytes()
        text = data.decode("ascii", errors="replace")
        if "-----BEGIN" in text:
            body = "".join(line for line in text.splitlines() if line and not line.startswith("-----"))
            needles |= _encodings(f"key {path.name}", base64.b64decode(body)[-32:])
            needles |= {line: f"key {path.name}" for line in text.splitlines() if len(line) >= 40}
        elif text.startswith("PRIVATE+KEY+"):
            needles |= _encodings(f"key {path.name}", base64.b64decode(text.strip().split("+", 4)[4])[1:])
        else:
            needles |= _encodings(f"key {path.name}", data)
    keyring = json.loads((workdir / "keys" / "keyring.json").read_text(encoding="utf-8"))
    for kek in keyring["keys"]:
        needles |= _encodings(f"kek {kek['id']}", base64.b64decode(kek["key"]))
    return needles


def _needles(run: DemoRun) -> dict[str, str]:
    needles = {clean(form): "subject id" for form in subject_id_forms(run.data)}
    needles |= {name: "name" for name in subject_names(run.data)}
    roster = Roster.load(run.roster)
    keys, capabilities = {}, set()
    for connector in run.connectors:
        store = KeyStore(run.work / "connectors" / connector / "keys")
        keys[connector] = store.key_pair(store.current()).sk
        capabilities |= {c.id for c in roster.entry(connector).config.capabilities}
    for token in subject_tokens(run.data, keys, capabilities):
        needles |= _encodings("token", token)
    return needles | _key_needles(run.work)


@pytest.mark.xdist_group("demo")
def test_a_demo_run_leaves_no_id_name_token_or_key_in_telemetry_or_logs(demo_run: DemoRun) -> None:
    assert demo_run.done.returncode == 0, demo_run.done.stderr[-3000:]
    work = demo_run.work
    assert "Telemetry (traces, metrics, logs; redacted):" in demo_run.done.stdout
    telemetry = sorted((work / "telemetry").glob("*.jsonl"))
    logs = [work / "gateway" / "gateway.log", *sorted((work / "connectors").glob("*/connector.log"))]
    assert [p.stem for p in telemetry] == sorted(["gateway", "requester", *demo_run.connectors])
    assert len(logs) == 1 + len(demo_run.connectors) == 6

    needles = _needles(demo_run)
    kinds = set(needles.values())
    assert {"subject id", "name", "token"} <= kinds
    assert sum(kind == "token" for kind in needles.values()) > 100  # every valid ID, every capability
    scanner = LeakScanner(needles)
    for path in telemetry + logs:
        text = path.read_text(encoding="utf-8")
        assert scanner.find(text) == set(), path
        assert not re.search(r"eyJ[\w-]{8,}\.|-----BEGIN|Bearer\s", text), path

    # Not vacuous: the files hold spans, metrics and logs of every service, …
    spans, metrics = _by_signal(work / "telemetry")
    assert {s["service"] for s in spans} == {"xiezhi-gateway", "xiezhi-requester"} | {
        f"xiezhi-connector-{c}" for c in demo_run.connectors
    }
    assert {"xiezhi.requests", "xiezhi.decisions", "xiezhi.matches"} <= {m["name"] for m in metrics}
    # … and the same scanner finds an ID, a name and a token planted in one of them.
    planted_id = sorted(f for f, kind in needles.items() if kind == "subject id" and len(f) == 18)[0]
    planted_name = sorted(f for f, kind in needles.items() if kind == "name")[0]
    planted_token = sorted(f for f, kind in needles.items() if kind == "token")[0]
    spaced = f"{planted_id[:6]} {planted_id[6:]}".lower().translate(_FULL_WIDTH)
    text = telemetry[0].read_text(encoding="utf-8")
    assert scanner.find(text + f'{{"body": "{spaced} {planted_name} {planted_token}"}}\n') == {
        "subject id",
        "name",
        "token",
    }
