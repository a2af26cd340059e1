"""cached_select and @cached on every backend: hits without SQL, correct invalidation, reading own writes."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest
from pony.orm import (
    Database,
    Json,
    Optional,
    Required,
    Set,
    TransactionError,
    commit,
    count,
    db_session,
    flush,
    rollback,
    select,
)

import ponykit as pk
from ponykit.errors import ConfigurationError
from ponykit.query import cached, cached_query, cached_select
from ponykit.query.backends import MemoryCache


class Schema:
    """The entities of one test database plus a statement counter."""

    def __init__(self, db: Database, cache: Any) -> None:
        class Author(db.Entity):
            name = Required(str, unique=True)
            books = Set("Book")

        class Book(db.Entity):
            title = Required(str)
            year = Required(int)
            price = Optional(Decimal, precision=10, scale=2)
            author = Optional(Author)
            tags = Set("Tag")
            data = Optional(Json)

        class Tag(db.Entity):
            label = Required(str)
            books = Set(Book)

        class Animal(db.Entity):
            name = Required(str)

        class Dog(Animal):
            breed = Optional(str)

        self.db = db
        self.kit = pk.attach(db, cache=cache)
        db.generate_mapping(create_tables=True)
        self.Author, self.Book, self.Tag, self.Animal, self.Dog = Author, Book, Tag, Animal, Dog
        self.cache = cache
        self.selects: list[str] = []
        self.kit.add_execute_listener(self._count)
        with db_session:
            ann = Author(name="ann")
            bob = Author(name="bob")
            red = Tag(label="red")
            for i in range(6):
                book = Book(
                    title=f"t{i}",
                    year=2000 + i,
                    price=Decimal("1.50"),
                    author=ann if i % 2 else bob,
                    data={"i": i},
                )
                if i < 3:
                    book.tags.add(red)
            Dog(name="rex", breed="lab")
            Animal(name="cat")

    def _count(self, db: Any, sql: str, arguments: Any, seconds: float, error: Any) -> None:
        if sql.lstrip().upper().startswith("SELECT"):
            self.selects.append(sql)

    def reset(self) -> int:
        n = len(self.selects)
        self.selects.clear()
        return n


@pytest.fixture
def s(db: Database) -> Schema:
    return Schema(db, MemoryCache(maxsize=1000, ttl=None))


def plain(value: Any) -> Any:
    """Entities as (class name, pk) so results of different sessions compare."""
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if hasattr(value, "_pkval_"):
        return (type(value).__name__, value.get_pk())
    return value


def data_query(s: Schema) -> Any:
    """The Json values of all books, in id order."""
    return select(b.data for b in s.Book).order_by(lambda: b.id)  # noqa: F821


def books_since(s: Schema, year: int) -> Any:
    return select(b for b in s.Book if b.year >= year).order_by(s.Book.id)


def test_hit_returns_entities_without_sql(s: Schema) -> None:
    """A second identical cached_select in a new session returns equal entities and runs no SQL."""
    with db_session:
        first = [(b.id, b.title, b.year, b.price, b.data) for b in cached_select(books_since(s, 2002))]
    s.reset()
    with db_session:
        books = cached_select(books_since(s, 2002))
        assert s.reset() == 0
        assert [(b.id, b.title, b.year, b.price, b.data) for b in books] == first
        assert all(isinstance(b, s.Book) for b in books)
        assert s.reset() == 0  # loaded attributes are really loaded


def test_rebuilt_entities_are_ordinary(s: Schema) -> None:
    """Hit entities navigate relations, sit in the identity map and unique index, and can be changed."""
    with db_session:
        cached_select(s.Author.select().order_by(s.Author.id))
    with db_session:
        authors = cached_select(s.Author.select().order_by(s.Author.id))
        s.reset()
        assert s.Author.get(name="ann") is authors[0]
        assert s.Author[authors[1].id] is authors[1]
        assert s.reset() == 0
        assert sorted(b.title for b in authors[0].books) == ["t1", "t3", "t5"]
        authors[0].name = "anne"
    with db_session:
        assert s.Author.get(name="anne") is not None


def test_relation_values_rebuilt(s: Schema) -> None:
    """A to-one relation of a cached entity points at the right related object."""
    with db_session:
        cached_select(books_since(s, 2000))
    with db_session:
        books = cached_select(books_since(s, 2000))
        assert [b.author.name for b in books] == ["bob", "ann", "bob", "ann", "bob", "ann"]
        assert books[1] in books[1].author.books


def test_values_tuples_and_aggregates(s: Schema) -> None:
    """Scalar, tuple (with entities) and aggregate selects come back equal to the uncached query."""
    queries = [
        lambda: select(b.title for b in s.Book if b.year > 2001).order_by(1),
        lambda: select((b.title, b.author, b.price) for b in s.Book).order_by(1),
        lambda: select(count(b) for b in s.Book if b.year > 2002),
        lambda: select((a.name, count(a.books)) for a in s.Author).order_by(1),
        lambda: data_query(s),
    ]
    for make in queries:
        with db_session:
            expected = plain(list(make()))
        for _ in range(2):
            with db_session:
                s.reset()
                got = plain(cached_select(make()))
                assert got == expected
        assert s.reset() == 0


def test_limits_and_pages(s: Schema) -> None:
    """query.limit() and query.page() are cached per slice."""
    # One slice per session: on MariaDB only a miss that opens the session's transaction is stored.
    with db_session:
        assert [b.title for b in cached_select(books_since(s, 2000).page(1, 4))] == ["t0", "t1", "t2", "t3"]
    with db_session:
        assert [b.title for b in cached_select(books_since(s, 2000).page(2, 4))] == ["t4", "t5"]
    with db_session:
        assert [b.title for b in cached_select(books_since(s, 2000).limit(2, offset=1))] == ["t1", "t2"]
    with db_session:
        s.reset()
        assert [b.title for b in cached_select(books_since(s, 2000).page(2, 4))] == ["t4", "t5"]
        assert s.reset() == 0


def test_mutating_a_cached_value_does_not_change_the_cache(s: Schema) -> None:
    """A caller mutating a returned Json value does not change what the next caller gets."""
    with db_session:
        cached_select(data_query(s))
    with db_session:
        first = cached_select(data_query(s))
        first[0]["i"] = 99
    with db_session:
        assert cached_select(data_query(s))[0] == {"i": 0}


def test_commit_invalidates_rollback_does_not(s: Schema) -> None:
    """A committed write makes the next read miss and see it; a rolled-back write leaves the entry valid."""
    with db_session:
        cached_select(books_since(s, 2004))
    with db_session:
        s.Book(title="new", year=2010)
        rollback()
    s.reset()
    with db_session:
        assert len(cached_select(books_since(s, 2004))) == 2
    assert s.reset() == 0
    with db_session:
        s.Book(title="new", year=2010)
    with db_session:
        assert [b.title for b in cached_select(books_since(s, 2004))] == ["t4", "t5", "new"]


def test_unrelated_write_keeps_entry(s: Schema) -> None:
    """A write to an entity the query does not read leaves its entry valid."""
    with db_session:
        cached_select(s.Tag.select())
    with db_session:
        s.Animal(name="owl")
    s.reset()
    with db_session:
        cached_select(s.Tag.select())
    assert s.reset() == 0


def test_session_reads_its_own_writes(s: Schema) -> None:
    """Inside a session that wrote a dependent entity (flushed or not), cached_select returns its writes."""
    with db_session:
        cached_select(books_since(s, 2004))
    with db_session:
        s.Book[6].year = 1990  # not flushed yet
        assert [b.title for b in cached_select(books_since(s, 2004))] == ["t4"]
        flush()
        assert [b.title for b in cached_select(books_since(s, 2004))] == ["t4"]
        rollback()
    with db_session:
        assert [b.title for b in cached_select(books_since(s, 2004))] == ["t4", "t5"]


def test_pony_bulk_delete_and_raw_sql_invalidate(s: Schema) -> None:
    """Query.delete(bulk=True) and raw db.execute writes invalidate after commit, and are read in-session."""
    with db_session:
        cached_select(books_since(s, 2000))
    with db_session:
        s.Book.select(lambda b: b.year < 2002).delete(bulk=True)
        assert len(cached_select(books_since(s, 2000))) == 4
    with db_session:
        assert len(cached_select(books_since(s, 2000))) == 4
    table = s.db.provider.quote_name(s.Book._table_)
    with db_session:
        s.db.execute(f"UPDATE {table} SET year = 1900 WHERE title = 't5'")
    with db_session:
        assert [b.title for b in cached_select(books_since(s, 2000))] == ["t2", "t3", "t4"]


def test_many_to_many_change_invalidates(s: Schema) -> None:
    """Adding a link row invalidates queries that read the link table."""

    def tagged() -> Any:
        return select(b.title for b in s.Book for t in b.tags if t.label == "red").order_by(1)

    with db_session:
        assert cached_select(tagged()) == ["t0", "t1", "t2"]
    with db_session:
        s.Tag.get(label="red").books.add(s.Book.get(title="t5"))
    with db_session:
        assert cached_select(tagged()) == ["t0", "t1", "t2", "t5"]


def test_subclass_write_invalidates_base_query(s: Schema) -> None:
    """A write to a subclass invalidates queries on the base entity, and subclass rows come back typed."""
    with db_session:
        cached_select(s.Animal.select().order_by(s.Animal.id))
    with db_session:
        s.Dog(name="fido")
    with db_session:
        animals = cached_select(s.Animal.select().order_by(s.Animal.id))
    with db_session:
        animals = cached_select(s.Animal.select().order_by(s.Animal.id))
        assert [type(a).__name__ for a in animals] == ["Dog", "Animal", "Dog"]
        assert animals[0].breed == "lab"


def test_result_computed_during_commit_is_not_served_after_it(db: Database) -> None:
    """A write that commits after a miss read the database but before it stored is never served stale."""
    holder: dict[str, Schema] = {}

    class WriteBeforeStore(MemoryCache):
        def set(self, key: Any, value: Any, ttl: float | None = None) -> None:
            if "late" not in holder:
                holder["late"] = holder["s"]

                def write() -> None:
                    with db_session:
                        holder["s"].Book(title="late", year=2030)

                t = threading.Thread(target=write)
                t.start()
                t.join()
            super().set(key, value, ttl)

    s = holder["s"] = Schema(db, WriteBeforeStore())
    with db_session:
        first = cached_select(books_since(s, 2005))
        assert [b.title for b in first] == ["t5"]
    assert "late" in holder
    with db_session:
        assert [b.title for b in cached_select(books_since(s, 2005))] == ["t5", "late"]


def test_threads_compute_once_per_generation(s: Schema) -> None:
    """Threads missing one key at once run the query once; after a commit, once again."""
    sql_runs: list[str] = []
    s.kit.add_execute_listener(
        lambda db, sql, *rest: sql_runs.append(sql) if '"year" >=' in sql.replace("`", '"') else None
    )
    for round_no in range(3):
        barrier = threading.Barrier(6)
        errors: list[BaseException] = []

        def read(barrier: threading.Barrier = barrier, errors: list[BaseException] = errors) -> None:
            try:
                barrier.wait()
                for _ in range(5):
                    with db_session:
                        assert len(cached_select(books_since(s, 2003))) >= 3
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=read) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(sql_runs) == round_no + 1
        with db_session:
            s.Book(title=f"r{round_no}", year=2020)


def test_requires_cache_and_query(db: Database) -> None:
    """Without a cache backend, or given something that is not a query, cached_select says what to do."""

    class Thing(db.Entity):
        name = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        with pytest.raises(ConfigurationError, match="cache="):
            cached_select(Thing.select())
        with pytest.raises(TypeError, match="Pony query"):
            cached_select(list(Thing.select()))


def test_uncacheable_queries_run_as_pony_would(s: Schema) -> None:
    """for_update() queries are never cached and return what Pony returns."""
    with db_session:
        assert len(cached_select(books_since(s, 2004).for_update())) == 2
    s.reset()
    with db_session:
        assert len(cached_select(books_since(s, 2004).for_update())) == 2
    assert s.reset() >= 1


@pytest.mark.backends("mysql")
def test_snapshot_older_than_generations_is_not_stored(s: Schema) -> None:
    """On MariaDB, a miss inside an already-open transaction (an older snapshot) is returned, not stored."""
    with db_session:
        s.Author.select().count()  # opens the transaction and its snapshot
        cached_select(books_since(s, 2004))
    s.reset()
    with db_session:
        cached_select(books_since(s, 2004))
    assert s.reset() == 1


# ---------------------------------------------------------------------------------------------------------
# @cached


def test_cached_function_hits_and_invalidates(s: Schema) -> None:
    """@cached serves repeated calls from the cache until a dependent entity's write commits."""
    calls: list[int] = []

    @cached(depends_on=[s.Book])
    def titles(since: int) -> list[str]:
        calls.append(since)
        with db_session:
            return sorted(select(b.title for b in s.Book if b.year >= since))

    assert titles(2004) == ["t4", "t5"]
    assert titles(2004) == ["t4", "t5"]
    assert titles(since=2004) == ["t4", "t5"]
    assert calls == [2004, 2004]
    assert titles.cache_info() == (1, 2, 0)  # type: ignore[attr-defined]
    with db_session:
        s.Author(name="zed")  # not a dependency
    assert titles(2004) == ["t4", "t5"]
    with db_session:
        s.Book(title="t9", year=2009)
    assert titles(2004) == ["t4", "t5", "t9"]
    assert len(calls) == 3
    titles.cache_clear()  # type: ignore[attr-defined]
    assert titles(2004) == ["t4", "t5", "t9"]
    assert len(calls) == 4


