"""Real contention on PostgreSQL and MariaDB: deadlocks and serialization failures, each applied once.

Two workloads, no mocks, real server errors:

* **crossed pairs** (both servers): N pairs of threads; in each pair one thread updates row A then row B,
  its partner B then A, with a barrier between the two updates on the first attempt so that both hold their
  first lock when they ask for the second. Every pair deadlocks (PostgreSQL 40P01 after
  ``deadlock_timeout``, MariaDB 1213 at once) and the server kills one of the two transactions.
* **serializable counter** (PostgreSQL): N threads read one counter, wait for each other, write it back
  plus one, under ``isolation="serializable"``: on the first round all but one get a real 40001.

With ``@transaction(retry=...)`` every one of the 2N (or N) logical transactions commits exactly once: the
per-transaction marker rows, the counters and the ``on_commit`` callbacks all count 2N (N). Plain
``@db_session(retry=3)`` on the crossed pairs loses one transaction per pair on both servers, because Pony
retries neither 40P01 nor 1213 (peers-2.md P4).

On MariaDB a lock wait timeout (1205) in the middle of a transaction is retried too, after an explicit
ROLLBACK (InnoDB rolls back only the statement).

N is ``PONYKIT_CONTENTION_N`` (10 by default). ``benchmarks/contention_report.py`` runs the same workloads
(:func:`crossed_pairs`, :func:`serializable_counter`) and prints the retries per success and the waits.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pony.orm import Database, PrimaryKey, Required, db_session, flush

import ponykit as pk

pytestmark = pytest.mark.backends("postgres", "mysql")

N = int(os.environ.get("PONYKIT_CONTENTION_N", "10"))
JOIN_TIMEOUT = 120.0
# Short waits keep the test quick; the report also runs the default Backoff.
TEST_BACKOFF = pk.Backoff(base=0.005, cap=0.1, budget=60.0)
# How a retry record names a deadlock: PostgreSQL's SQLSTATE; MariaDB's errno (or its SQLSTATE 40001).
DEADLOCK_CODES = ("40P01", 1213, "40001")


def make_schema(db: Database) -> tuple[Any, Any]:
    """``Slot`` rows with a hit counter, and one ``Applied`` marker per committed logical transaction."""

    class Slot(db.Entity):
        id = PrimaryKey(int)
        hits = Required(int, default=0)

    class Applied(db.Entity):
        tag = PrimaryKey(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return Slot, Applied


@dataclass
class Outcome:
    """What one run of a workload did: per logical transaction, and in the database afterwards."""

    workload: str
    mode: str
    logical: int
    errors: dict[str, BaseException] = field(default_factory=dict)  # tag -> the error that escaped
    attempts: dict[str, int] = field(default_factory=dict)  # tag -> times its function ran
    committed: list[str] = field(default_factory=list)  # tags whose on_commit callback ran
    waits: list[float] = field(default_factory=list)  # seconds, one per retry logged by ponykit
    applied: list[str] = field(default_factory=list)  # marker rows in the database
    counter: int = 0  # the counter(s) in the database
    seconds: float = 0.0

    @property
    def succeeded(self) -> int:
        return self.logical - len(self.errors)

    @property
    def retries(self) -> int:
        return sum(self.attempts.values()) - self.logical


class RetryLog(logging.Handler):
    """Collects the ``wait_s`` of every retry record of the ``ponykit.transactions`` logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lock_ = threading.Lock()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        with self.lock_:
            self.records.append(record)

    @property
    def waits(self) -> list[float]:
        return [r.wait_s for r in self.records if hasattr(r, "wait_s")]


@pytest.fixture
def retry_log() -> Iterator[RetryLog]:
    yield from capture_retries()


def capture_retries() -> Iterator[RetryLog]:
    logger = logging.getLogger("ponykit.transactions")
    handler, level = RetryLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def run_threads(db: Database, targets: list[Callable[[], None]]) -> None:
    """Run each target in its own thread (its own Pony session and connection) and wait for all."""

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            finally:
                db.disconnect()  # this thread's pooled connection

        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + JOIN_TIMEOUT
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = sum(t.is_alive() for t in threads)
    assert stuck == 0, f"{stuck} of {len(threads)} threads still running after {JOIN_TIMEOUT:.0f} s"


Wrapper = Callable[[Callable[[], None]], Callable[[], None]]


def ponykit_retry(
    db: Database, retry: int = 50, backoff: pk.Backoff = TEST_BACKOFF, **options: Any
) -> Wrapper:
    return pk.transaction(retry=retry, backoff=backoff, db=db, **options)


