"""transaction() and retrying(): options, backoff, nesting rules, timeouts and what they leave behind."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import Database, OptimisticCheckError, Required, db_session

import ponykit as pk
from ponykit.transactions._isolation import Mode


def make(db: Database) -> Any:
    class Counter(db.Entity):
        n = Required(int)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        Counter(n=0)
    return Counter


# ---------------------------------------------------------------------------------------------------------
# Backoff and options (no database)


@given(
    base=st.floats(0, 5),
    cap=st.floats(0, 10),
    failures=st.integers(1, 200),
)
def test_backoff_stays_within_full_jitter_bounds(base: float, cap: float, failures: int) -> None:
    backoff = pk.Backoff(base=base, cap=cap)
    ceiling = min(cap, base * 2 ** min(failures - 1, 62))
    assert 0 <= backoff.delay(failures) <= ceiling
    assert pk.Backoff(base=base, cap=cap, jitter=False).delay(failures) == ceiling


def test_backoff_spreads_waits() -> None:
    backoff = pk.Backoff(base=0.1, cap=1.0)
    waits = {backoff.delay(4) for _ in range(50)}
    assert len(waits) > 40  # full jitter: not one fixed wait every thread would collide on again


@pytest.mark.parametrize(
    "kwargs",
    [
        {"retry": -1},
        {"retry": 1.5},
        {"retry": True},
        {"isolation": "snapshot"},
        {"read_only": "yes"},
        {"timeout": 0},
        {"timeout": -2},
        {"timeout": True},
        {"backoff": 3},
        {"db": "app.db"},
    ],
)
def test_bad_options_raise_option_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(pk.OptionError) as info:
        pk.transaction(**kwargs)
    assert next(iter(kwargs)) in str(info.value)


@pytest.mark.parametrize("kwargs", [{"base": -1}, {"cap": "1"}, {"budget": True}])
def test_bad_backoff_raises_option_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(pk.OptionError):
        pk.Backoff(**kwargs)


def test_mode_statements_per_backend() -> None:
    mode = Mode("repeatable_read", read_only=True, deferrable=True, timeout=1.5)
    assert mode.begin_statements("postgres") == (
        ["SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY", "SET LOCAL statement_timeout = 1500"],
        [],
    )
    begin, restore = mode.begin_statements("mysql", mariadb=True)
    assert begin[0] == "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
    assert "SET SESSION max_statement_time = DEFAULT" in restore
    serializable = Mode("serializable", read_only=True, deferrable=True)
    assert serializable.begin_statements("postgres")[0] == [
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE"
    ]
    assert Mode().is_default and Mode().begin_statements("postgres") == ([], [])


# ---------------------------------------------------------------------------------------------------------
# Nesting rules


def test_with_block_cannot_retry(db: Database) -> None:
    make(db)
    with pytest.raises(pk.TransactionStateError, match="retrying"), pk.transaction(retry=2):
        pass


def test_retry_inside_a_session_raises_and_nesting_joins(db: Database) -> None:
    counter = make(db)

    @pk.transaction(retry=2)
    def retried() -> None:
        counter[1].n += 1

    @pk.transaction()
    def joined() -> None:
        counter[1].n += 10

    with db_session, pytest.raises(pk.TransactionStateError, match="outermost"):
        retried()
    with pk.transaction():
        joined()
        with pk.transaction():
            counter[1].n += 100
    with db_session:
        assert counter[1].n == 110


def test_nested_transaction_cannot_change_the_mode(db: Database) -> None:
    make(db)
    with pk.transaction(isolation="serializable"):
        with pk.transaction(isolation="serializable"):
            pass  # the same mode joins
        with pytest.raises(pk.TransactionStateError, match="outermost"), pk.transaction(read_only=True):
            pass


def test_mode_inside_a_session_before_its_transaction_began(db: Database, backend_name: str) -> None:
    counter = make(db)
    with pytest.raises(Exception) as info, db_session, pk.transaction(read_only=True):  # noqa: PT011
        counter[1].n += 1
        db.flush()  # the write meets the read-only transaction the block began in the plain session
    assert pk.classify_error(info.value) == "fatal"
    with db_session:
        counter[1].n += 1  # a new session is not read-only: the mode ended with the block
        db.flush()
        with pytest.raises(pk.TransactionStateError, match="already begun"), pk.transaction(read_only=True):
            pass
        with pk.transaction():  # the default mode joins a transaction that has begun
            counter[1].n += 1
    with db_session:
        assert counter[1].n == 2


def test_retrying_attempt_must_be_entered(db: Database) -> None:
    make(db)
    with pytest.raises(pk.TransactionStateError, match="with attempt"):
        for _attempt in pk.retrying(retry=2):
            pass


def test_retrying_inside_a_session_raises(db: Database) -> None:
    make(db)
    with db_session, pytest.raises(pk.TransactionStateError):
        for attempt in pk.retrying():
            with attempt:
                pass


def test_retry_zero_raises_the_transient_error_itself(db: Database) -> None:
    make(db)

    @pk.transaction()
    def fails() -> None:
        raise OptimisticCheckError("simulated conflict")

    with pytest.raises(OptimisticCheckError):
        fails()


def test_exhausted_retries_carry_every_error_and_log(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    make(db)
    runs: list[int] = []

    @pk.transaction(retry=2, backoff=pk.Backoff(base=0.001, cap=0.002))
    def always_conflicts() -> None:
        runs.append(1)
        raise OptimisticCheckError(f"conflict {len(runs)}")

    with (
        caplog.at_level(logging.DEBUG, logger="ponykit.transactions"),
        pytest.raises(pk.RetriesExhausted) as info,
    ):
        always_conflicts()
    assert len(runs) == 3 and info.value.attempts == 3
    assert [str(e) for e in info.value.errors] == ["conflict 1", "conflict 2", "conflict 3"]
    assert info.value.__cause__ is info.value.errors[-1]
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert [r.attempt for r in retries] == [1, 2]  # type: ignore[attr-defined]
    assert all(0 <= r.wait_s <= 0.002 for r in retries)  # type: ignore[attr-defined]
    assert any("gave up" in r.getMessage() for r in caplog.records)


def test_budget_stops_retries(db: Database) -> None:
    make(db)
    runs: list[int] = []

    @pk.transaction(retry=50, backoff=pk.Backoff(base=10, cap=10, budget=0.5, jitter=False))
    def conflicts() -> None:
        runs.append(1)
        raise OptimisticCheckError("conflict")

    with pytest.raises(pk.RetriesExhausted, match="budget"):
        conflicts()
    assert len(runs) == 1  # the first wait (10 s) would already pass the 0.5 s budget


def test_fatal_errors_are_not_retried(db: Database) -> None:
    make(db)
    runs: list[int] = []

    @pk.transaction(retry=5)
    def broken() -> None:
        runs.append(1)
        raise KeyError("application bug")

    with pytest.raises(KeyError):
        broken()
    assert runs == [1]


# ---------------------------------------------------------------------------------------------------------
# Timeouts and connection settings: applied inside, put back after


def _settings(db: Database, backend_name: str) -> tuple[Any, ...]:
    if backend_name == "postgres":
        return tuple(
            db.select(
                "SELECT current_setting('statement_timeout'), current_setting('transaction_read_only')"
            )[0]
        )
    if backend_name == "mysql":
        return tuple(db.select("SELECT @@max_statement_time, @@innodb_lock_wait_timeout")[0])
    return (db.execute("PRAGMA busy_timeout").fetchone()[0], db.execute("PRAGMA query_only").fetchone()[0])


def test_timeout_and_read_only_apply_inside_and_do_not_leak(db: Database, backend_name: str) -> None:
    make(db)
    with db_session:
        before = _settings(db, backend_name)
    with pk.transaction(timeout=2.5, read_only=True):
        inside = _settings(db, backend_name)
    with db_session:  # the same thread: the same pooled connection
        after = _settings(db, backend_name)
    assert after == before
    expected = {"postgres": ("2500ms", "on"), "mysql": (2.5, 3), "sqlite": (2500, 1)}[backend_name]
    assert tuple(float(v) if backend_name == "mysql" else v for v in inside) == expected


@pytest.mark.backends("postgres", "mysql")
def test_statement_timeout_cancels_a_long_statement(db: Database, backend_name: str) -> None:
    make(db)
    sleep = "SELECT pg_sleep(3)" if backend_name == "postgres" else "SELECT SLEEP(3)"
    with pytest.raises(Exception) as info, pk.transaction(timeout=0.3):  # noqa: PT011 - driver errors differ
        result = db.select(sleep)
        if backend_name == "mysql":
            # MariaDB's max_statement_time interrupts SLEEP() and returns 1 instead of raising.
            assert result == [1]
            raise TimeoutError("interrupted")
    assert pk.classify_error(info.value) == "fatal"
