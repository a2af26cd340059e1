"""SoftDeletable: soft_delete/restore, live()/deleted(), bulk_delete(soft=True), unique keys over live rows
(partial index on PostgreSQL/SQLite, generated column on MariaDB) and the PostgreSQL RLS policy, tested
with a role that is neither superuser nor owner: no deleted row through select, get, [] or a Set load."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import (
    Database,
    ObjectNotFound,
    Optional,
    Required,
    Set,
    TransactionIntegrityError,
    commit,
    db_session,
    flush,
    rollback,
    select,
)

import ponykit as pk
from conftest import Backend
from ponykit.mixins import SoftDeletable, Timestamped, Versioned


def _map(db: Database) -> None:
    pk.attach(db)
    db.generate_mapping(create_tables=True)


@pytest.fixture
def Item(db: Database) -> Any:
    class Item(db.Entity, SoftDeletable):
        name = Required(str)

    _map(db)
    return Item


def _ids(query: Any) -> set[int]:
    return {o.id for o in query}


def test_soft_delete_and_restore(Item: Any) -> None:
    with db_session:
        item = Item(name="a")
        assert item.deleted_at is None and not item.is_deleted
    before = datetime.now(UTC)
    with db_session:
        assert Item[item.id].soft_delete() is True
        stamp = Item[item.id].deleted_at
        assert Item[item.id].soft_delete() is False  # already deleted: kept as it was
        assert Item[item.id].deleted_at == stamp
    with db_session:
        assert Item[item.id].is_deleted and Item[item.id].deleted_at >= before
        assert _ids(Item.live()) == set()
        assert _ids(Item.deleted()) == {item.id}
        assert Item[item.id].restore() is True
        assert Item[item.id].restore() is False
    with db_session:
        assert Item[item.id].deleted_at is None
        assert _ids(Item.live()) == {item.id}


def test_live_and_deleted_are_chainable_queries(Item: Any) -> None:
    with db_session:
        a, b, c = Item(name="a"), Item(name="b"), Item(name="ab")
        flush()
        b.soft_delete()
    with db_session:
        assert [i.name for i in Item.live().filter(lambda i: "a" in i.name).order_by(Item.name)] == [
            "a",
            "ab",
        ]
        assert Item.live().count() == 2
        assert [i.name for i in Item.deleted().filter(lambda i: i.name == "b")] == ["b"]
        assert select(i for i in Item.live() if i.name == "a").count() == 1
        assert {x.id for x in Item.live().page(1, 10)} == {a.id, c.id}


def test_bulk_soft_delete_marks_only_live_rows(Item: Any) -> None:
    with db_session:
        ids = pk.bulk_insert(Item, [{"name": str(i)} for i in range(5)], return_ids=True)
    with db_session:
        Item[ids[0]].soft_delete()
    with db_session:
        first = Item[ids[0]].deleted_at
        assert pk.bulk_delete(Item, ids[:3], soft=True) == 2  # ids[0] was deleted already
        assert pk.bulk_delete(Item, ids[:3], soft=True) == 0
        assert pk.bulk_delete(Item, Item.select(lambda i: i.name == "4"), soft=True) == 1
    with db_session:
        assert Item[ids[0]].deleted_at == first  # not marked again
        assert _ids(Item.live()) == {ids[3]}
        assert Item.select().count() == 5  # nothing deleted for real


def test_bulk_soft_delete_of_an_entity_without_the_mixin_is_refused(db: Database) -> None:
    class Plain(db.Entity):
        name = Required(str)

    _map(db)
    with db_session, pytest.raises(pk.OptionError, match="SoftDeletable"):
        pk.bulk_delete(Plain, [1], soft=True)


def test_soft_delete_goes_through_timestamps_and_versions(db: Database) -> None:
    class Doc(db.Entity, SoftDeletable, Timestamped, Versioned):
        title = Required(str)

    _map(db)
    with db_session:
        ids = pk.bulk_insert(Doc, [{"title": "a"}, {"title": "b"}], return_ids=True)
    with db_session:
        before = {d.id: (d.updated_at, d.version) for d in Doc.select()}
    with db_session:
        Doc[ids[0]].soft_delete()
        pk.bulk_delete(Doc, [ids[1]], soft=True)
    with db_session:
        for d in Doc.select():
            assert d.is_deleted
            assert d.updated_at > before[d.id][0]
            assert d.version == before[d.id][1] + 1


def test_configurable_name_and_clash(db: Database) -> None:
    class Doc(db.Entity, SoftDeletable):
        deleted_at_name = "removed"
        title = Required(str)

    with pytest.raises(pk.ConfigurationError, match="deleted_at_name"):

        class Clash(db.Entity, SoftDeletable):
            deleted_at = Optional(str)

    _map(db)
    with db_session:
        doc = Doc(title="t")
        flush()
        doc.soft_delete()
        assert doc.removed is not None
    with db_session:
        assert Doc.live().count() == 0 and Doc.deleted().count() == 1
        assert pk.bulk_delete(Doc, [doc.id], soft=True) == 0


def test_inheritance_and_several_entities(db: Database) -> None:
    class Animal(db.Entity, SoftDeletable):
        name = Required(str)

    class Dog(Animal):
        breed = Optional(str)

    class Toy(db.Entity, SoftDeletable):
        deleted_at_name = "gone"
        label = Required(str)

    _map(db)
    with db_session:
        dog, cat, toy = Dog(name="rex"), Animal(name="tom"), Toy(label="ball")
        flush()
        dog.soft_delete()
        toy.soft_delete()
    with db_session:
        assert _ids(Animal.live()) == {cat.id}
        assert _ids(Dog.live()) == set() and _ids(Dog.deleted()) == {dog.id}
        assert Toy.deleted().count() == 1
        assert pk.bulk_delete(Animal, [cat.id, dog.id], soft=True) == 1
    with db_session:
        assert Animal.live().count() == 0


@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("create"), st.integers(1, 3)),
            st.tuples(st.just("soft"), st.integers(0, 20)),
            st.tuples(st.just("restore"), st.integers(0, 20)),
            st.tuples(st.just("bulk"), st.lists(st.integers(0, 20), max_size=4)),
        ),
        max_size=12,
    )
)
def test_live_never_shows_a_deleted_row(Item: Any, ops: list[tuple[str, Any]]) -> None:
    """Against a Python model of which rows are deleted, after every kind of write."""
    with db_session:
        Item.select().delete(bulk=True)
    deleted: dict[int, bool] = {}
    for op, arg in ops:
        with db_session:
            ids = sorted(deleted)
            if op == "create":
                new = pk.bulk_insert(Item, [{"name": "x"}] * arg, return_ids=True)
                deleted.update(dict.fromkeys(new, False))
            elif not ids:
                continue
            elif op in ("soft", "restore"):
                target = ids[arg % len(ids)]
                changed = Item[target].soft_delete() if op == "soft" else Item[target].restore()
                assert changed == (deleted[target] is (op == "restore"))
                deleted[target] = op == "soft"
            else:
                targets = [ids[i % len(ids)] for i in arg]
                newly = {t for t in targets if not deleted[t]}
                assert pk.bulk_delete(Item, targets, soft=True) == len(newly)
                deleted.update(dict.fromkeys(targets, True))
        with db_session:
            assert _ids(Item.live()) == {i for i, d in deleted.items() if not d}
            assert _ids(Item.deleted()) == {i for i, d in deleted.items() if d}


# ---------------------------------------------------------------------------------------------------------
# unique keys over live rows


def test_unique_live_lets_a_deleted_key_be_taken_again(db: Database) -> None:
    class User(db.Entity, SoftDeletable):
        email = Required(str)
        org = Required(int)

    pk.mixins.unique_live(User, "email")
    pk.mixins.unique_live(User, "org", "email")
    _map(db)
    assert pk.mixins.create_live_unique_indexes(db) >= 2
    pk.mixins.create_live_unique_indexes(db)  # again: nothing to do, no error
    with db_session:
        first = User(email="a@x", org=1)
    with db_session:
        User[first.id].soft_delete()
    with db_session:
        User(email="a@x", org=1)  # the deleted row does not hold the key
    with pytest.raises(TransactionIntegrityError), db_session:
        User(email="a@x", org=2)  # a live row does
    with db_session:
        assert User.select().count() == 2
        assert User.live().count() == 1
        for user in User.live():
            user.soft_delete()
    with db_session:
        User(email="a@x", org=1)
        commit()
        assert User.select().count() == 3


def test_unique_live_errors(db: Database) -> None:
    class Plain(db.Entity):
        email = Required(str)

    class User(db.Entity, SoftDeletable):
        email = Required(str)

    with pytest.raises(pk.ConfigurationError, match="not SoftDeletable"):
        pk.mixins.unique_live(Plain, "email")
    with pytest.raises(pk.ConfigurationError, match="no attribute 'mail'"):
        pk.mixins.unique_live(User, "mail")
    with pytest.raises(pk.ConfigurationError, match="at least one"):
        pk.mixins.unique_live(User)


def test_live_unique_sql_names_the_partial_index(db: Database, backend: Backend) -> None:
    class User(db.Entity, SoftDeletable):
        email = Required(str)

    pk.mixins.unique_live(User, "email")
    _map(db)
    sql = "\n".join(pk.mixins.live_unique_sql(User))
    if backend.name == "mysql":
        assert "PERSISTENT" in sql and "IF(`deleted_at` IS NULL, `email`, NULL)" in sql
    else:
        assert 'WHERE "deleted_at" IS NULL' in sql and "CREATE UNIQUE INDEX" in sql


# ---------------------------------------------------------------------------------------------------------
# PostgreSQL row-level security


@pytest.mark.backends("sqlite", "mysql")
def test_policy_sql_is_postgres_only(Item: Any, db: Database) -> None:
    with pytest.raises(pk.UnsupportedDatabase, match="PostgreSQL"):
        pk.mixins.soft_delete_policy_sql(Item)
    with db_session, pk.mixins.showing_deleted(db):  # no policy elsewhere: changes nothing
        Item(name="a").soft_delete()
    with db_session:
        assert Item.live().count() == 0 and Item.deleted().count() == 1


def test_policy_sql_of_an_entity_without_the_mixin(db: Database, backend: Backend) -> None:
    class Plain(db.Entity):
        name = Required(str)

    _map(db)
    error = pk.UnsupportedDatabase if backend.name != "postgres" else pk.ConfigurationError
    with pytest.raises(error):
        pk.mixins.soft_delete_policy_sql(Plain)


@pytest.fixture
def reader_role(db: Database, backend: Backend) -> Iterator[str]:
    """A LOGIN role that is neither superuser nor owner of the test schema's tables."""
    role = "pk_reader_" + uuid.uuid4().hex[:8]
    with db_session:
        db.execute(f"CREATE ROLE {role} LOGIN")
    try:
        yield role
    finally:
        with db_session:
            db.execute(f"DROP OWNED BY {role}")
            db.execute(f"DROP ROLE {role}")


