"""Factories: valid objects of an entity, built from its metadata, for tests.

::

    make_user = factory(User, plan="free")
    with db_session:
        user = make_user()                 # every Required attribute filled, unique values from a sequence
        other = make_user(email="x@y")     # a value given here wins over the factory's defaults
        values = make_user.build()         # the keyword arguments make_user() would pass to User(...)
        users = make_user.create_batch(10)

Rules, per attribute: a value given to the call or to ``factory()`` wins (a callable default other than a
class is called with the object's sequence number, a :class:`Factory` with no argument); an attribute
with a ``default=`` keeps it; a Required attribute, a primary key that is not ``auto`` and every part of
a unique key get a value made from the object's sequence number (``"name-1"``, ``1``, ``2000-01-02`` ...)
within the attribute's ``max_len``, ``min``/``max``, size and Decimal precision; a ``py_check`` is
tried on a few candidates. A Required reference to another entity gets an object made by that entity's
own factory (recursively); Optional attributes and references stay unset, ``Set`` attributes empty.
Sequences are per entity hierarchy, so two factories of one entity never hand out the same unique value.
Objects are created in the current ``db_session``; nothing is committed.
"""

from __future__ import annotations

import datetime as _dt
import enum
import ipaddress
import itertools
import string
import threading
import uuid
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

from pony.orm import Json

from .. import _pony
from ..errors import FactoryError, OptionError
from ..types import AwareDatetime, EncryptedBytes, EncryptedJson, EncryptedStr, IPAddress, IPNetwork
from ..types.base import AttributeType

__all__ = [
    "Factory",
    "FieldPlan",
    "factory",
    "factory_for",
    "field_plans",
    "passing_values",
    "reset_sequences",
]

E = TypeVar("E")

_EPOCH = _dt.datetime(2000, 1, 1)
_DIGITS = string.digits + string.ascii_lowercase
# Shifts of the sequence number tried, in order, when a py_check rejects the first value: round numbers
# reach the usual checked ranges (years, percentages, amounts).
_SHIFTS = (10, 100, 1000, 2000, 10_000, 100_000, 1_000_000, 1_000_003)


@dataclass(frozen=True)
class FieldPlan:
    """How a factory (or a strategy) fills one attribute of an entity.

    ``fill`` is ``"value"`` (make a value), ``"related"`` (an object of the related entity) or ``"skip"``
    (leave it to Pony: Optional, ``default=``, auto, discriminator, ``Set``). ``unique`` marks a primary
    key or a part of a unique key: values must differ between objects; ``strict`` when the key is this
    attribute alone (a part of a composite key may repeat once its domain is used up).
    """

    name: str
    label: str
    py_type: Any
    fill: str
    unique: bool
    strict: bool
    limits: _pony.ValueLimits
    py_check: Any
    options: Mapping[str, Any]


def field_plans(entity: Any) -> tuple[FieldPlan, ...]:
    """The :class:`FieldPlan` of every attribute of a mapped ``entity`` (inherited ones included)."""
    if not _pony.is_mapped(_pony.database_of(entity)):
        raise FactoryError(
            f"factory({entity.__name__}) needs the mapping: call db.generate_mapping() before making objects"
        )
    keyed: dict[str, bool] = {}  # attribute name -> alone in its key
    for key in _pony.unique_keys(entity):
        for part in key:
            name = _pony.attr_info(part).name
            keyed[name] = keyed.get(name, False) or len(key) == 1
    pk = _pony.entity_pk_attributes(entity)
    for part in pk:
        keyed[_pony.attr_info(part).name] = len(pk) == 1
    plans = []
    for info in _pony.attr_infos(entity):
        unique = info.name in keyed
        if info.is_collection or info.discriminator or info.auto:
            fill = "skip"
        elif info.kind == "one":
            fill = "related" if info.required or info.pk_offset is not None else "skip"
        elif info.default is not None and (callable(info.default) or not unique):
            fill = "skip"  # Pony's own default, unless a constant would repeat in a unique key
        elif info.required or info.pk_offset is not None or unique:
            fill = "value"
        else:
            fill = "skip"
        plans.append(
            FieldPlan(
                name=info.name,
                label=info.label,
                py_type=info.py_type,
                fill=fill,
                unique=unique,
                strict=keyed.get(info.name, False),
                limits=_pony.value_limits(info.attr),
                py_check=info.py_check,
                options=info.options,
            )
        )
    return tuple(plans)


