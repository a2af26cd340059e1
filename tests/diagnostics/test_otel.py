"""OpenTelemetry: a CLIENT span and a duration measurement per statement, tested with the SDK's in-memory
exporter and metric reader on every backend."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pony.orm import Database, DatabaseError, Optional, Required, db_session, select

import ponykit as pk
from ponykit.diagnostics import instrument
from ponykit.errors import ConfigurationError

SYSTEMS = {"sqlite": "sqlite", "postgres": "postgresql", "mysql": "mariadb"}  # the test server is MariaDB


@dataclass
class Otel:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def spans(self) -> list[Any]:
        return list(self.exporter.get_finished_spans())

    def points(self) -> list[Any]:
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == "db.client.operation.duration":
                        assert metric.unit == "s"
                        found.extend(metric.data.data_points)
        return found


@pytest.fixture
def otel() -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(exporter, reader, tracer_provider, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture
def book(db: Database) -> Any:
    class Book(db.Entity):
        title = Required(str)
        pages = Optional(int)
        secret = Optional(str)

    pk.security.sensitive(Book.secret)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        for i in range(3):
            Book(title=f"t{i}", pages=100 + i, secret=f"s{i}")
    return Book


def test_a_client_span_per_statement(book: Any, db: Database, backend: Any, otel: Otel) -> None:
    """Span name, kind, times, parent and the stable semconv attributes; no parameters by default."""
    stop = instrument(db, otel.tracer_provider, otel.meter_provider)
    tracer = otel.tracer_provider.get_tracer("test")
    try:
        with tracer.start_as_current_span("request") as parent, db_session:
            wanted = 101
            assert len(select(b for b in book if b.pages >= wanted)[:]) == 2
    finally:
        stop()
    spans = [s for s in otel.spans() if s.name != "request"]
    assert len(spans) == 1
    span = spans[0]
    attributes = dict(span.attributes)
    # The table as the SQL names it: "Book" on SQLite, "book" on the servers (Pony lowercases there).
    assert span.name == attributes["db.query.summary"] and span.name.lower() == "select book"
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    assert span.start_time <= span.end_time
    assert attributes["db.system.name"] == SYSTEMS[backend.name]
    assert attributes["db.operation.name"] == "SELECT"
    assert attributes["db.collection.name"].lower() == "book"
    assert attributes["db.query.text"].lstrip().upper().startswith("SELECT")
    assert not any(key.startswith("db.query.parameter") for key in attributes)
    assert "error.type" not in attributes
    if backend.name == "sqlite":
        assert attributes["db.namespace"].endswith("test.db")
        assert "server.address" not in attributes
    else:
        url = urlsplit(backend.url)
        assert attributes["db.namespace"] == url.path.lstrip("/")
        assert attributes["server.address"] == url.hostname
        assert attributes["server.port"] == url.port
    points = otel.points()
    assert sum(p.count for p in points) == 1
    point = points[0]
    assert dict(point.attributes) == {
        k: v for k, v in attributes.items() if k not in ("db.query.text", "db.query.summary")
    }
    assert 0 < point.sum < 60


def test_failed_statement_span_has_error_type_and_status(book: Any, db: Database, otel: Otel) -> None:
    """A failing statement: ERROR status and error.type on span and measurement, no message recorded."""
    stop = instrument(db, otel.tracer_provider, otel.meter_provider)
    try:
        with pytest.raises(DatabaseError), db_session:
            db.select("SELECT x FROM no_such_table WHERE x = 'VALUE-IN-TEXT'")
    finally:
        stop()
    span = otel.spans()[-1]
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description is None
    assert span.attributes["error.type"]
    assert span.events == ()  # no exception event: drivers quote row values in their messages
    assert any(dict(p.attributes).get("error.type") == span.attributes["error.type"] for p in otel.points())


def test_capture_parameters_leaves_out_sensitive_values(book: Any, db: Database, otel: Otel) -> None:
    """capture_parameters=True records values by position or name, never those of sensitive columns."""
    stop = instrument(db, otel.tracer_provider, capture_parameters=True)
    try:
        with db_session:
            title, hidden = "t1", "s1"
            assert select(b for b in book if b.title == title and b.secret == hidden).count() == 1
    finally:
        stop()
    attributes = dict(otel.spans()[-1].attributes)
    parameters = {k: v for k, v in attributes.items() if k.startswith("db.query.parameter.")}
    assert list(parameters.values()) == ["t1"]
    assert next(iter(parameters)) in ("db.query.parameter.0", "db.query.parameter.p1")


@pytest.mark.backends("sqlite")
def test_uninstrument_stops_the_spans(book: Any, db: Database, otel: Otel) -> None:
    """The function instrument() returns removes its listener."""
    stop = instrument(db, otel.tracer_provider, otel.meter_provider)
    with db_session:
        list(book.select())
    stop()
    with db_session:
        list(book.select())
    assert len(otel.spans()) == 1


@pytest.mark.backends("sqlite")
def test_missing_extra_says_what_to_install(book: Any, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without opentelemetry installed, instrument() names the extra."""
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'ponykit\[otel\]'"):
        instrument(db)