@pytest.mark.backends("postgres")
def test_rls_policy_hides_deleted_rows_from_every_read_path(
    db: Database, backend: Backend, reader_role: str, make_db: Any
) -> None:
    def declare(database: Database) -> tuple[Any, Any]:
        class Author(database.Entity):
            name = Required(str)
            posts = Set("Post")

        class Post(database.Entity, SoftDeletable):
            title = Required(str)
            author = Required(Author)

        return Author, Post

    Author, Post = declare(db)
    _map(db)
    with db_session:
        author = Author(name="a")
        live, gone = Post(title="live", author=author), Post(title="gone", author=author)
        flush()
        gone.soft_delete()
        for sql in pk.mixins.soft_delete_policy_sql(Post):
            db.execute(sql)
        schema = db.select("current_schema()")[0]
        db.execute(f"GRANT USAGE ON SCHEMA {schema} TO {reader_role}")
        db.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {reader_role}")
        db.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {reader_role}")
    parts = urlsplit(backend.url)
    url = urlunsplit(parts._replace(netloc=f"{reader_role}@{parts.hostname}:{parts.port}"))
    reader = Database()
    pk.bind_url(reader, url)
    try:
        RAuthor, RPost = declare(reader)
        _map(reader)
        with db_session:
            assert [p.title for p in select(p for p in RPost)] == ["live"]
            assert RPost.get(title="gone") is None
            with pytest.raises(ObjectNotFound):
                RPost[gone.id]
            assert RPost.select().count() == 1
            assert [p.title for p in RAuthor[author.id].posts] == ["live"]  # a Set load
            assert reader.select("count(*) FROM post")[0] == 1  # raw SQL too
        with db_session:  # PostgreSQL refuses an UPDATE that hides its own row: showing_deleted lifts that
            with pytest.raises(Exception, match="row-level security"):
                RPost[live.id].soft_delete()
                flush()
            rollback()
        with db_session:
            with pk.mixins.showing_deleted(reader):
                RPost[live.id].soft_delete()
                assert RPost.select().count() == 2  # the deleted rows are visible inside the block
            assert RPost.select().count() == 0
            assert RAuthor[author.id].posts.count() == 0
        with db_session, pk.mixins.showing_deleted(reader):
            assert pk.bulk_delete(RPost, [live.id, gone.id], soft=True) == 0
            assert RPost[gone.id].restore() is True
        with db_session:
            assert [p.title for p in RPost.select()] == ["gone"]
        with db_session:  # a superuser still sees every row
            assert Post.select().count() == 2
        with db_session:  # a strict policy: no escape
            for sql in pk.mixins.soft_delete_policy_sql(Post, permissive=False, escape=False)[2:]:
                db.execute(sql.replace("ponykit_live_post", "ponykit_strict_post"))
        with db_session, pk.mixins.showing_deleted(reader):
            assert RPost.select().count() == 1
    finally:
        reader.disconnect()