def pony_retry(retry: int = 3, **options: Any) -> Wrapper:
    return db_session(retry=retry, **options)


def crossed_pairs(
    db: Database, slot: Any, applied: Any, n: int, wrap: Wrapper, mode: str, log: RetryLog
) -> Outcome:
    """N pairs of threads updating two rows in opposite order (a real deadlock in every pair)."""
    with db_session:
        for i in range(1, 2 * n + 1):
            slot(id=i)
    out = Outcome("crossed pairs", mode, 2 * n)
    barriers = [threading.Barrier(2, timeout=JOIN_TIMEOUT / 2) for _ in range(n)]

    def member(pair: int, side: int) -> Callable[[], None]:
        tag = f"pair{pair}-{side}"
        first, second = (2 * pair + 1, 2 * pair + 2)[:: 1 if side == 0 else -1]

        def body() -> None:
            out.attempts[tag] = attempt = out.attempts.get(tag, 0) + 1
            slot[first].hits += 1
            flush()  # the row lock is taken now
            if attempt == 1:
                barriers[pair].wait()  # both hold their first row: the second update deadlocks
            slot[second].hits += 1
            flush()
            applied(tag=tag)
            pk.on_commit(lambda: out.committed.append(tag), db=db)

        run = wrap(body)

        def target() -> None:
            try:
                run()
            except Exception as exc:
                out.errors[tag] = exc

        return target

    _measure(db, out, [member(p, s) for p in range(n) for s in (0, 1)], log)
    with db_session:
        out.counter = sum(s.hits for s in slot.select())
        out.applied = sorted(a.tag for a in applied.select())
    return out


def serializable_counter(
    db: Database, slot: Any, applied: Any, n: int, wrap: Wrapper, mode: str, log: RetryLog
) -> Outcome:
    """N threads doing read-modify-write of one row; they all read before any writes on the first attempt."""
    with db_session:
        slot(id=1)
    out = Outcome("serializable counter", mode, n)
    barrier = threading.Barrier(n, timeout=JOIN_TIMEOUT / 2)

    def member(i: int) -> Callable[[], None]:
        tag = f"t{i}"

        def body() -> None:
            out.attempts[tag] = attempt = out.attempts.get(tag, 0) + 1
            row = slot[1]
            seen = row.hits
            if attempt == 1:
                barrier.wait()
            row.hits = seen + 1
            applied(tag=tag)
            pk.on_commit(lambda: out.committed.append(tag), db=db)

        run = wrap(body)

        def target() -> None:
            try:
                run()
            except Exception as exc:
                out.errors[tag] = exc

        return target

    _measure(db, out, [member(i) for i in range(n)], log)
    with db_session:
        out.counter = slot[1].hits
        out.applied = sorted(a.tag for a in applied.select())
    return out


def _measure(db: Database, out: Outcome, targets: list[Callable[[], None]], log: RetryLog) -> None:
    before = len(log.waits)
    started = time.perf_counter()
    run_threads(db, targets)
    out.seconds = time.perf_counter() - started
    out.waits = log.waits[before:]


def deadlock_code(backend_name: str, exc: BaseException) -> Any:
    original = getattr(exc, "original_exc", exc)
    return getattr(original, "pgcode", None) if backend_name == "postgres" else original.args[0]


def summary(out: Outcome) -> str:
    waits = sorted(out.waits)
    p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))] if waits else 0.0
    return (
        f"{out.workload} [{out.mode}]: {out.succeeded}/{out.logical} committed, {out.retries} retries "
        f"({out.retries / max(1, out.succeeded):.2f} per success), p99 wait {p99 * 1000:.1f} ms, "
        f"{out.seconds:.2f} s"
    )


def assert_each_applied_once(out: Outcome, tags: list[str]) -> None:
    assert out.errors == {}
    assert out.applied == sorted(tags)  # every logical transaction's marker row, once (a primary key)
    assert sorted(out.committed) == sorted(tags)  # on_commit ran once per logical transaction
    assert all(out.attempts[t] >= 1 for t in tags)


@pytest.fixture
def schema(db: Database) -> tuple[Database, Any, Any]:
    slot, applied = make_schema(db)
    return db, slot, applied


