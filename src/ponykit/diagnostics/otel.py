"""OpenTelemetry: a CLIENT span and a duration measurement per statement, from ponykit's statement hook.

:func:`instrument` needs the ``otel`` extra (``pip install 'ponykit[otel]'``). It adds a statement
listener to an attached Database; no connection or cursor is proxied, so the driver's own types
(psycopg2's ``register_type`` and friends) keep working. Spans follow the stable database semantic
conventions; parameter values are recorded only with ``capture_parameters=True``, and values bound to
sensitive or encrypted columns never (see ``_masking``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pony.orm import Database

from .._kit import get_kit
from ..errors import ConfigurationError
from ._masking import MASK, mask_parameters
from ._sqllog import database_facts, error_type, statement_facts

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = ["instrument"]

_SCOPE = "ponykit"
# The buckets the semantic conventions recommend for db.client.operation.duration (seconds).
_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ponykit")
    except Exception:  # noqa: BLE001 - a source checkout without metadata still instruments
        return "0"


def _attribute_value(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return "NULL" if value is None else value
    return str(value)


def _parameters(masked: Any) -> dict[str, Any]:
    """``db.query.parameter.<key>`` attributes of unmasked values (executemany lists: none)."""
    if isinstance(masked, dict):
        items: Any = masked.items()
    elif isinstance(masked, tuple):
        items = enumerate(masked)
    else:
        return {}
    return {f"db.query.parameter.{key}": _attribute_value(v) for key, v in items if v is not MASK}


def instrument(
    db: Database,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    *,
    capture_parameters: bool = False,
) -> Callable[[], None]:
    """Emit a CLIENT span and a ``db.client.operation.duration`` measurement for every statement on ``db``.

    ``db`` must be attached (:func:`ponykit.attach`). Spans and the histogram go to the given providers,
    or to the global ones of ``opentelemetry.trace`` / ``opentelemetry.metrics``. Each span is named by
    its ``db.query.summary`` (``"SELECT book"``), is a child of the span current where the statement
    ran, and carries ``db.system.name``, ``db.namespace``, ``db.operation.name``,
    ``db.collection.name``, ``db.query.text``, ``db.query.summary``, ``server.address`` and
    ``server.port`` when known, and ``error.type`` with an ERROR status when the statement failed (the
    error's message is not recorded: drivers quote row values in it). ``capture_parameters=True`` adds
    ``db.query.parameter.<index or name>`` for each value not bound to a sensitive or encrypted column.
    Returns a function that stops the instrumentation.
    """
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode
    except ImportError as exc:
        raise ConfigurationError(
            "ponykit.diagnostics.instrument() needs OpenTelemetry: pip install 'ponykit[otel]'"
        ) from exc
    kit = get_kit(db)
    version = _version()
    tracer = trace.get_tracer(_SCOPE, version, tracer_provider=tracer_provider)
    meter = metrics.get_meter(_SCOPE, version, meter_provider=meter_provider)
    histogram = meter.create_histogram(
        "db.client.operation.duration",
        unit="s",
        description="Duration of database client operations.",
        explicit_bucket_boundaries_advisory=_BUCKETS,
    )
    client = SpanKind.CLIENT
    error_status = Status(StatusCode.ERROR)

    def listener(
        db: Database, cursor: Any, sql: str, arguments: Any, seconds: float, error: BaseException | None
    ) -> None:
        end = time.time_ns()
        facts = database_facts(db)
        statement = statement_facts(sql)
        common: dict[str, Any] = {"db.system.name": facts.system}
        if facts.namespace is not None:
            common["db.namespace"] = facts.namespace
        if statement.operation is not None:
            common["db.operation.name"] = statement.operation
        if statement.collection is not None:
            common["db.collection.name"] = statement.collection
        if facts.address is not None:
            common["server.address"] = facts.address
        if facts.port is not None:
            common["server.port"] = facts.port
        if error is not None:
            common["error.type"] = error_type(error)
        attributes = dict(common)
        attributes["db.query.text"] = sql
        attributes["db.query.summary"] = statement.summary
        if capture_parameters and arguments is not None:
            attributes.update(_parameters(mask_parameters(db, sql, arguments)))
        span = tracer.start_span(
            statement.summary, kind=client, attributes=attributes, start_time=end - int(seconds * 1e9)
        )
        if error is not None:
            span.set_status(error_status)
        span.end(end_time=end)
        histogram.record(seconds, common)

    return kit.add_statement_listener(listener)