# ---------------------------------------------------------------------------------------------------------
# Sequences: per hierarchy root, shared by every factory of its entities


_sequences: weakref.WeakKeyDictionary[Any, Iterator[int]] = weakref.WeakKeyDictionary()
_sequence_lock = threading.Lock()


def reset_sequences(entity: Any = None) -> None:
    """Start the sequences again at 1: of ``entity``'s hierarchy, or of every entity.

    Only safe when the rows made with the old numbers are gone (a test rolled back, tables truncated):
    otherwise the next unique values repeat them.
    """
    with _sequence_lock:
        if entity is None:
            _sequences.clear()
        else:
            _sequences.pop(_pony.root_entity(entity), None)


def _next_number(entity: Any) -> int:
    root = _pony.root_entity(entity)
    with _sequence_lock:
        counter = _sequences.get(root)
        if counter is None:
            counter = _sequences[root] = itertools.count(1)
        return next(counter)


# ---------------------------------------------------------------------------------------------------------
# Values from a sequence number


class _Exhausted(Exception):
    """The attribute's domain holds fewer distinct values than the sequence number asks for."""


def _nth_int(n: int, low: int, high: int) -> int:
    # The n-th distinct int of [low, high] (1-based): 1, 2, 3 ... when the range allows, then downwards.
    start = 1 if low <= 1 <= high else low
    upward = high - start + 1
    if n <= upward:
        return start + n - 1
    value = start - (n - upward)
    if value < low:
        raise _Exhausted
    return value


def _int(n: int, low: Any, high: Any, unique: bool) -> int:
    low = -(2**31) if low is None else int(low)
    high = 2**31 - 1 if high is None else int(high)
    if high < low:
        raise _Exhausted
    return _nth_int(n if unique else (n - 1) % (high - low + 1) + 1, low, high)


def _float(n: int, low: Any, high: Any) -> float:
    if low is not None and high is not None:
        return float(low) + (float(high) - float(low)) * n / (n + 1)  # distinct, strictly inside
    if low is not None:
        return float(low) + n
    if high is not None:
        return float(high) - n
    return float(n)


