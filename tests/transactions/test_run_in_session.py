"""``await pk.run_in_session(fn)``: one db_session per call on a bounded pool, contextvars, on_commit."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pony.orm import Database, Required, db_session, select

import ponykit as pk
from ponykit.errors import OptionError
from ponykit.transactions import session_threads, transaction_id

principal: contextvars.ContextVar[str] = contextvars.ContextVar("principal", default="anonymous")


@pytest.fixture
def threads() -> Iterator[None]:
    before = session_threads()
    yield
    pk.set_session_threads(before)


@pytest.fixture
def notes(db: Database) -> Any:
    class Note(db.Entity):
        _table_ = "ris_note"
        text = Required(str)
        author = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return Note


def _texts(Note: Any) -> list[str]:
    with db_session:
        return sorted(select(n.text for n in Note).without_distinct())


def test_a_call_commits_runs_on_commit_in_the_worker_and_sees_the_callers_context(notes: Any) -> None:
    Note = notes
    seen: list[tuple[str, str]] = []

    def write(text: str) -> str:
        Note(text=text, author=principal.get())
        pk.on_commit(lambda: seen.append((text, threading.current_thread().name)))
        return threading.current_thread().name

    async def main() -> str:
        principal.set("ann")
        return await pk.run_in_session(write, "hello")

    worker = asyncio.run(main())
    assert worker.startswith("ponykit-session")
    assert seen == [("hello", worker)]
    with db_session:
        assert [(n.text, n.author) for n in Note.select()] == [("hello", "ann")]


def test_an_exception_rolls_back_and_reaches_the_caller(notes: Any) -> None:
    Note = notes
    rolled: list[str] = []

    def write() -> None:
        Note(text="lost", author="x")
        pk.on_commit(lambda: rolled.append("commit"))
        pk.on_rollback(lambda: rolled.append("rollback"))
        raise KeyError("nope")

    with pytest.raises(KeyError, match="nope"):
        asyncio.run(pk.run_in_session(write))
    assert _texts(Note) == []
    assert rolled == ["rollback"]


def test_concurrent_calls_each_get_their_own_session(db: Database, notes: Any, threads: None) -> None:
    Note = notes
    pk.set_session_threads(4)

    def write(i: int) -> int | None:
        Note(text=f"t{i:02}", author="x")
        time.sleep(0.005)
        return transaction_id(db)

    async def main() -> list[int | None]:
        return await asyncio.gather(*(pk.run_in_session(write, i) for i in range(30)))

    txids = asyncio.run(main())
    assert None not in txids
    assert len(set(txids)) == 30
    assert _texts(Note) == [f"t{i:02}" for i in range(30)]


def test_at_most_the_budget_of_calls_run_at_once_and_the_loop_stays_free(threads: None) -> None:
    pk.set_session_threads(3)
    running = 0
    peak = 0
    lock = threading.Lock()

    def slow() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.03)
        with lock:
            running -= 1

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        tick = asyncio.create_task(ticker())
        await asyncio.gather(*(pk.run_in_session(slow) for _ in range(9)))
        tick.cancel()
        return ticks

    started = time.perf_counter()
    ticks = asyncio.run(main())
    elapsed = time.perf_counter() - started
    assert peak == 3
    assert elapsed >= 3 * 0.03 * 0.9  # 9 calls, 3 at a time
    assert ticks >= 5  # the event loop kept running while the calls slept


def test_bad_arguments_are_refused(threads: None) -> None:
    with pytest.raises(OptionError, match="callable"):
        asyncio.run(pk.run_in_session(42))  # type: ignore[arg-type]
    for bad in (0, -1, True, 2.5):
        with pytest.raises(OptionError, match="set_session_threads"):
            pk.set_session_threads(bad)  # type: ignore[arg-type]


def test_resizing_the_pool_keeps_running_calls(threads: None) -> None:
    pk.set_session_threads(2)

    def slow() -> str:
        time.sleep(0.05)
        return "done"

    async def main() -> list[str]:
        first = asyncio.ensure_future(pk.run_in_session(slow))
        await asyncio.sleep(0.01)
        pk.set_session_threads(5)
        second = await pk.run_in_session(slow)
        return [await first, second]

    assert asyncio.run(main()) == ["done", "done"]
    assert session_threads() == 5
