"""A service's OpenTelemetry providers, built from its settings, exporting through redaction.

`Telemetry` holds one service's tracer, meter and logger providers (never the global ones,
so a gateway and connectors sharing a process — the test stack — keep their telemetry
apart). Its exporter is chosen by `TelemetrySettings`: `console` for development, `otlp`
(HTTP) for a collector, `file` for a JSON-lines file that tests and the demo read. Each
exporter sits behind `xiezhi.telemetry.export`'s redaction, and FastAPI's native telemetry
gets these providers with its environment auto-configuration off, so nothing it records
can reach an exporter another way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, TypedDict

from opentelemetry import propagate, trace
from opentelemetry._logs import LoggerProvider as ApiLoggerProvider
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import MeterProvider as ApiMeterProvider
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    ConsoleLogRecordExporter,
    LogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, model_validator

from xiezhi import __version__
from xiezhi.redaction import RedactingFilter
from xiezhi.telemetry.export import (
    JsonLinesFile,
    JsonLinesLogExporter,
    JsonLinesMetricExporter,
    JsonLinesSpanExporter,
    RedactingLogProcessor,
    RedactingMetricExporter,
    RedactingSpanExporter,
    redact_metrics,
)


class TelemetrySettings(BaseModel):
    """Where a service's traces, metrics and logs go: nowhere by default; `console` for
    development, `otlp` for a collector, `file` for a JSON-lines file (tests, the demo)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exporter: Literal["none", "console", "otlp", "file"] = "none"
    path: Path | None = Field(default=None, description="file: the JSON-lines file to append to")
    otlp_endpoint: str | None = Field(
        default=None, description="otlp: the collector's base URL (default: $OTEL_EXPORTER_OTLP_ENDPOINT)"
    )
    metric_interval_seconds: float = Field(default=60.0, gt=0, description="how often metrics are exported")
    prometheus: bool = Field(
        default=False, description="also serve the metrics at /metrics in Prometheus text format, redacted the same way"
    )

    @model_validator(mode="after")
    def _file_needs_path(self) -> TelemetrySettings:
        if self.exporter == "file" and self.path is None:
            raise ValueError("telemetry exporter 'file' needs a path")
        return self

    @classmethod
    def parse(cls, spec: str) -> TelemetrySettings:
        """From a command-line value: `none`, `console`, `otlp`, `otlp:URL` or `file:PATH`."""
        kind, _, rest = spec.partition(":")
        if kind == "file":
            return cls(exporter="file", path=Path(rest) if rest else None)
        if kind == "otlp":
            return cls(exporter="otlp", otlp_endpoint=rest or None)
        if kind in ("none", "console") and not rest:
            return cls(exporter=kind)
        raise ValueError(f"telemetry must be none, console, otlp[:URL] or file:PATH, not {spec!r}")


class FastApiTelemetry(TypedDict, total=False):
    """The shape of FastAPI's `TelemetryConfig` (fastapi.telemetry), without importing FastAPI here."""

    tracer_provider: trace.TracerProvider | None
    meter_provider: ApiMeterProvider | None
    logger_provider: ApiLoggerProvider | None
    tracing: bool
    metrics: bool
    logs: bool
    operation_spans: bool
    auto_configure: bool
    exclude: Callable[[MutableMapping[str, Any]], bool] | None


