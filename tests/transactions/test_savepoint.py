"""savepoint(): release, rollback-to, nesting, the session after a rollback, callbacks, transient errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pony.orm import (
    Database,
    OperationWithDeletedObjectError,
    Optional,
    PrimaryKey,
    Required,
    Set,
    TransactionIntegrityError,
    commit,
    db_session,
    flush,
    select,
)

import ponykit as pk
from ponykit import _pony
from ponykit.errors import TransactionStateError


class Boom(Exception):
    """The exception the tests raise to leave a savepoint block."""


@pytest.fixture
def schema(db: Database) -> tuple[Database, Any, Any, Any]:
    class Person(db.Entity):
        name = Required(str, unique=True)
        age = Optional(int)
        tags = Set("Tag")
        pets = Set("Pet")

    class Tag(db.Entity):
        label = Required(str)
        people = Set(Person)

    class Pet(db.Entity):
        name = Required(str)
        owner = Optional(Person)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        ann = Person(name="ann", age=30)
        red = Tag(label="red")
        ann.tags.add(red)
        Pet(name="rex", owner=ann)
    return db, Person, Tag, Pet


@pytest.fixture
def statements(schema: Any) -> Iterator[list[str]]:
    """Every statement the schema's Database runs from here on (through the Kit's execute listeners)."""
    db = schema[0]
    seen: list[str] = []
    remove = pk.get_kit(db).add_execute_listener(lambda _db, sql, *_: seen.append(sql))
    yield seen
    remove()


def _savepoint_statements(seen: list[str]) -> list[str]:
    return [s.split(" pk_sp_")[0] for s in seen if "SAVEPOINT" in s]


def _rows(entity: Any) -> int:
    """Committed rows of ``entity``, seen by a new session."""
    with db_session:
        return int(entity.select().count())


def test_release_keeps_the_work(schema: Any, statements: list[str]) -> None:
    _db, Person, _, _ = schema
    with db_session:
        with pk.savepoint():
            Person(name="bob", age=1)
            Person.get(name="ann").age = 31
        assert Person.get(name="bob") is not None
    assert _savepoint_statements(statements) == ["SAVEPOINT", "RELEASE SAVEPOINT"]
    with db_session:
        assert Person.get(name="bob").age == 1
        assert Person.get(name="ann").age == 31


def test_rollback_undoes_rows_and_the_identity_map(schema: Any, statements: list[str]) -> None:
    db, Person, _, Pet = schema
    with db_session:
        ann = Person.get(name="ann")
        rex = Pet.get(name="rex")
        with pytest.raises(Boom), pk.savepoint():
            ann.age = 99
            bob = Person(name="bob")
            rex.delete()
            flush()  # the rows are written inside the savepoint
            cid = Person(name="cid")  # and this one is not even flushed
            raise Boom
        assert _savepoint_statements(statements) == [
            "SAVEPOINT",
            "ROLLBACK TO SAVEPOINT",
            "RELEASE SAVEPOINT",
        ]
        assert ann.age == 30
        assert rex.name == "rex"
        assert rex.owner is ann
        assert Pet.get(name="rex") is rex
        assert Person.get(name="bob") is None
        assert select(p.name for p in Person)[:] == ["ann"]
        for gone in (bob, cid):
            with pytest.raises(OperationWithDeletedObjectError):
                gone.age = 1
        assert set(_pony.session_objects(db)) == {ann, rex}
        Person(name="bob", age=2)  # the name is free again, in the database and in the identity map
    with db_session:
        assert sorted((p.name, p.age) for p in Person.select()) == [("ann", 30), ("bob", 2)]
        assert Pet.get(name="rex").owner.name == "ann"


def test_objects_first_loaded_in_the_block_stay_usable(schema: Any) -> None:
    _db, Person, _, Pet = schema
    with db_session:
        with pytest.raises(Boom), pk.savepoint():
            ann = Person.get(name="ann")
            rex = Pet.get(name="rex")
            ann.age = 50
            rex.delete()
            flush()
            raise Boom
        assert ann.age == 30
        assert rex.owner is ann
        assert Pet.get(name="rex") is rex
        assert set(ann.pets) == {rex}
        ann.age = 31
    with db_session:
        assert Person.get(name="ann").age == 31
        assert Pet.select().count() == 1


def test_query_results_cached_in_the_block_are_dropped(schema: Any) -> None:
    """Pony keeps query results for the session; one taken inside the block must not outlive it."""
    _, Person, _, _ = schema
    with db_session:
        Person(name="bob")
        flush()
        with pytest.raises(Boom), pk.savepoint():
            Person.get(name="bob").delete()
            flush()
            assert {p.name for p in Person.select()} == {"ann"}
            assert Person.select().count() == 1
            raise Boom
        assert {p.name for p in Person.select()} == {"ann", "bob"}
        assert Person.select().count() == 2


def test_collections_are_restored(schema: Any) -> None:
    _, Person, Tag, Pet = schema
    with db_session:
        ann = Person.get(name="ann")
        red = Tag.get(label="red")
        rex = Pet.get(name="rex")
        assert set(ann.tags) == {red}
        assert set(ann.pets) == {rex}
        with pytest.raises(Boom), pk.savepoint():
            blue = Tag(label="blue")
            ann.tags.add(blue)
            ann.tags.remove(red)
            ann.pets.remove(rex)
            Pet(name="tom", owner=ann)
            flush()
            assert {t.label for t in ann.tags} == {"blue"}
            raise Boom
        assert set(ann.tags) == {red}
        assert set(red.people) == {ann}
        assert set(ann.pets) == {rex}
        assert rex.owner is ann
        assert ann.tags.count() == 1
        with pytest.raises(Boom), pk.savepoint():
            ann.tags.clear()  # not flushed when the block fails
            raise Boom
        assert set(ann.tags) == {red}
    with db_session:
        ann = Person.get(name="ann")
        assert {t.label for t in ann.tags} == {"red"}
        assert {p.name for p in ann.pets} == {"rex"}


def test_nested_inner_rolled_back_outer_kept(schema: Any) -> None:
    _, Person, _, _ = schema
    with db_session, pk.savepoint():
        Person(name="outer")
        with pytest.raises(Boom), pk.savepoint():
            Person(name="inner")
            with pk.savepoint():
                Person(name="innermost")
            raise Boom
        assert Person.get(name="innermost") is None
        Person(name="after")
    with db_session:
        assert sorted(select(p.name for p in Person)[:]) == ["after", "ann", "outer"]


def test_nested_outer_rolled_back_after_inner_released(schema: Any) -> None:
    _, Person, _, _ = schema
    log: list[str] = []
    with db_session:
        ann = Person.get(name="ann")
        with pytest.raises(Boom), pk.savepoint():
            ann.age = 1
            with pk.savepoint():
                ann.age = 2
                Person(name="inner")
                pk.on_commit(lambda: log.append("inner"))
            assert ann.age == 2
            raise Boom
        assert ann.age == 30
        assert Person.get(name="inner") is None
    assert log == []
    with db_session:
        assert select(p.name for p in Person)[:] == ["ann"]


def test_on_commit_and_on_rollback_of_blocks(schema: Any) -> None:
    _, Person, _, _ = schema
    log: list[str] = []
    with db_session:
        pk.on_commit(lambda: log.append("before"))
        with pk.savepoint():
            Person(name="kept")
            pk.on_commit(lambda: log.append("kept"))
            pk.on_rollback(lambda: log.append("kept-rollback"))
        with pytest.raises(Boom), pk.savepoint():
            Person(name="undone")
            pk.on_commit(lambda: log.append("undone"))
            pk.on_rollback(lambda: log.append("undone-rollback"))
            raise Boom
        assert log == ["undone-rollback"]  # ran at the rollback to the savepoint
        pk.on_commit(lambda: log.append("after"))
    assert log == ["undone-rollback", "before", "kept", "after"]
    with db_session:
        assert Person.get(name="kept") is not None


def test_released_block_callbacks_follow_the_outer_rollback(schema: Any) -> None:
    _, Person, _, _ = schema
    log: list[str] = []
    with pytest.raises(Boom), db_session:
        with pk.savepoint():
            Person(name="kept")
            pk.on_commit(lambda: log.append("commit"))
            pk.on_rollback(lambda: log.append("rollback"))
        raise Boom
    assert log == ["rollback"]


def test_writes_recorded_inside_a_rolled_back_block_are_dropped(schema: Any) -> None:
    db, Person, Tag, _ = schema
    with db_session:
        Tag(label="green")
        flush()
        before = pk.transactions.pending_writes(db)
        with pytest.raises(Boom), pk.savepoint():
            Person(name="bob")
            Person.get(name="ann").tags.clear()
            flush()
            assert "Person" in pk.transactions.pending_writes(db)
            raise Boom
        assert pk.transactions.pending_writes(db) == before


def test_outside_a_session_raises(schema: Any) -> None:
    with pytest.raises(TransactionStateError, match="inside `with db_session:`"), pk.savepoint():
        pass


def test_commit_inside_the_block_raises(schema: Any) -> None:
    _, Person, _, _ = schema
    with db_session:
        with pytest.raises(TransactionStateError, match="ended inside the block"), pk.savepoint():
            Person(name="bob")
            commit()
        # The session goes on in a new transaction.
        assert Person.get(name="bob") is not None


def test_a_failing_flush_at_the_end_of_the_block_rolls_back(schema: Any) -> None:
    _, Person, _, _ = schema
    with db_session:
        Person(name="bob")
        with pytest.raises(TransactionIntegrityError), pk.savepoint():
            Person(name="cid")
            Person(name="ann")  # unique name taken: the flush before RELEASE fails
        assert select(p.name for p in Person).order_by(1)[:] == ["ann", "bob"]
    with db_session:
        assert select(p.name for p in Person).order_by(1)[:] == ["ann", "bob"]


def test_a_failed_statement_does_not_poison_the_transaction(schema: Any) -> None:
    """On PostgreSQL a failed statement aborts the whole transaction; rolling back to the savepoint
    brings it back, and the work before and after the block commits."""
    _db, Person, _, _ = schema
    with db_session:
        Person(name="before")
        with pytest.raises(TransactionIntegrityError), pk.savepoint():
            Person(name="ann")
            flush()
        Person(name="after")
    with db_session:
        assert sorted(select(p.name for p in Person)[:]) == ["after", "ann", "before"]


def test_read_only_session_gets_a_real_savepoint(schema: Any) -> None:
    """Pony runs a session that only read in autocommit on PostgreSQL, where SAVEPOINT fails; savepoint()
    begins the transaction first (on every backend)."""
    _, Person, _, _ = schema
    with db_session:
        assert Person.select().count() == 1  # a read: autocommit on PostgreSQL so far
        with pytest.raises(Boom), pk.savepoint():
            Person(name="bob")
            flush()
            raise Boom
        with pk.savepoint():
            Person(name="cid")
    with db_session:
        assert sorted(select(p.name for p in Person)[:]) == ["ann", "cid"]


def test_release_does_not_commit_when_the_outer_session_fails(schema: Any) -> None:
    """The pysqlite trap: a SAVEPOINT opened outside a transaction *is* the transaction and its RELEASE
    commits it. savepoint() begins a real transaction first, so the outer failure undoes everything."""
    _db, Person, _, _ = schema
    with pytest.raises(Boom), db_session:
        assert Person.select().count() == 1
        with pk.savepoint():
            Person(name="bob")
        with pk.savepoint():
            Person(name="cid")
        raise Boom
    assert _rows(Person) == 1


@pytest.mark.backends("postgres", "mysql")
def test_transient_error_propagates_without_rollback_to(
    schema: Any, statements: list[str], backend: Any
) -> None:
    """A serialization failure / deadlock raised by real SQL inside a savepoint is not rolled back there
    (on MySQL a deadlock already ended the transaction): it reaches the outermost transaction."""
    db, Person, _, _ = schema
    if backend.name == "postgres":
        # ($$ is Pony's escape of a $ in raw SQL)
        raise_transient = "DO $$$$ BEGIN RAISE EXCEPTION 'forced' USING ERRCODE = '40001'; END $$$$"
    else:
        raise_transient = "SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'forced'"
    log: list[str] = []
    with pytest.raises(Exception, match="forced") as caught, db_session, pk.savepoint():
        Person(name="bob")
        with pk.savepoint():
            pk.on_commit(lambda: log.append("inner"))
            db.execute(raise_transient)
    code = getattr(caught.value.original_exc, "pgcode", None) or caught.value.original_exc.args[0]
    assert code in ("40001", 1213)
    assert _savepoint_statements(statements) == ["SAVEPOINT", "SAVEPOINT"]
    assert log == []
    assert _rows(Person) == 1


def test_savepoint_names_are_unique_and_nest_deeply(schema: Any, statements: list[str]) -> None:
    _, Person, _, _ = schema
    depth = 12

    def nest(level: int) -> None:
        with pk.savepoint():
            Person(name=f"p{level}")
            if level < depth:
                nest(level + 1)
            if level == depth:
                raise Boom

    with db_session:
        with pytest.raises(Boom):
            nest(1)
        assert Person.select().count() == 1
    names = [s.split()[-1] for s in statements if s.startswith("SAVEPOINT")]
    assert len(names) == len(set(names)) == depth


def test_db_must_be_attached(db: Database) -> None:
    class Thing(db.Entity):
        name = Required(str)

    db.generate_mapping(create_tables=True)
    with db_session, pytest.raises(pk.ConfigurationError, match="attach"), pk.savepoint(db):
        pass


@pytest.mark.backends("postgres", "mysql")
def test_real_deadlock_inside_savepoints_reaches_the_outermost_transaction(schema: Any) -> None:
    """Two transactions lock two rows in opposite orders, each inside a savepoint: the database picks one
    victim, whose deadlock error leaves its savepoints without a ROLLBACK TO (on MySQL the victim's
    transaction is already rolled back, the savepoint with it) and ends its session; the other commits."""
    db, Person, _, _ = schema
    with db_session:
        Person(name="bob")
    with db_session:
        ids = sorted(p.id for p in Person.select())
    table = _pony.quote_name(db, _pony.entity_info(Person).table)
    update = f"UPDATE {table} SET age = COALESCE(age, 0) + 1 WHERE id = $row"
    barrier = threading.Barrier(2, timeout=30)
    statements: dict[int, list[str]] = {0: [], 1: []}
    errors: dict[int, BaseException] = {}
    local = threading.local()

    def listen(_db: Any, sql: str, *_: Any) -> None:
        who = getattr(local, "who", None)
        if who is not None:
            statements[who].append(sql)

    remove = pk.get_kit(db).add_execute_listener(listen)

    def work(who: int) -> None:
        local.who = who
        first, second = ids if who == 0 else ids[::-1]
        try:
            with db_session, pk.savepoint():
                db.execute(update, {"row": first})
                barrier.wait()
                with pk.savepoint():
                    db.execute(update, {"row": second})
        except Exception as exc:
            errors[who] = exc

    threads = [threading.Thread(target=work, args=(who,)) for who in (0, 1)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        remove()
    assert len(errors) == 1, errors
    ((victim, error),) = errors.items()
    driver_error = getattr(error, "original_exc", error)
    assert getattr(driver_error, "pgcode", None) == "40P01" or driver_error.args[0] == 1213
    assert not any("ROLLBACK TO" in sql for sql in statements[victim])
    assert _savepoint_statements(statements[1 - victim]) == [
        "SAVEPOINT",
        "SAVEPOINT",
        "RELEASE SAVEPOINT",
        "RELEASE SAVEPOINT",
    ]
    with db_session:
        assert sorted(p.age or 0 for p in Person.select()) == [1, 31]  # one transaction applied


@pytest.mark.backends("postgres", "mysql")
def test_transaction_retries_a_deadlock_raised_inside_savepoints(schema: Any) -> None:
    """The whole story: the deadlock raised inside nested savepoints reaches transaction(retry=...), which
    runs the victim again; both logical transactions are applied once and their on_commit runs once."""
    db, Person, _, _ = schema
    with db_session:
        Person(name="bob")
    with db_session:
        ids = sorted(p.id for p in Person.select())
    table = _pony.quote_name(db, _pony.entity_info(Person).table)
    update = f"UPDATE {table} SET age = COALESCE(age, 0) + 1 WHERE id = $row"
    barrier = threading.Barrier(2, timeout=30)
    attempts = [0, 0]
    done: list[int] = []
    errors: list[BaseException] = []

    @pk.transaction(retry=3, db=db)
    def work(who: int) -> None:
        attempts[who] += 1
        pk.on_commit(lambda: done.append(who))
        first, second = ids if who == 0 else ids[::-1]
        with pk.savepoint():
            db.execute(update, {"row": first})
            if attempts[who] == 1:
                barrier.wait()  # both hold their first row: the second updates deadlock
            with pk.savepoint():
                db.execute(update, {"row": second})

    def run(who: int) -> None:
        try:
            work(who)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(who,)) for who in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sum(attempts) == 3  # one victim, run once more
    assert sorted(done) == [0, 1]
    with db_session:
        assert sorted(p.age or 0 for p in Person.select()) == [2, 32]  # each transaction applied once


def test_composite_keys_and_subclasses(db: Database) -> None:
    """Rows with a composite key made of relations, and subclass rows, created, loaded, changed and
    deleted in a rolled-back block: the session is put back (a created link row must not reappear in the
    parent's loaded collection)."""

    class Club(db.Entity):
        name = Required(str)
        members = Set("Membership")

    class Member(db.Entity):
        name = Required(str)
        clubs = Set("Membership")

    class Employee(Member):
        salary = Optional(int)

    class Membership(db.Entity):
        club = Required(Club)
        member = Required(Member)
        level = Optional(int)
        PrimaryKey(club, member)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        club = Club(name="chess")
        Membership(club=club, member=Member(name="ann"), level=1)
        Employee(name="eve", salary=10)
    with db_session:
        club = Club.get(name="chess")
        assert len(club.members) == 1  # fully loaded before the block
        with pytest.raises(Boom), pk.savepoint():
            ann_link = Membership.select().first()  # first loaded in the block
            ann_link.level = 5
            eve = Employee.get(name="eve")
            eve.salary = 0
            eve_link = Membership(club=club, member=eve, level=2)
            bob = Employee(name="bob", salary=3)
            flush()
            ann_link.delete()
            flush()
            raise Boom
        assert ann_link.level == 1
        assert eve.salary == 10
        assert {(m.member.name, m.level) for m in club.members} == {("ann", 1)}
        assert _pony.is_deleted_or_new(eve_link)
        assert _pony.is_deleted_or_new(bob)
        ann_link.level = 9
    with db_session:
        assert [m.level for m in Membership.select()] == [9]
        assert Member.select().count() == 2
