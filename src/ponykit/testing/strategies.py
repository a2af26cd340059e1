"""Hypothesis strategies for entities: dicts of attribute values that ``Entity(**values)`` accepts.

::

    from hypothesis import given
    from ponykit.testing import strategies as pks

    @given(pks.entity(Book))
    def test_title_round_trips(values):
        with db_session:
            book = make_book(**values)   # a factory fills the Required references left out
            ...
            rollback()

The attributes a factory fills (Required ones, primary keys that are not ``auto``, parts of unique keys)
get values drawn within the attribute's limits (``max_len``, ``min``/``max``, size, Decimal precision
and scale, ``py_check``); Optional value attributes are drawn or left out. References to other entities
are left out unless ``related=`` gives them (a strategy, one object, or a list of objects to sample
from): hypothesis draws values before the test opens its ``db_session``, so it cannot create the
related objects itself. Give the values to a :func:`~ponykit.testing.factory` of the entity: it makes
the Required references that are missing. ``overrides`` fix attributes to values or strategies.
Uniqueness holds within one drawn dict only: roll the session back at the end of each example.

hypothesis is a test-time dependency (``pip install ponykit[testing]``).
"""

from __future__ import annotations

import datetime as _dt
import enum
import ipaddress
import string
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

from pony.orm import Json

from .. import _pony
from ..errors import ConfigurationError, FactoryError, OptionError
from ..types import AwareDatetime, EncryptedBytes, EncryptedJson, EncryptedStr, IPAddress, IPNetwork
from .factories import FieldPlan, field_plans, passing_values

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - the testing extra installs it
    raise ConfigurationError(
        "ponykit.testing.strategies needs hypothesis: pip install 'ponykit[testing]' (or hypothesis)"
    ) from exc

__all__ = ["entity", "value"]

# Text every backend stores as given: no control characters (PostgreSQL refuses NUL), no surrogates, no
# spaces (Pony strips them from str values, so "x " would read back as "x").
_TEXT = st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp", "Co", "Cn"))
# The ranges MariaDB's DATE/DATETIME/TIME columns hold (PostgreSQL and SQLite hold more).
_DAY_MIN, _DAY_MAX = _dt.date(1000, 1, 2), _dt.date(9999, 12, 30)
_JSON_LEAF = st.none() | st.booleans() | st.integers(-(2**31), 2**31 - 1) | st.text(string.ascii_letters)


def _json() -> st.SearchStrategy[Any]:
    # Exact JSON round trips on every backend: no floats (MariaDB's JSON reformats them).
    return st.dictionaries(
        st.text(string.ascii_letters, max_size=8),
        st.recursive(_JSON_LEAF, lambda inner: st.lists(inner, max_size=3), max_leaves=6),
        max_size=4,
    )


def _text(max_len: int | None) -> st.SearchStrategy[str]:
    return st.text(_TEXT, min_size=1, max_size=min(max_len or 40, 40))


def _decimal(plan: FieldPlan) -> st.SearchStrategy[Decimal]:
    limits = plan.limits
    precision = limits.precision or 12
    scale = limits.scale if limits.scale is not None else 2
    largest = Decimal(10) ** (precision - scale) - Decimal(1).scaleb(-scale)
    low = -largest if limits.min is None else max(Decimal(limits.min), -largest)
    high = largest if limits.max is None else min(Decimal(limits.max), largest)
    return st.decimals(low, high, places=scale, allow_nan=False, allow_infinity=False)


def _network(v: Literal[4, 6] | None) -> st.SearchStrategy[Any]:
    versions: tuple[Literal[4, 6], ...] = (4, 6) if v is None else (v,)
    return st.sampled_from(versions).flatmap(
        lambda version: st.builds(
            lambda address, prefix: ipaddress.ip_network((address, prefix), strict=False),
            st.ip_addresses(v=version),
            st.integers(0, 32 if version == 4 else 128),
        )
    )