def _not_health(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") == "/healthz"  # polled by supervisors; nothing to trace


class _Instruments:
    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter("xiezhi", __version__)
        self.requests = meter.create_counter("xiezhi.requests", "{request}", "Pipeline steps handled, by outcome")
        self.decisions = meter.create_counter("xiezhi.decisions", "{decision}", "Authorization decisions")
        self.duration = meter.create_histogram("xiezhi.operation.duration", "s", "Time per traced operation")
        self.batch = meter.create_histogram(
            "xiezhi.batch.size",
            "{element}",
            "Elements or rows per batch",
            explicit_bucket_boundaries_advisory=[1, 10, 100, 500, 1000, 2000, 5000, 10000],
        )
        self.matches = meter.create_counter("xiezhi.matches", "{token}", "Tokens found in an index")
        self.clues = meter.create_counter("xiezhi.clues", "{row}", "Rows the model's rule made a clue")
        self.alarms = meter.create_counter(
            "xiezhi.alarms", "{alarm}", "Alarms raised or repeated (a witness refusing the log's checkpoint)"
        )


class Telemetry:
    """One service's providers, each exporting through redaction; `off()` has none."""

    def __init__(self, settings: TelemetrySettings, service: str) -> None:
        self.service = service
        self.enabled = settings.exporter != "none" or settings.prometheus
        self._registry: CollectorRegistry | None = None
        self._closed = False
        self._bridge: logging.Handler | None = None
        self._bridged = logging.getLogger()
        self._file = JsonLinesFile(settings.path) if settings.exporter == "file" and settings.path else None
        if not self.enabled:
            return
        propagate.set_global_textmap(TraceContextTextMapPropagator())  # FastAPI extracts with it: no baggage
        resource = Resource.create(
            {"service.name": service, "service.namespace": "xiezhi", "service.version": __version__}
        )
        batched = settings.exporter == "otlp"  # network export in the background; local export at once
        self.tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        readers: list[MetricReader] = []
        if settings.exporter != "none":  # (with only Prometheus, spans and logs go nowhere)
            spans, metrics, logs = _exporters(settings, self._file)
            self.tracer_provider.add_span_processor(_span_processor(RedactingSpanExporter(spans), batched))
            self.logger_provider.add_log_record_processor(RedactingLogProcessor(_log_processor(logs, batched)))
            readers.append(
                PeriodicExportingMetricReader(
                    RedactingMetricExporter(metrics), export_interval_millis=settings.metric_interval_seconds * 1000
                )
            )
        if settings.prometheus:
            # A registry of this service's own: services sharing a process keep their metrics apart.
            self._registry = CollectorRegistry(auto_describe=True)
            readers.append(RedactingPrometheusReader(self._registry))
        self.meter_provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
        self.tracer = self.tracer_provider.get_tracer("xiezhi", __version__)
        self.instruments = _Instruments(self.meter_provider)

    def prometheus_text(self) -> bytes | None:
        """The metrics in Prometheus text format, redacted; None unless `prometheus` is on."""
        if self._registry is None:
            return None
        return generate_latest(self._registry)

    @classmethod
    def off(cls, service: str = "xiezhi") -> Telemetry:
        return cls(TelemetrySettings(), service)

    def fastapi_options(self) -> FastApiTelemetry:
        """FastAPI's native telemetry on our providers (never its environment auto-configuration)."""
        if not self.enabled:
            return FastApiTelemetry(tracing=False, metrics=False, logs=False, auto_configure=False)
        return FastApiTelemetry(
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            logger_provider=self.logger_provider,
            auto_configure=False,
            exclude=_not_health,
        )

    @contextmanager
    def activate(self) -> Iterator[None]:
        """Make this the telemetry the helpers record to, in this context (thread, task)."""
        token = ACTIVE.set(self if self.enabled else None)
        try:
            yield
        finally:
            ACTIVE.reset(token)

    def bridge_logging(self, logger: logging.Logger | None = None) -> None:
        """Also send `logger`'s records (default: the root logger's) as OTel logs, redacted."""
        if not self.enabled or self._bridge is not None:
            return
        self._bridge, self._bridged = _LogBridge(self.logger_provider), logger or logging.getLogger()
        self._bridge.addFilter(RedactingFilter())
        self._bridged.addHandler(self._bridge)

    def shutdown(self) -> None:
        """Export what is pending (metrics one last time) and stop. Safe to call twice."""
        if self._closed or not self.enabled:
            return
        self._closed = True
        if self._bridge is not None:
            self._bridged.removeHandler(self._bridge)
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        self.logger_provider.shutdown()
        if self._file is not None:
            self._file.close()

    # What every span records when it ends.
    def ended(self, name: str, outcome: str, seconds: float, counted: bool) -> None:
        labels = {"xiezhi.operation": name, "xiezhi.outcome": outcome}
        self.instruments.duration.record(seconds, labels)
        if counted:
            self.instruments.requests.add(1, labels)


class RedactingPrometheusReader(PrometheusMetricReader):
    """OpenTelemetry's Prometheus reader, handed every collection through the same redaction
    as the exporters (`xiezhi.telemetry.export.redact_metrics`) before it is rendered."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(disable_target_info=True, registry=registry)

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        super()._receive_metrics(redact_metrics(metrics_data), timeout_millis=timeout_millis, **kwargs)


def _exporters(
    settings: TelemetrySettings, file: JsonLinesFile | None
) -> tuple[SpanExporter, MetricExporter, LogRecordExporter]:
    if file is not None:
        return JsonLinesSpanExporter(file), JsonLinesMetricExporter(file), JsonLinesLogExporter(file)
    if settings.exporter == "console":
        return ConsoleSpanExporter(), ConsoleMetricExporter(), ConsoleLogRecordExporter()
    # Imported only when used: the OTLP exporters pull in protobuf and requests.
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    base = settings.otlp_endpoint.rstrip("/") if settings.otlp_endpoint else None
    return (
        OTLPSpanExporter(endpoint=f"{base}/v1/traces" if base else None),
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics" if base else None),
        OTLPLogExporter(endpoint=f"{base}/v1/logs" if base else None),
    )


def _span_processor(exporter: SpanExporter, batched: bool) -> SpanProcessor:
    return BatchSpanProcessor(exporter) if batched else SimpleSpanProcessor(exporter)


def _log_processor(exporter: LogRecordExporter, batched: bool) -> LogRecordProcessor:
    return BatchLogRecordProcessor(exporter) if batched else SimpleLogRecordProcessor(exporter)


class _LogBridge(logging.Handler):
    """Standard-library records as OTel logs: the (filtered) message and where it came from."""

    def __init__(self, provider: LoggerProvider) -> None:
        super().__init__()
        self._provider = provider

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("opentelemetry"):
            return  # the SDK's own complaints would come back here
        self._provider.get_logger(record.name).emit(
            timestamp=int(record.created * 1e9),
            severity_number=_SEVERITY.get(record.levelno, SeverityNumber.INFO),
            severity_text=record.levelname,
            body=record.getMessage(),
            attributes={"code.function.name": record.funcName, "code.line.number": record.lineno},
        )


_SEVERITY = {
    logging.DEBUG: SeverityNumber.DEBUG,
    logging.INFO: SeverityNumber.INFO,
    logging.WARNING: SeverityNumber.WARN,
    logging.ERROR: SeverityNumber.ERROR,
    logging.CRITICAL: SeverityNumber.FATAL,
}


# The telemetry the helpers in xiezhi.telemetry record to, in this context (thread, task).
ACTIVE: ContextVar[Telemetry | None] = ContextVar("xiezhi_telemetry", default=None)