def test_cached_function_bypassed_in_writing_session(s: Schema) -> None:
    """Inside a session that wrote a dependency, the function runs uncached and sees the write."""

    @cached(depends_on=[s.Book])
    def n_books() -> int:
        # Not .count(): Pony answers an aggregate from its session cache before autoflushing.
        return len(s.Book.select()[:])

    with db_session:
        assert n_books() == 6
        assert n_books() == 6
        s.Book(title="x", year=1)
        assert n_books() == 7
        rollback()
        assert n_books() == 6
    assert n_books.cache_info().bypassed == 1  # type: ignore[attr-defined]


def test_cached_function_keys_and_errors(s: Schema) -> None:
    """key= replaces the argument key; entities are valid arguments; non-JSON results raise TypeError."""
    calls: list[Any] = []

    @cached(depends_on=[s.Book], key=lambda name, **_: name.lower())
    def count_for(name: str, label: str = "") -> int:
        calls.append(label)
        with db_session:
            return len(s.Author.get(name=name.lower()).books)

    assert count_for("ann", label="a") == 3
    assert count_for("ANN", label="b") == 3
    assert calls == ["a"]

    @cached(depends_on=[s.Book])
    def by_author(author: Any) -> list[str]:
        return sorted(b.title for b in author.books)

    with db_session:
        assert by_author(s.Author.get(name="bob")) == ["t0", "t2", "t4"]
        assert by_author(s.Author.get(name="ann")) == ["t1", "t3", "t5"]

    @cached(depends_on=[s.Book])
    def bad() -> Any:
        return object()

    with pytest.raises(TypeError, match="plain data"):
        bad()
    with pytest.raises(TypeError, match="entity classes"):
        cached(depends_on=["Book"])
    with pytest.raises(ConfigurationError, match="depends_on"):
        cached(depends_on=[])(lambda: 1)()