def value(plan: FieldPlan) -> st.SearchStrategy[Any]:
    """The strategy of values for one attribute (see :func:`~ponykit.testing.factories.field_plans`)."""
    t, limits = plan.py_type, plan.limits
    if isinstance(t, type) and issubclass(t, enum.Enum):
        return st.sampled_from(list(t))
    if t is bool:
        return st.booleans()
    if t is AwareDatetime:
        return st.datetimes(
            _dt.datetime.combine(_DAY_MIN, _dt.time()),
            _dt.datetime.combine(_DAY_MAX, _dt.time()),
            timezones=st.sampled_from([_dt.timezone.utc, _dt.timezone(_dt.timedelta(hours=5, minutes=30))]),
        )
    if t in (IPAddress, ipaddress.IPv4Address, ipaddress.IPv6Address):
        return st.ip_addresses(v=None if t is IPAddress else 4 if t is ipaddress.IPv4Address else 6)
    if t in (IPNetwork, ipaddress.IPv4Network, ipaddress.IPv6Network):
        return _network(None if t is IPNetwork else 4 if t is ipaddress.IPv4Network else 6)
    if t is EncryptedStr:
        return _text(plan.options.get("max_len"))
    if t is EncryptedBytes:
        return st.binary(min_size=1, max_size=40)
    if t is EncryptedJson or t is Json:
        return _json()
    if isinstance(t, type) and issubclass(t, int):
        return st.integers(limits.min, limits.max)
    if t is float:
        low, high = limits.min, limits.max
        # MariaDB's DOUBLE refuses subnormal values; Pony skips a zero bound, so 0.0 is outside such a range.
        return st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    if t is Decimal:
        return _decimal(plan)
    if isinstance(t, type) and issubclass(t, str):
        return _text(limits.max_len)
    if t is bytes:
        return st.binary(min_size=1, max_size=40)
    if t is _dt.datetime:
        return st.datetimes(
            _dt.datetime.combine(_DAY_MIN, _dt.time()), _dt.datetime.combine(_DAY_MAX, _dt.time())
        )
    if t is _dt.date:
        return st.dates(_DAY_MIN, _DAY_MAX)
    if t is _dt.time:
        return st.times()
    if t is _dt.timedelta:  # MariaDB's TIME holds +-838:59:59
        return st.timedeltas(-_dt.timedelta(hours=838), _dt.timedelta(hours=838))
    if t is uuid.UUID:
        return st.uuids()
    raise FactoryError(
        f"strategies.entity() has no strategy for {plan.label} (type {getattr(t, '__name__', t)!r}): "
        f"pass one, entity(..., {plan.name}=st.just(...))"
    )


def _related(value: Any) -> st.SearchStrategy[Any]:
    if isinstance(value, st.SearchStrategy):
        return value
    if isinstance(value, (list, tuple)):
        return st.sampled_from(list(value))
    return st.just(value)


def entity(
    entity: Any, *, related: Mapping[str, Any] | None = None, **overrides: Any
) -> st.SearchStrategy[dict[str, Any]]:
    """A strategy of dicts of attribute values valid for ``entity(**values)`` (see the module docs).

    ``related`` maps reference attributes to a strategy, an object or a list of objects; ``overrides``
    maps attributes to values or strategies. References not given are left out (a factory fills them).
    """
    related = dict(related or {})
    plans = {plan.name: plan for plan in field_plans(entity)}
    for name in (*related, *overrides):
        if name not in plans:
            raise OptionError(
                f"strategies.entity({entity.__name__}): {entity.__name__} has no attribute {name!r}; "
                f"its attributes are {', '.join(plans)}"
            )
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, plan in plans.items():
        if name in overrides:
            given = overrides[name]
            required[name] = given if isinstance(given, st.SearchStrategy) else st.just(given)
        elif name in related:
            required[name] = _related(related[name])
        elif plan.fill == "value":
            required[name] = value(plan) if plan.py_check is None else _checked(plan)
        elif plan.fill == "skip" and _optional_value(plan, entity):
            optional[name] = value(plan) | st.none() if _nullable(plan, entity) else value(plan)
    return st.fixed_dictionaries(required, optional=optional)


def _checked(plan: FieldPlan) -> st.SearchStrategy[Any]:
    # A py_check may accept a sliver of the type's domain (years 1450-2100 among all ints): filtering the
    # whole domain would reject almost every draw. Draw near the values the factory finds acceptable.
    check = plan.py_check
    passing = passing_values(plan)
    if not passing:
        return value(plan).filter(check)
    t = plan.py_type
    if isinstance(t, type) and issubclass(t, int) and not issubclass(t, (bool, enum.Enum)):
        low, high = min(passing) - 1000, max(passing) + 1000
        if plan.limits.min is not None:
            low = max(low, plan.limits.min)
        if plan.limits.max is not None:
            high = min(high, plan.limits.max)
        return st.integers(low, high).filter(check) | st.sampled_from(passing)
    return st.sampled_from(passing) | value(plan).filter(check)


def _optional_value(plan: FieldPlan, owner: Any) -> bool:
    # An Optional value attribute without default: worth drawing (with a py_check, only when it passes).
    info = _pony.attr_info(_pony.entity_attribute(owner, plan.name))
    if info.kind != "value" or info.required or info.auto or info.discriminator or info.default is not None:
        return False
    try:
        value(plan)
    except FactoryError:
        return False  # a type without a strategy: left out rather than refused, it is Optional
    return plan.py_check is None


def _nullable(plan: FieldPlan, owner: Any) -> bool:
    return bool(_pony.attr_info(_pony.entity_attribute(owner, plan.name)).nullable)
