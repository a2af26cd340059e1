"""Contract tests for users' own cache backends and attribute types (re-exported by ponykit.testing)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import pytest

__all__ = ["AttributeTypeContract", "CacheBackendContract", "ManualClock"]


class ManualClock:
    """A clock moved by hand, for backends that take a ``timer`` (``MemoryCache(timer=clock)``).

    Calling it gives the current time; :meth:`advance` moves it forward.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self.now += seconds


class CacheBackendContract:
    """The contract of a cache backend (:class:`ponykit.query.backends.CacheBackend`), as tests.

    Subclass it in a test module (name the subclass ``Test...``) and provide a ``backend`` fixture that
    returns a fresh, empty backend for each test. Entries must expire after their ``ttl``: by default the
    tests sleep past ``ttl_seconds``; a backend that takes a timer can be given a :class:`ManualClock`,
    with an ``advance`` fixture that moves it::

        class TestMyCache(CacheBackendContract):
            @pytest.fixture
            def clock(self):
                return ManualClock()

            @pytest.fixture
            def backend(self, clock):
                return MyCache(timer=clock)

            @pytest.fixture
            def advance(self, clock):
                return clock.advance
    """

    ttl_seconds: ClassVar[float] = 0.3
    """The ``ttl`` the expiry tests use (keep it small when ``advance`` really sleeps)."""

    @pytest.fixture
    def advance(self) -> Callable[[float], None]:
        """Moves the backend's clock forward: ``time.sleep`` unless overridden."""
        return time.sleep

    @pytest.fixture
    def plain_values(self) -> list[Any]:
        """Values the query cache stores (rows are tuples of column values): each must come back equal."""
        import datetime as dt
        import uuid
        from decimal import Decimal

        return [
            None,
            True,
            0,
            -7,
            2**40,
            2.5,
            "",
            "text é",
            b"\x00bytes",
            Decimal("12.30"),
            dt.date(2024, 2, 29),
            dt.datetime(2024, 2, 29, 12, 30, 5, 123456),
            uuid.UUID(int=7),
            (1, "a", None),
            [(1, "a"), (2, "b")],
            {"k": [1, 2], "n": {"x": (3,)}},
        ]

    def test_backend_satisfies_the_protocol(self, backend: Any) -> None:
        """The backend has every method of the protocol (``isinstance(backend, CacheBackend)``)."""
        from ..query.backends import CacheBackend

        assert isinstance(backend, CacheBackend), f"{backend!r} lacks a method of the CacheBackend protocol"

    def test_get_of_an_unknown_key_is_missing(self, backend: Any) -> None:
        """``get`` of a key never set returns ``MISSING`` (not None: None is a value)."""
        from ..query.backends import MISSING

        assert backend.get(("contract", "never set")) is MISSING

    def test_set_then_get_returns_an_equal_value(self, backend: Any, plain_values: list[Any]) -> None:
        """Every kind of plain value comes back equal, with its type (a tuple stays a tuple); a stored
        None is a value, not a miss."""
        from ..query.backends import MISSING

        for index, value in enumerate(plain_values):
            backend.set(("contract", index), value)
        for index, value in enumerate(plain_values):
            got = backend.get(("contract", index))
            assert got is not MISSING, f"value {value!r} was stored but get() says MISSING"
            assert got == value, f"stored {value!r}, got back {got!r}"
            assert type(got) is type(value), f"stored a {type(value).__name__}, got a {type(got).__name__}"

    def test_set_replaces_the_value(self, backend: Any) -> None:
        """A second ``set`` of a key replaces its value."""
        backend.set(("contract", "k"), 1)
        backend.set(("contract", "k"), 2)
        assert backend.get(("contract", "k")) == 2

    def test_distinct_keys_never_share_an_entry(self, backend: Any) -> None:
        """Keys are tuples of plain values; keys that differ (in a value, its type or its length) are
        different entries."""
        keys = [("a", 1), ("a", "1"), ("b", 1), ("a", 1, None), ("a",), (("a", 1),)]
        for index, key in enumerate(keys):
            backend.set(key, index)
        assert [backend.get(key) for key in keys] == list(range(len(keys)))

    def test_entries_expire_after_their_ttl(self, backend: Any, advance: Callable[[float], None]) -> None:
        """An entry is there right after ``set(..., ttl)`` and gone once ``ttl`` has passed; an entry
        with a longer ttl outlives it."""
        from ..query.backends import MISSING

        ttl = self.ttl_seconds
        backend.set(("contract", "short"), "s", ttl)
        backend.set(("contract", "long"), "l", ttl * 20)
        assert backend.get(("contract", "short")) == "s"
        advance(ttl * 1.5)
        assert backend.get(("contract", "short")) is MISSING, f"an entry outlived its ttl of {ttl}s"
        assert backend.get(("contract", "long")) == "l"

    def test_clear_drops_every_entry_and_keeps_generations(self, backend: Any) -> None:
        """``clear`` drops every entry; generations stay where they were (they never go back)."""
        from ..query.backends import MISSING

        backend.set(("contract", 1), "one")
        backend.bump(["ContractEntity"])
        before = backend.generations(["ContractEntity"])
        backend.clear()
        assert backend.get(("contract", 1)) is MISSING
        assert backend.generations(["ContractEntity"]) == before

    def test_bump_moves_only_the_names_given(self, backend: Any) -> None:
        """``generations`` gives ints; ``bump`` gives a name a generation it never had before and leaves
        the others alone."""
        first = backend.generations(["ContractA", "ContractB"])
        message = f"generations() returned {first!r}: a tuple of ints (None only while the backend is down)"
        assert isinstance(first, tuple), message
        assert all(isinstance(g, int) for g in first), message
        assert len(first) >= 2
        b_before = backend.generations(["ContractB"])
        seen = {backend.generations(["ContractA"])}
        for _ in range(3):
            backend.bump(["ContractA"])
            seen.add(backend.generations(["ContractA"]))
        assert len(seen) == 4, f"bump() gave a generation seen before: {sorted(seen)}"
        assert backend.generations(["ContractB"]) == b_before, "bump(['ContractA']) moved ContractB"
        assert backend.generations(["ContractA", "ContractB"]) != first

    def test_get_or_compute_computes_on_a_miss_and_stores(self, backend: Any) -> None:
        """A miss runs ``compute`` and stores its value when it says it may (``(value, False)``); the
        next call is a hit (``(value, True)``) that does not compute."""
        calls: list[int] = []

        def compute() -> tuple[Any, bool]:
            calls.append(1)
            return ("computed", len(calls)), True

        assert backend.get_or_compute(("contract", "c"), compute) == (("computed", 1), False)
        assert backend.get_or_compute(("contract", "c"), compute) == (("computed", 1), True)
        assert len(calls) == 1

    def test_get_or_compute_does_not_store_what_it_may_not(self, backend: Any) -> None:
        """When ``compute`` says ``may_store=False`` nothing is stored: the next call computes again."""
        from ..query.backends import MISSING

        calls: list[int] = []

        def compute() -> tuple[Any, bool]:
            calls.append(1)
            return len(calls), False

        assert backend.get_or_compute(("contract", "n"), compute) == (1, False)
        assert backend.get_or_compute(("contract", "n"), compute) == (2, False)
        assert backend.get(("contract", "n")) is MISSING

    def test_concurrent_misses_compute_once(self, backend: Any) -> None:
        """Threads missing the same key at once run ``compute`` once and all get its value."""
        calls: list[int] = []
        results: list[Any] = []
        start = threading.Barrier(6)

        def compute() -> tuple[Any, bool]:
            calls.append(1)
            time.sleep(0.2)  # long enough for every thread to arrive while it runs
            return "once", True

        def worker() -> None:
            start.wait()
            results.append(backend.get_or_compute(("contract", "stampede"), compute)[0])

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == ["once"] * 6
        assert len(calls) == 1, f"compute ran {len(calls)} times for 6 concurrent misses of one key"


