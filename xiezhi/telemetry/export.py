"""Where telemetry goes, always through redaction: console, OTLP, or a JSON-lines file.

Every exporter a service uses is wrapped here, so nothing leaves a process without passing
`xiezhi.redaction`: `RedactingSpanExporter` rebuilds each span from its allowed parts
(name, attributes, events, links, resource; the status keeps its code, never its
description), `RedactingMetricExporter` does the same for every data point's labels and
drops exemplars, and `RedactingLogProcessor` rewrites each log record before the
processor that exports it (body scrubbed, attributes allowlisted, so an exception's
message and stack trace go and its type stays).

`JsonLinesFile` writes one JSON object a line — `{"signal": "span" | "metric" | "log", …}` —
for tests and the demo to read.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import (
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Status

from xiezhi import redaction


def _resource(resource: Resource) -> Resource:
    return Resource(redaction.attributes(resource.attributes))


# ---- spans -------------------------------------------------------------------------------


def redact_span(span: ReadableSpan) -> ReadableSpan:
    """A copy of `span` holding only what the allowlist lets through."""
    return ReadableSpan(
        name=redaction.name(span.name),
        context=span.context,
        parent=span.parent,
        resource=_resource(span.resource),
        attributes=redaction.attributes(span.attributes),
        events=[
            Event(redaction.name(e.name), redaction.attributes(e.attributes), timestamp=e.timestamp)
            for e in span.events
        ],
        links=[Link(link.context, redaction.attributes(link.attributes)) for link in span.links],
        kind=span.kind,
        status=Status(span.status.status_code),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([redact_span(span) for span in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


# ---- metrics ------------------------------------------------------------------------------


def _redact_metric(metric: Metric) -> Metric:
    points = [
        dataclasses.replace(point, attributes=redaction.attributes(point.attributes), exemplars=[])
        for point in metric.data.data_points
    ]
    data: Any = metric.data  # Sum, Gauge, Histogram or ExponentialHistogram: each holds data_points
    return dataclasses.replace(
        metric, name=redaction.name(metric.name), data=dataclasses.replace(data, data_points=points)
    )


def redact_metrics(data: MetricsData) -> MetricsData:
    return MetricsData(
        resource_metrics=[
            dataclasses.replace(
                rm,
                resource=_resource(rm.resource),
                scope_metrics=[
                    dataclasses.replace(sm, metrics=[_redact_metric(m) for m in sm.metrics]) for sm in rm.scope_metrics
                ],
            )
            for rm in data.resource_metrics
        ]
    )


class RedactingMetricExporter(MetricExporter):
    def __init__(self, inner: MetricExporter) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        return self._inner.export(redact_metrics(metrics_data), timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


# ---- logs ---------------------------------------------------------------------------------


class RedactingLogProcessor(LogRecordProcessor):
    """Rewrites each record in place, then hands it to `inner` (which exports it)."""

    def __init__(self, inner: LogRecordProcessor) -> None:
        self._inner = inner

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        record = log_record.log_record
        record.body = redaction.scrub(str(record.body)) if record.body is not None else None
        record.attributes = redaction.attributes(record.attributes)
        record.event_name = redaction.name(record.event_name) if record.event_name else None
        record.exception = None
        log_record.resource = _resource(log_record.resource) if log_record.resource else None
        self._inner.on_emit(log_record)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


# ---- the JSON-lines file -------------------------------------------------------------------


class JsonLinesFile:
    """One file, appended to by a service's span, metric and log exporters alike."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._handle: IO[str] | None = None

    def write(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = self.path.open("a", encoding="utf-8")
            for row in rows:
                self._handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


def _service(resource: Resource | None) -> object:
    return None if resource is None else resource.attributes.get("service.name")


def span_row(span: ReadableSpan) -> dict[str, Any]:
    context, parent = span.context, span.parent
    return {
        "signal": "span",
        "service": _service(span.resource),
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}" if context else None,
        "span_id": f"{context.span_id:016x}" if context else None,
        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
        "start": span.start_time,
        "end": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
    }


def _point(point: object) -> dict[str, Any]:
    if isinstance(point, NumberDataPoint):
        return {"attributes": dict(point.attributes or {}), "value": point.value}
    if isinstance(point, HistogramDataPoint):
        fields = ("count", "sum", "min", "max")
        return {"attributes": dict(point.attributes or {}), **{f: getattr(point, f) for f in fields}}
    return {"attributes": dict(getattr(point, "attributes", None) or {})}


def metric_rows(data: MetricsData) -> list[dict[str, Any]]:
    return [
        {
            "signal": "metric",
            "service": _service(rm.resource),
            "name": metric.name,
            "unit": metric.unit,
            "kind": "histogram" if isinstance(metric.data, Histogram) else type(metric.data).__name__.lower(),
            "points": [_point(p) for p in metric.data.data_points],
        }
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    ]


def log_row(record: ReadableLogRecord) -> dict[str, Any]:
    log = record.log_record
    return {
        "signal": "log",
        "service": _service(record.resource),
        "time": log.timestamp or log.observed_timestamp,
        "severity": log.severity_text,
        "event_name": log.event_name,
        "body": log.body,
        "attributes": dict(log.attributes or {}),
        "trace_id": f"{log.trace_id:032x}" if log.trace_id else None,
        "span_id": f"{log.span_id:016x}" if log.span_id else None,
    }


class JsonLinesSpanExporter(SpanExporter):
    def __init__(self, file: JsonLinesFile) -> None:
        self._file = file

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._file.write([span_row(span) for span in spans])
        return SpanExportResult.SUCCESS


class JsonLinesMetricExporter(MetricExporter):
    def __init__(self, file: JsonLinesFile) -> None:
        super().__init__()
        self._file = file

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self._file.write(metric_rows(metrics_data))
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


class JsonLinesLogExporter(LogRecordExporter):
    def __init__(self, file: JsonLinesFile) -> None:
        self._file = file

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self._file.write([log_row(record) for record in batch])
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