def test_cached_function_with_explicit_cache_is_invalidated(s: Schema) -> None:
    """A @cached function with its own cache= backend is invalidated by commits like the Kit's cache."""
    own = MemoryCache()
    calls: list[int] = []

    @cached(depends_on=[s.Tag], cache=own, ttl=30)
    def labels() -> list[str]:
        calls.append(1)
        with db_session:
            return sorted(t.label for t in s.Tag.select())

    assert labels() == labels() == ["red"]
    with db_session:
        s.Tag(label="blue")
    assert labels() == ["blue", "red"]
    assert len(calls) == 2
    with db_session:
        commit()


# ---------------------------------------------------------------------------------------------------------
# @cached_query


def test_cached_query_builds_once_and_serves_hits(s: Schema) -> None:
    """The builder runs once per distinct arguments; hits run neither it nor SQL; results match Pony."""
    calls: list[int] = []

    @cached_query
    def since(year: int) -> Any:
        calls.append(year)
        return books_since(s, year)

    with db_session:
        expected = plain(list(books_since(s, 2003)))
    with db_session:  # on MariaDB only a miss that opens the transaction may fill the cache
        assert plain(since(2003)) == expected
    s.reset()
    for _ in range(3):
        with db_session:
            books = since(2003)
            assert plain(books) == expected
            assert [b.title for b in books] == ["t3", "t4", "t5"]  # ordinary entities of this session
    assert s.reset() == 0
    assert calls == [2003]
    with db_session:
        assert plain(since(year=2005)) == plain(list(books_since(s, 2005)))
    assert calls == [2003, 2005]