def test_crossed_pairs_all_commit_once_with_transaction_retry(
    backend: Any, schema: tuple[Database, Any, Any], retry_log: RetryLog
) -> None:
    """2N crossed transactions under ``@transaction(retry=...)``: all commit, each exactly once."""
    db, slot, applied = schema
    out = crossed_pairs(db, slot, applied, N, ponykit_retry(db), "transaction(retry=50)", retry_log)
    print(db.provider_name, summary(out))
    tags = [f"pair{p}-{s}" for p in range(N) for s in (0, 1)]
    assert_each_applied_once(out, tags)
    assert out.counter == 2 * (2 * N)  # every transaction added one to each of its two rows
    with db_session:
        assert all(s.hits == 2 for s in slot.select())
    # Every pair really deadlocked: at least one of its two ran again, and each retry was logged.
    for p in range(N):
        assert out.attempts[f"pair{p}-0"] + out.attempts[f"pair{p}-1"] >= 3, p
    assert out.retries >= N
    assert len(out.waits) == out.retries
    assert all(0.0 <= w <= TEST_BACKOFF.cap for w in out.waits)
    deadlocks = [r for r in retry_log.records if getattr(r, "error_code", None) in DEADLOCK_CODES]
    assert len(deadlocks) >= N


def test_crossed_pairs_lose_one_per_pair_with_pony_retry(
    backend: Any, schema: tuple[Database, Any, Any], retry_log: RetryLog
) -> None:
    """The same workload under plain ``@db_session(retry=3)``: each pair's deadlock victim is lost.

    Pony retries only its own TransactionErrors and PostgreSQL's 40001, so the 40P01 / 1213 of the victim
    escapes on the first attempt; the partner commits.
    """
    db, slot, applied = schema
    out = crossed_pairs(db, slot, applied, N, pony_retry(), "db_session(retry=3)", retry_log)
    print(db.provider_name, summary(out))
    assert len(out.errors) == N  # exactly one victim per pair, never retried
    assert {deadlock_code(backend.name, e) for e in out.errors.values()} == {
        "40P01" if backend.name == "postgres" else 1213
    }
    assert all(out.attempts[t] == 1 for t in out.errors)
    for p in range(N):
        assert sum(f"pair{p}-{s}" in out.errors for s in (0, 1)) == 1
    assert len(out.applied) == N
    assert sorted(out.committed) == out.applied
    assert out.counter == 2 * N


@pytest.mark.backends("postgres")
def test_serializable_counter_all_commit_once(schema: tuple[Database, Any, Any], retry_log: RetryLog) -> None:
    """N read-modify-writes of one row under serializable: real 40001s, retried; the counter ends at N."""
    db, slot, applied = schema
    wrap = ponykit_retry(db, retry=10 * N, isolation="serializable")
    out = serializable_counter(db, slot, applied, N, wrap, "transaction(serializable)", retry_log)
    print(db.provider_name, summary(out))
    assert_each_applied_once(out, [f"t{i}" for i in range(N)])
    assert out.counter == N
    # The first round lets one writer through; the other N-1 each failed at least once with 40001.
    assert out.retries >= N - 1
    codes = {getattr(r, "error_code", None) for r in retry_log.records if hasattr(r, "wait_s")}
    assert "40001" in codes


@pytest.mark.backends("mysql")
def test_lock_wait_timeout_is_retried_after_an_explicit_rollback(
    backend: Any, schema: tuple[Database, Any, Any]
) -> None:
    """A real 1205 in the middle of a transaction: retried, and attempt 1's earlier write is not kept.

    InnoDB rolls back only the statement that timed out, not the transaction: without an explicit
    ROLLBACK before the retry, attempt 1's first UPDATE would still be pending and commit with attempt 2
    (the row would count two hits).
    """
    import pymysql

    db, slot, _ = schema
    with db_session:
        slot(id=1)
        slot(id=2)
    _, kwargs = pk.parse_url(backend.url)
    renames = {"db": "database", "passwd": "password"}
    holder = pymysql.connect(**{renames.get(k, k): v for k, v in kwargs.items()})
    runs: list[int] = []
    try:
        with holder.cursor() as cur:
            cur.execute("UPDATE slot SET hits = hits WHERE id = 2")  # holds row 2 until rolled back

        # Not timeout=1: it also sets MariaDB's max_statement_time, which stops the wait first (1969).
        @pk.transaction(retry=2, backoff=TEST_BACKOFF, db=db)
        def work() -> None:
            runs.append(1)
            db.execute("SET SESSION innodb_lock_wait_timeout = 1")  # this test's own connection
            slot[1].hits += 1
            flush()
            if len(runs) == 1:
                pk.on_rollback(holder.rollback, db=db)  # free row 2 once attempt 1 has rolled back
            slot[2].hits += 1
            flush()  # attempt 1: waits 1 s for row 2, then 1205

        work()
    finally:
        holder.close()
    assert len(runs) == 2
    with db_session:
        assert (slot[1].hits, slot[2].hits) == (1, 1)
