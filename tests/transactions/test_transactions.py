"""on_commit / on_rollback and commit events, on every backend."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from pony.orm import Database, Required, Set, commit, db_session, flush, rollback, select

import ponykit as pk
from ponykit.kit import CommitEvent


def make_schema(db: Database) -> tuple[Any, Any]:
    """Declare Person and Tag on ``db``, attach it and map it."""

    class Person(db.Entity):
        name = Required(str)
        tags = Set("Tag")

    class Tag(db.Entity):
        label = Required(str)
        people = Set(Person)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return Person, Tag


@pytest.fixture
def schema(db: Database) -> tuple[Database, Any, Any]:
    person, tag = make_schema(db)
    return db, person, tag


def recorder() -> tuple[list[str], Callable[[str], Callable[[], None]]]:
    log: list[str] = []

    def mark(label: str) -> Callable[[], None]:
        return lambda: log.append(label)

    return log, mark


def test_on_commit_runs_after_session_commit(schema: Any) -> None:
    """A callback registered in a db_session runs once the session has committed, not before."""
    _db, Person, _ = schema
    log, mark = recorder()
    with db_session:
        Person(name="ann")
        pk.on_commit(mark("committed"))
        flush()
        assert log == []
    assert log == ["committed"]
    with db_session:
        assert Person.select().count() == 1


def test_callbacks_run_in_registration_order(schema: Any) -> None:
    """Callbacks run in the order they were registered."""
    _, Person, _ = schema
    log, mark = recorder()
    with db_session:
        for i in range(5):
            pk.on_commit(mark(str(i)))
        Person(name="x")
    assert log == ["0", "1", "2", "3", "4"]


def test_mid_session_commit_runs_earlier_callbacks_only(schema: Any) -> None:
    """An explicit commit() runs the callbacks registered before it; later ones wait for the next commit."""
    _, Person, _ = schema
    log, mark = recorder()
    with db_session:
        Person(name="a")
        pk.on_commit(mark("first"))
        commit()
        assert log == ["first"]
        pk.on_commit(mark("second"))
        Person(name="b")
        assert log == ["first"]
    assert log == ["first", "second"]


def test_exception_discards_on_commit_and_runs_on_rollback(schema: Any) -> None:
    """An exception leaving the session rolls back: on_commit callbacks are dropped, on_rollback ones run."""
    _, Person, _ = schema
    log, mark = recorder()
    with pytest.raises(RuntimeError), db_session:
        Person(name="doomed")
        pk.on_commit(mark("commit"))
        pk.on_rollback(mark("rollback"))
        flush()
        raise RuntimeError("boom")
    assert log == ["rollback"]
    with db_session:
        assert Person.select().count() == 0


def test_explicit_rollback_discards_callbacks(schema: Any) -> None:
    """rollback() inside a session drops earlier on_commit callbacks; later ones still run at commit."""
    _, Person, _ = schema
    log, mark = recorder()
    with db_session:
        Person(name="gone")
        pk.on_commit(mark("dropped"))
        pk.on_rollback(mark("rolled back"))
        rollback()
        assert log == ["rolled back"]
        Person(name="kept")
        pk.on_commit(mark("kept"))
    assert log == ["rolled back", "kept"]
    with db_session:
        assert select(p.name for p in Person)[:] == ["kept"]


def test_on_rollback_dropped_on_commit(schema: Any) -> None:
    """An on_rollback callback of a transaction that commits never runs."""
    _, Person, _ = schema
    log, mark = recorder()
    with db_session:
        Person(name="a")
        pk.on_rollback(mark("never"))
    assert log == []


def test_nested_db_session_waits_for_outer_commit(schema: Any) -> None:
    """A callback registered in a nested db_session waits until the outermost session commits."""
    _, Person, _ = schema
    log, mark = recorder()
    with db_session:
        with db_session:
            Person(name="inner")
            pk.on_commit(mark("inner"))
        assert log == []
        pk.on_commit(mark("outer"))
    assert log == ["inner", "outer"]


def test_nested_decorated_function_joins_outer_transaction(schema: Any) -> None:
    """A db_session-decorated service called inside a session registers on the outer transaction."""
    _, Person, _ = schema
    log, mark = recorder()

    @db_session
    def create(name: str) -> None:
        Person(name=name)
        pk.on_commit(mark(name))

    with pytest.raises(ValueError, match="abort"), db_session:
        create("x")
        raise ValueError("abort")
    assert log == []
    create("y")
    assert log == ["y"]


def test_callback_may_open_its_own_session(schema: Any) -> None:
    """A callback runs after the session ended, so it can open a db_session and see the committed data."""
    _, Person, _ = schema
    seen: list[int] = []

    def count_people() -> None:
        with db_session:
            seen.append(Person.select().count())
            Person(name="written by callback")

    with db_session:
        Person(name="a")
        pk.on_commit(count_people)
    assert seen == [1]
    with db_session:
        assert Person.select().count() == 2


def test_read_only_session_runs_callbacks_at_end(schema: Any) -> None:
    """A session that wrote nothing still runs its callbacks when it ends (there was nothing to roll back)."""
    _, Person, _ = schema
    log, mark = recorder()
    with db_session:
        Person.select().count()
        pk.on_commit(mark("end"))
        assert log == []
    assert log == ["end"]


def test_outside_session_runs_immediately(schema: Any) -> None:
    """Outside any db_session there is no transaction: on_commit runs at once, on_rollback never."""
    log, mark = recorder()
    pk.on_commit(mark("now"))
    pk.on_rollback(mark("never"))
    assert log == ["now"]


def test_raising_callback_is_logged_and_does_not_fail_commit(
    schema: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A raising callback is logged with its traceback; the data stays committed and later callbacks run."""
    _, Person, _ = schema
    log, mark = recorder()

    def boom() -> None:
        raise ZeroDivisionError("callback failed")

    with caplog.at_level(logging.ERROR, logger="ponykit.transactions"), db_session:
        Person(name="safe")
        pk.on_commit(boom)
        pk.on_commit(mark("after"))
    assert log == ["after"]
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)
    with db_session:
        assert Person.select().count() == 1