def test_cached_query_invalidates_and_reads_own_writes(s: Schema) -> None:
    """Commits invalidate, rollbacks do not, and a writing session sees its own writes."""

    @cached_query(ttl=60)
    def titles(year: int) -> Any:
        return select((b.title, b.year) for b in s.Book if b.year >= year).order_by(1)

    with db_session:
        assert titles(2004) == [("t4", 2004), ("t5", 2005)]
    with db_session:
        s.Book(title="new", year=2010)
        assert titles(2004) == [("new", 2010), ("t4", 2004), ("t5", 2005)]  # own write, uncommitted
        rollback()
    s.reset()
    with db_session:
        assert titles(2004) == [("t4", 2004), ("t5", 2005)]
    assert s.reset() == 0
    with db_session:
        s.Book[6].year = 1999  # t5
    with db_session:
        assert titles(2004) == [("t4", 2004)]


def test_cached_query_keys_by_type_and_value(s: Schema) -> None:
    """1, 1.0 and True are equal as dict keys; each still gets a statement built from its own value."""
    seen: list[Any] = []

    @cached_query
    def with_limit(n: Any) -> Any:
        seen.append(n)
        return select(b.title for b in s.Book).order_by(1).limit(2 if n is True else 3)

    with db_session:
        assert with_limit(True) == ["t0", "t1"]
        assert with_limit(1) == ["t0", "t1", "t2"]
        assert with_limit(1.0) == ["t0", "t1", "t2"]
    assert seen == [True, 1, 1.0]