class AttributeTypeContract:
    """The contract of an attribute type (an :class:`~ponykit.types.AttributeType`, an Enum ...), as tests.

    Subclass it in a test module (name the subclass ``Test...``) and provide two fixtures:
    ``attribute_type``, the type as attributes declare it (``Required(attribute_type)``), and
    ``sample_values``, two or more distinct valid Python values. Optional fixtures: ``invalid_values``
    (values ``validate`` must reject; default ``[object()]``) and ``contract_database`` (a fresh Database,
    bound, not yet mapped; default in-memory SQLite: override it to run on your own backends too).

    The tests declare an entity ``ContractSubject`` with ``value = Required(attribute_type)`` and
    ``maybe = Optional(attribute_type, nullable=True)``, attach ponykit and map it.
    """

    expected_error: ClassVar[type[BaseException] | tuple[type[BaseException], ...]] = ()
    """The exception an invalid value raises (default: :class:`ponykit.errors.ValidationError`)."""

    @pytest.fixture
    def invalid_values(self) -> list[Any]:
        """Values the type must reject when assigned to an attribute."""
        return [object()]

    @pytest.fixture
    def contract_database(self) -> Iterator[Any]:
        """A fresh Database bound to in-memory SQLite, not mapped (override to use other backends)."""
        from pony.orm import Database

        from ..binding import bind_url

        db = Database()
        bind_url(db, "sqlite://:sharedmemory:")
        yield db
        db.disconnect()

    @pytest.fixture
    def contract_entity(self, contract_database: Any, attribute_type: Any) -> Iterator[Any]:
        """The ``ContractSubject`` entity on ``contract_database`` (attached and mapped)."""
        from pony.orm import Optional, Required

        from .. import kit

        db = contract_database

        class ContractSubject(db.Entity):  # type: ignore[name-defined,misc]
            value = Required(attribute_type)
            maybe = Optional(attribute_type, nullable=True)

        kit.attach(db)
        db.generate_mapping(create_tables=True)
        yield ContractSubject
        kit.forget(db)

    def _codec(self, attribute_type: Any) -> Any:
        from ..types.base import json_codec

        codec = json_codec(attribute_type)
        assert codec is not None, f"{attribute_type!r} is not a registered attribute type (register_type)"
        return codec

    def test_samples_are_distinct(self, sample_values: Sequence[Any]) -> None:
        """The contract needs two or more distinct sample values (queries tell them apart)."""
        assert len(sample_values) >= 2
        assert all(a != b for i, a in enumerate(sample_values) for b in sample_values[i + 1 :])

    def test_values_round_trip_through_the_database(
        self, contract_entity: Any, sample_values: Sequence[Any]
    ) -> None:
        """What is stored comes back equal, in a new session, as the attribute's Python type."""
        from pony.orm import db_session, flush

        with db_session:
            rows = [contract_entity(value=value, maybe=value) for value in sample_values]
            flush()  # the keys are known once the rows are inserted
            ids = [row.id for row in rows]
        with db_session:
            for key, value in zip(ids, sample_values, strict=True):
                row = contract_entity[key]
                assert row.value == value, f"stored {value!r}, read back {row.value!r}"
                assert row.maybe == value, f"stored {value!r} in an Optional, read back {row.maybe!r}"
                assert type(row.value) is type(row.maybe)

    def test_none_is_stored_as_null(self, contract_entity: Any, sample_values: Sequence[Any]) -> None:
        """An Optional attribute holds None (left out, or set back to None) and queries find it as NULL."""
        from pony.orm import db_session, flush

        with db_session:
            rows = (
                contract_entity(value=sample_values[0]),
                contract_entity(value=sample_values[1], maybe=sample_values[1]),
            )
            flush()
            empty, reset = (row.id for row in rows)
        with db_session:
            contract_entity[reset].maybe = None
        with db_session:
            assert contract_entity[empty].maybe is None
            assert contract_entity[reset].maybe is None
            assert contract_entity.select(lambda s: s.maybe is None).count() == 2

    def test_invalid_values_are_rejected_naming_the_attribute(
        self, contract_entity: Any, sample_values: Sequence[Any], invalid_values: Sequence[Any]
    ) -> None:
        """Assigning an invalid value raises ``expected_error`` naming ``ContractSubject.value``."""
        from pony.orm import db_session, rollback

        from ..errors import ValidationError

        expected = self.expected_error or ValidationError
        for bad in invalid_values:
            with db_session:
                with pytest.raises(expected) as caught:
                    contract_entity(value=bad)
                assert "ContractSubject.value" in str(caught.value), (
                    f"the error for {bad!r} does not name the attribute: {caught.value}"
                )
                rollback()
            with db_session:
                row = contract_entity(value=sample_values[0])
                with pytest.raises(expected, match=r"ContractSubject\.maybe"):
                    row.maybe = bad
                rollback()

    def test_json_round_trip(self, attribute_type: Any, sample_values: Sequence[Any]) -> None:
        """``to_json`` gives JSON-safe data that ``from_json`` turns back into an equal value, and
        ``json_schema`` is a JSON Schema fragment (a dict)."""
        codec = self._codec(attribute_type)
        for value in sample_values:
            data = json.loads(json.dumps(codec.to_json(value)))
            assert codec.from_json(data) == value, f"{value!r} -> {data!r} -> {codec.from_json(data)!r}"
        assert isinstance(codec.json_schema(), dict)

    def test_serialization_of_entities_uses_the_json_form(
        self, attribute_type: Any, contract_entity: Any, sample_values: Sequence[Any]
    ) -> None:
        """``ponykit.serialization.to_json`` of objects and of a query (its fast path) both give the
        type's JSON form, and None as null."""
        from pony.orm import db_session

        from ..serialization import to_json

        codec = self._codec(attribute_type)
        with db_session:
            for value in sample_values:
                contract_entity(value=value)
        # The JSON form of the value as kept (validate may normalise it: AwareDatetime keeps UTC).
        expected = [json.loads(json.dumps(codec.to_json(codec.validate(value)))) for value in sample_values]
        with db_session:
            query = contract_entity.select().order_by(lambda s: s.id)
            from_objects = [json.loads(to_json(obj)) for obj in list(query)]
            from_query = json.loads(to_json(query))
        assert [row["value"] for row in from_objects] == expected
        assert [row["value"] for row in from_query] == expected
        assert {row["maybe"] for row in from_query} == {None}

    def test_queries_compare_with_python_values(
        self, attribute_type: Any, contract_entity: Any, sample_values: Sequence[Any]
    ) -> None:
        """For a type that declares ``queryable`` (the default): ``==``, ``in`` and ``get(value=...)``
        with Python values find the rows that hold them."""
        from pony.orm import db_session

        if not self._codec(attribute_type).queryable:
            return  # the type says generator queries may not compare it with Python values
        with db_session:
            for value in sample_values:
                contract_entity(value=value)
        with db_session:
            for value in sample_values:
                assert _count_equal(contract_entity, value) == 1, value
                assert contract_entity.get(value=value) is not None, value
            wanted = list(sample_values[:2])
            assert contract_entity.select(lambda s: s.value in wanted).count() == 2


def _count_equal(entity: Any, value: Any) -> int:
    """How many rows of ``entity`` hold ``value`` (a generator query with a Python value parameter)."""
    return int(entity.select(lambda s: s.value == value).count())