def test_reraise_opt_in_raises_callback_error_after_commit(schema: Any) -> None:
    """With reraise=True the failure surfaces as CallbackError at session exit, after the commit."""
    _, Person, _ = schema

    def boom() -> None:
        raise KeyError("lost")

    with pytest.raises(pk.CallbackError) as info, db_session:
        Person(name="still committed")
        pk.on_commit(boom, reraise=True)
    assert isinstance(info.value.__cause__, KeyError)
    with db_session:
        assert Person.select().count() == 1
        Person(name="the thread is usable again")


def test_attach_default_reraise(db: Database) -> None:
    """attach(db, reraise_callback_errors=True) makes reraise the default for that Database."""

    class Thing(db.Entity):
        name = Required(str)

    pk.attach(db, reraise_callback_errors=True)
    db.generate_mapping(create_tables=True)
    with pytest.raises(pk.CallbackError), db_session:
        Thing(name="a")
        pk.on_commit(lambda: 1 / 0)


def test_threads_have_their_own_transactions(schema: Any) -> None:
    """Callbacks belong to the thread's own session: one thread's rollback does not drop another's."""
    _, Person, _ = schema
    results: dict[str, list[str]] = {"commit": [], "rollback": []}
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(kind: str) -> None:
        try:
            with db_session:
                pk.on_commit(lambda: results[kind].append("on_commit"))
                pk.on_rollback(lambda: results[kind].append("on_rollback"))
                # Both sessions are open at once; SQLite then serializes the two writes.
                barrier.wait(timeout=10)
                Person(name=kind)
                flush()
                if kind == "rollback":
                    rollback()
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            schema[0].disconnect()

    threads = [threading.Thread(target=worker, args=(k,)) for k in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == {"commit": ["on_commit"], "rollback": ["on_rollback"]}


def test_two_databases_keep_their_callbacks_apart(make_db: Callable[[], Database]) -> None:
    """With two attached Databases, each callback follows its own Database's transaction."""
    db1, db2 = make_db(), make_db()

    class A(db1.Entity):
        name = Required(str)

    class B(db2.Entity):
        _table_ = "b_table"
        name = Required(str)

    for database in (db1, db2):
        pk.attach(database)
        database.generate_mapping(create_tables=True)
    log, mark = recorder()
    with db_session:
        A(name="a")
        B(name="b")
        pk.on_commit(mark("db1"), db=db1)
        pk.on_commit(mark("db2"), db=db2)
        with pytest.raises(pk.ConfigurationError, match="db=db"):
            pk.on_commit(mark("ambiguous"))
        db2.rollback()
        assert log == []
    assert log == ["db1"]


def test_requires_attached_database(db: Database) -> None:
    """on_commit inside a session with no attached Database says how to fix it."""

    class Lone(db.Entity):
        name = Required(str)

    db.generate_mapping(create_tables=True)
    from ponykit import kit

    if kit.attached_databases():
        pytest.skip("another attached Database is alive in this process")  # pragma: no cover
    with db_session, pytest.raises(pk.ConfigurationError, match="attach"):
        pk.on_commit(lambda: None)


# ---------------------------------------------------------------------------------------------------------
# Commit events


def events_of(db: Database) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def subscriber(event: CommitEvent) -> None:
        assert event.db is db
        seen.append(dict(event.writes))

    pk.get_kit(db).subscribe(subscriber)
    return seen


def test_commit_event_names_entities_and_keys(schema: Any) -> None:
    """Each committed transaction reports the entities and primary keys it inserted, updated and deleted."""
    db, Person, _ = schema
    seen = events_of(db)
    with db_session:
        a, b = Person(name="a"), Person(name="b")
        flush()
        ids = {a.id, b.id}
    assert seen == [{"Person": frozenset(ids)}]
    with db_session:
        Person[a.id].name = "a2"
        Person[b.id].delete()
    assert seen[-1] == {"Person": frozenset(ids)}


def test_no_event_for_read_only_or_rolled_back(schema: Any) -> None:
    """Read-only sessions and rolled-back transactions report nothing."""
    db, Person, _ = schema
    seen = events_of(db)
    with db_session:
        Person.select().count()
    with pytest.raises(ValueError, match="no"), db_session:
        Person(name="x")
        flush()
        raise ValueError("no")
    assert seen == []


def test_mid_session_commits_report_separately(schema: Any) -> None:
    """Two commits in one session give two events, each with only its own writes."""
    db, Person, _ = schema
    seen = events_of(db)
    with db_session:
        a = Person(name="a")
        commit()
        b = Person(name="b")
        flush()
        ids = (a.id, b.id)
    assert seen == [{"Person": frozenset({ids[0]})}, {"Person": frozenset({ids[1]})}]


def test_many_to_many_change_is_reported(schema: Any) -> None:
    """Adding to a many-to-many collection reports both entities."""
    db, Person, Tag = schema
    with db_session:
        Person(name="p")
        Tag(label="t")
    seen = events_of(db)
    with db_session:
        Person.select().first().tags.add(Tag.select().first())
    assert len(seen) == 1
    assert set(seen[0]) == {"Person", "Tag"}


def test_record_writes_reaches_subscribers(schema: Any) -> None:
    """Writes reported with record_writes (bulk paths) appear in the commit event, and vanish on rollback."""
    db, Person, _ = schema
    seen = events_of(db)
    with db_session:
        db.execute("DELETE FROM " + db.provider.quote_name(Person._table_))
        pk.transactions.record_writes(db, Person, None)
    assert seen == [{"Person": None}]
    with db_session:
        pk.transactions.record_writes(db, Person, [7])
        Person.select().count()
        db.execute("DELETE FROM " + db.provider.quote_name(Person._table_))
        rollback()
    assert seen == [{"Person": None}]


def test_subclass_write_reported_for_base(db: Database) -> None:
    """A write to a subclass is reported under the subclass and its base entity."""

    class Animal(db.Entity):
        name = Required(str)

    class Dog(Animal):
        pass

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    seen = events_of(db)
    with db_session:
        d = Dog(name="rex")
        flush()
        key = d.id
    assert seen == [{"Dog": frozenset({key}), "Animal": frozenset({key})}]


def test_failing_subscriber_is_isolated(schema: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A subscriber that raises is logged; the commit and other subscribers are unaffected."""
    db, Person, _ = schema
    kit = pk.get_kit(db)
    kit.subscribe(lambda e: 1 / 0)
    seen = events_of(db)
    with caplog.at_level(logging.ERROR, logger="ponykit.transactions"), db_session:
        Person(name="a")
    assert len(seen) == 1
    with db_session:
        assert Person.select().count() == 1