def _decimal(n: int, plan: FieldPlan, unique: bool) -> Decimal:
    limits = plan.limits
    precision = limits.precision or 12
    scale = limits.scale if limits.scale is not None else 2
    quantum = Decimal(1).scaleb(-scale)
    largest = Decimal(10) ** (precision - scale) - quantum
    low = -largest if limits.min is None else max(Decimal(limits.min), -largest)
    high = largest if limits.max is None else min(Decimal(limits.max), largest)
    whole_low, whole_high = int(-((-low) // 1)), int(high // 1)
    if whole_high - whole_low >= 10**6:  # whole numbers read best; units of the last place otherwise
        return Decimal(_int(n, whole_low, whole_high, unique)).quantize(quantum)
    units = _int(n, int(-((-low) // quantum)), int(high // quantum), unique)
    return (units * quantum).quantize(quantum)


def _base36(n: int) -> str:
    digits = ""
    while True:
        n, digit = divmod(n, 36)
        digits = _DIGITS[digit] + digits
        if not n:
            return digits


def _str(n: int, plan: FieldPlan, unique: bool) -> str:
    max_len = plan.limits.max_len or plan.options.get("max_len")
    text = f"{plan.name}-{n}"
    if max_len is None or len(text) <= max_len:
        return text
    if not unique:
        return text[:max_len]
    compact = _base36(n)  # never contains "-": cannot repeat a "name-n" value of a smaller n
    if len(compact) > max_len:
        raise _Exhausted
    return compact


def _member(n: int, members: list[Any], unique: bool) -> Any:
    if unique and n > len(members):
        raise _Exhausted
    return members[(n - 1) % len(members)]


def _network(n: int, v6: bool) -> Any:
    if v6:
        return ipaddress.IPv6Network(((0xFD00 << 112) | (n << 64), 64))
    return ipaddress.IPv4Network((0x0A000000 + ((n % 2**16) << 8), 24))


def _address(n: int, v6: bool) -> Any:
    if v6:
        return ipaddress.IPv6Address((0xFD00 << 112) | n)
    return ipaddress.IPv4Address(0x0A000000 + n % 2**24)


def _value(n: int, plan: FieldPlan, unique: bool) -> Any:
    """The value made from sequence number ``n``; raises _Exhausted or LookupError (unknown type)."""
    t, limits = plan.py_type, plan.limits
    if isinstance(t, type) and issubclass(t, enum.Enum):
        return _member(n, list(t), unique)
    if t is bool:
        return _member(n, [True, False], unique)
    if t is AwareDatetime:
        return _EPOCH.replace(tzinfo=_dt.timezone.utc) + _dt.timedelta(seconds=n)
    if t in (IPAddress, ipaddress.IPv4Address, ipaddress.IPv6Address):
        return _address(n, t is ipaddress.IPv6Address)
    if t in (IPNetwork, ipaddress.IPv4Network, ipaddress.IPv6Network):
        return _network(n, t is ipaddress.IPv6Network)
    if t is EncryptedStr:
        return _str(n, plan, unique)
    if t is EncryptedBytes:
        return _str(n, plan, unique).encode()
    if t is EncryptedJson or t is Json:
        return {plan.name: n}
    if isinstance(t, type) and issubclass(t, int):
        return _int(n, limits.min, limits.max, unique)
    if t is float:
        return _float(n, limits.min, limits.max)
    if t is Decimal:
        return _decimal(n, plan, unique)
    if isinstance(t, type) and issubclass(t, str):
        return _str(n, plan, unique)
    if t is bytes:
        return f"{plan.name}-{n}".encode()
    if t is _dt.datetime:
        return _EPOCH + _dt.timedelta(seconds=n)
    if t is _dt.date:
        return _EPOCH.date() + _dt.timedelta(days=n)
    if t is _dt.time:
        if n >= 86400:
            raise _Exhausted
        return (_EPOCH + _dt.timedelta(seconds=n)).time()
    if t is _dt.timedelta:
        return _dt.timedelta(seconds=n)
    if t is uuid.UUID:
        return uuid.uuid4()
    if isinstance(t, type) and issubclass(t, AttributeType):
        raise LookupError(f"a ponykit type ({t.__name__}) the factory has no rule for")
    raise LookupError(f"type {getattr(t, '__name__', t)!r}, which the factory has no rule for")


def _checked(plan: FieldPlan, entity: Any, n: int) -> Any:
    """A value for ``plan`` that its domain and ``py_check`` accept, made from sequence number ``n``."""
    where = f"factory({entity.__name__}) cannot make a value for {plan.label}"
    fix = f"pass one: factory({entity.__name__}, {plan.name}=...) or make(..., {plan.name}=...)"
    try:
        value = _value(n, plan, plan.unique)
    except LookupError as exc:
        raise FactoryError(f"{where}: it has {exc}; {fix}") from None
    except _Exhausted:
        if plan.strict:
            raise FactoryError(
                f"{where}: it is unique and its limits (max_len, min/max, members) hold fewer than {n} "
                f"distinct values; {fix}, or widen the attribute"
            ) from None
        value = _value(n, plan, False)
    if plan.py_check is None or plan.py_check(value):
        return value
    for shift in _SHIFTS:
        try:
            candidate = _value(n + shift, plan, plan.unique)
        except _Exhausted:
            continue
        if plan.py_check(candidate):
            return candidate
    raise FactoryError(
        f"{where}: its py_check rejected the {len(_SHIFTS) + 1} values the factory tried; {fix} "
        "(a value, or a function of the sequence number: lambda n: ...)"
    )


def passing_values(plan: FieldPlan, limit: int = 8) -> list[Any]:
    """Up to ``limit`` values the factory would try for ``plan`` that its ``py_check`` accepts."""
    found: list[Any] = []
    for shift in (0, *_SHIFTS):
        for n in range(1, limit + 1):
            try:
                candidate = _value(n + shift, plan, False)
            except (_Exhausted, LookupError):
                continue
            if (plan.py_check is None or plan.py_check(candidate)) and candidate not in found:
                found.append(candidate)
        if len(found) >= limit:
            break
    return found[:limit]


# ---------------------------------------------------------------------------------------------------------
# Factories


_building = threading.local()


def _chain() -> list[tuple[Any, str]]:
    # The objects being created in this thread, each with the reference followed to the next one.
    chain: list[tuple[Any, str]] | None = getattr(_building, "chain", None)
    if chain is None:
        chain = _building.chain = []
    return chain


@contextmanager
def _creating(entity: Any) -> Iterator[None]:
    chain = _chain()
    if any(e is entity for e, _ in chain):
        path = " -> ".join(via for _, via in chain)
        raise FactoryError(
            f"factory({entity.__name__}): the Required references {path} lead back to {entity.__name__}, "
            f"so no object can be created first; pass one of these objects yourself (make(attribute=obj)) "
            "or make one of the references Optional"
        )
    chain.append((entity, "?"))
    try:
        yield
    finally:
        chain.pop()


@contextmanager
def _following(label: str) -> Iterator[None]:
    chain = _chain()
    if not chain:
        yield  # build() called directly: nothing is being created yet
        return
    entity, previous = chain[-1]
    chain[-1] = (entity, label)
    try:
        yield
    finally:
        chain[-1] = (entity, previous)


class Factory(Generic[E]):
    """Makes valid ``entity`` objects: call it (or :meth:`create`), :meth:`build`, :meth:`create_batch`.

    Made by :func:`factory`; see the module documentation for how each attribute is filled.
    """

    def __init__(self, entity: type[E], defaults: Mapping[str, Any]) -> None:
        if not _pony.is_entity_class(entity):
            raise OptionError(f"factory() expects an entity class, got {type(entity).__name__}")
        self.entity = entity
        self.defaults = dict(defaults)
        self._check_names(self.defaults, "factory")
        self._plans: tuple[FieldPlan, ...] | None = None

    def __repr__(self) -> str:
        return f"<Factory of {self.entity.__name__}>"

    def _check_names(self, values: Mapping[str, Any], where: str) -> None:
        for name in values:
            if _pony.find_attribute(self.entity, name) is None:
                names = ", ".join(_pony.attr_info(a).name for a in _pony.entity_attributes(self.entity))
                raise OptionError(
                    f"{where}({self.entity.__name__}): {self.entity.__name__} has no attribute {name!r}; "
                    f"its attributes are {names}"
                )

    def plans(self) -> tuple[FieldPlan, ...]:
        """The :class:`FieldPlan` of each attribute (read once the entity is mapped)."""
        if self._plans is None:
            self._plans = field_plans(self.entity)
        return self._plans

    def build(self, **values: Any) -> dict[str, Any]:
        """The keyword arguments :meth:`create` would pass to the entity (no object of the entity made).

        A Required reference not given is an object made by the related entity's factory (created in the
        current ``db_session``): pass it yourself to build without touching the session.
        """
        self._check_names(values, "build")
        n = _next_number(self.entity)
        result: dict[str, Any] = {}
        for plan in self.plans():
            name = plan.name
            if name in values:
                result[name] = values[name]
            elif name in self.defaults:
                result[name] = _resolve(self.defaults[name], n)
            elif plan.fill == "value":
                result[name] = _checked(plan, self.entity, n)
            elif plan.fill == "related":
                with _following(plan.label):
                    result[name] = factory_for(plan.py_type).create()
        return result

    def create(self, **values: Any) -> E:
        """A new object of the entity in the current ``db_session`` (flushed with the session)."""
        with _creating(self.entity):
            return self.entity(**self.build(**values))

    __call__ = create

    def create_batch(self, size: int, **values: Any) -> list[E]:
        """``size`` new objects (the same ``values`` for each; unique attributes still differ)."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise OptionError(f"create_batch() needs a size >= 0, got {size!r}")
        return [self.create(**values) for _ in range(size)]


def _resolve(default: Any, n: int) -> Any:
    if isinstance(default, Factory):
        return default.create()
    if callable(default) and not isinstance(default, type) and not _pony.is_entity_instance(default):
        return default(n)
    return default


def factory(entity: type[E], **defaults: Any) -> Factory[E]:
    """A :class:`Factory` of valid ``entity`` objects; ``defaults`` are used for every object made.

    A default may be a value, a function of the object's sequence number (``email=lambda n: f"u{n}@x"``)
    or another factory (``author=make_author``) called for each object.
    """
    return Factory(entity, defaults)


_defaults: weakref.WeakKeyDictionary[Any, Factory[Any]] = weakref.WeakKeyDictionary()


def factory_for(entity: type[E]) -> Factory[E]:
    """The factory (without defaults) that makes the objects Required references of other entities need."""
    made = _defaults.get(entity)
    if made is None:
        made = _defaults[entity] = Factory(entity, {})
    return made