def test_cached_query_rejects_bad_arguments_and_results(s: Schema) -> None:
    """Entities, lists and other mutable arguments are refused with a hint; so is a non-query result."""

    @cached_query
    def by_author(author: Any) -> Any:
        return select(b for b in s.Book if b.author == author)

    @cached_query
    def not_a_query() -> Any:
        return [1, 2]

    with db_session:
        ann = s.Author.get(name="ann")
        with pytest.raises(TypeError, match=r"argument 0 is a Author.*primary key"):
            by_author(ann)
        with pytest.raises(TypeError, match="argument 0 is a list"):
            by_author([1])
        with pytest.raises(TypeError, match="must return a Pony query"):
            not_a_query()
        assert by_author.uncached(ann) == list(select(b for b in s.Book if b.author == ann))
    with pytest.raises(ConfigurationError, match="maxsize"):
        cached_query(maxsize=0)


def test_cached_query_follows_the_attached_cache(db: Database) -> None:
    """A backend set on the Kit later takes effect for statements built before; none at all is an error."""
    s = Schema(db, MemoryCache(maxsize=100, ttl=None))

    @cached_query
    def count_books() -> Any:
        return select(count(b) for b in s.Book)

    with db_session:
        assert count_books() == [6]
    fresh = MemoryCache(maxsize=100, ttl=None)
    s.kit.cache = fresh
    with db_session:
        assert count_books() == [6]
    assert len(fresh) == 1
    s.kit.cache = None
    with db_session, pytest.raises(ConfigurationError, match="needs a cache backend"):
        count_books()


def test_cached_query_statement_memo_is_bounded(s: Schema) -> None:
    """Past maxsize argument sets the remembered statements start over; results stay correct."""

    @cached_query(maxsize=3)
    def since(year: int) -> Any:
        return books_since(s, year)

    state = since.__ponykit_cached_query__
    with db_session:
        for year in range(2000, 2008):
            assert plain(since(year)) == plain(list(books_since(s, year)))
            assert len(state.plans) <= 3
    since.cache_clear()
    assert not state.plans


def test_value_results_need_no_db_session(s: Schema) -> None:
    """Outside a db_session, value results are served (a miss opens a session); entities are refused."""

    @cached_query
    def titles(year: int) -> Any:
        return select(b.title for b in s.Book if b.year >= year).order_by(1)

    @cached_query
    def books(year: int) -> Any:
        return books_since(s, year)

    assert titles(2004) == ["t4", "t5"]  # miss, first build of the statement
    assert cached_select(select(b.year for b in s.Book if b.year < 2002).order_by(1)) == [2000, 2001]
    s.reset()
    assert titles(2004) == ["t4", "t5"]
    assert cached_select(select(b.year for b in s.Book if b.year < 2002).order_by(1)) == [2000, 2001]
    assert s.reset() == 0
    with db_session:
        s.Book[6].title = "z5"
    assert titles(2004) == ["t4", "z5"]  # the commit invalidated it; the miss ran in its own session
    with pytest.raises(TransactionError, match="need a db_session"):
        books(2004)
    with pytest.raises(TransactionError, match="need a db_session"):
        cached_select(books_since(s, 2004))
