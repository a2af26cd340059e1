"""prefetch: exact query counts per relation kind and depth, and a consistent session afterwards."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pony.orm import Database, LongStr, Optional, Required, Set, commit, db_session, select

import ponykit as pk
from ponykit.diagnostics import count_queries
from ponykit.errors import ConfigurationError
from ponykit.query import prefetch


@pytest.fixture
def m(db: Database) -> Any:
    """Authors with books, books with tags and a publisher, authors with a lazy bio."""

    class Publisher(db.Entity):
        name = Required(str)
        books = Set("Book")

    class Author(db.Entity):
        name = Required(str)
        bio = Optional(LongStr)
        books = Set("Book")

    class Book(db.Entity):
        title = Required(str)
        author = Required(Author)
        publisher = Optional(Publisher)
        tags = Set("Tag")

    class Tag(db.Entity):
        label = Required(str)
        books = Set(Book)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        pubs = [Publisher(name=f"p{i}") for i in range(2)]
        tags = [Tag(label=f"t{i}") for i in range(4)]
        for a in range(5):
            author = Author(name=f"a{a}", bio=f"bio {a}")
            for b in range(a % 3 + 1):
                Book(
                    title=f"b{a}{b}",
                    author=author,
                    publisher=pubs[b % 2] if b else None,
                    tags=tags[: (a + b) % 4],
                )
        Author(name="lonely")

    class M:
        pass

    ns = M()
    ns.db, ns.Publisher, ns.Author, ns.Book, ns.Tag = db, Publisher, Author, Book, Tag
    return ns


def snapshot(m: Any) -> dict[str, Any]:
    """Everything the relations hold, read through plain Pony in a fresh session."""
    with db_session:
        return {
            a.name: (
                a.bio,
                sorted(
                    (b.title, b.publisher.name if b.publisher else None, sorted(t.label for t in b.tags))
                    for b in a.books
                ),
            )
            for a in m.Author.select()
        }


def touch(authors: list[Any]) -> dict[str, Any]:
    """Read the same relations as snapshot() from already loaded authors."""
    return {
        a.name: (
            a.bio,
            sorted(
                (b.title, b.publisher.name if b.publisher else None, sorted(t.label for t in b.tags))
                for b in a.books
            ),
        )
        for a in authors
    }


@pytest.mark.parametrize(
    ("paths", "queries"),
    [
        (("books",), 2),  # one-to-many
        (("bio",), 2),  # lazy attribute
        (("books.tags",), 3),  # one-to-many then many-to-many
        (("books.publisher",), 3),  # one-to-many then to-one
        (("books.tags", "books.publisher", "bio"), 5),  # shared prefix loaded once
        (("books.tags.books.author",), 4),  # depth 4: authors are already in the session
    ],
)
def test_query_counts_per_path(m: Any, paths: tuple[str, ...], queries: int) -> None:
    """Each path segment costs one query (plus one for the query itself), and reading them costs none."""
    with db_session:
        with count_queries() as counter:
            authors = prefetch(select(a for a in m.Author), *paths)
        assert counter.count == queries, counter.report()
        with count_queries() as counter:
            for a in authors:
                for segment in paths:
                    objs = [a]
                    for name in segment.split("."):
                        nxt = []
                        for o in objs:
                            value = getattr(o, name)
                            nxt.extend(
                                value
                                if hasattr(value, "__iter__") and not isinstance(value, str)
                                else [value]
                            )
                        objs = [x for x in nxt if x is not None and not isinstance(x, str)]
        assert counter.count == 0, counter.report()


def test_to_one_from_children(m: Any) -> None:
    """Prefetching a to-one relation of many books loads each author once, in one query."""
    with db_session:
        with count_queries() as counter:
            books = prefetch(select(b for b in m.Book), "author", "publisher")
        assert counter.count == 3
        with count_queries() as counter:
            names = sorted((b.title, b.author.name, b.publisher.name if b.publisher else None) for b in books)
        assert counter.count == 0
    with db_session:
        assert names == sorted(
            (b.title, b.author.name, b.publisher.name if b.publisher else None) for b in m.Book.select()
        )


def test_many_to_many_from_both_sides(m: Any) -> None:
    """Prefetching Tag.books (the other side of the link table) costs one query and reads back equal."""
    with db_session:
        with count_queries() as counter:
            tags = prefetch(select(t for t in m.Tag), "books")
        assert counter.count == 2
        with count_queries() as counter:
            got = {t.label: sorted(b.title for b in t.books) for t in tags}
        assert counter.count == 0
    with db_session:
        assert got == {t.label: sorted(b.title for b in t.books) for t in m.Tag.select()}


def test_prefetched_data_equals_lazy_loading(m: Any) -> None:
    """What prefetch puts in the session equals what Pony loads lazily."""
    expected = snapshot(m)
    with db_session:
        authors = prefetch(select(a for a in m.Author), "books.tags", "books.publisher", "bio")
        assert touch(authors) == expected


def test_second_prefetch_runs_no_sql(m: Any) -> None:
    """Relations already loaded in the session are not loaded again."""
    with db_session:
        authors = prefetch(select(a for a in m.Author), "books.tags", "bio")
        with count_queries() as counter:
            prefetch(authors, "books.tags", "bio")
        assert counter.count == 0


def test_chunks_by_parameter_limit(m: Any) -> None:
    """With a parameter limit smaller than the batch, each segment runs one query per chunk."""
    with db_session:
        authors = list(select(a for a in m.Author))
        m.db.provider.max_params_count = 2  # 6 authors -> 3 chunks
        try:
            with count_queries() as counter:
                prefetch(authors, "books")
            assert counter.count == 3
            assert touch(authors) == snapshot(m)
        finally:
            del m.db.provider.max_params_count


def test_session_stays_consistent_after_prefetch(m: Any) -> None:
    """Prefetched objects can be modified, deleted and re-queried, and commit as usual."""
    with db_session:
        authors = prefetch(select(a for a in m.Author).order_by(m.Author.id), "books.tags")
        book = next(iter(authors[1].books))
        book.title = "renamed"
        new_tag = m.Tag(label="new")
        book.tags.add(new_tag)
        assert select(b for b in m.Book if b.title == "renamed").count() == 1
        assert list(select(b for b in m.Book if b.author == authors[1]).order_by(m.Book.id))
        commit()
        m.Book(title="added", author=authors[0])
        assert len(authors[0].books) == 2
    with db_session:
        assert m.Book.get(title="renamed").tags.count() == len(book.tags)
        assert m.Book.get(title="added").author.name == "a0"


def test_local_changes_are_flushed_and_kept(m: Any) -> None:
    """Unflushed new children are saved first and appear in the prefetched collection."""
    with db_session:
        author = m.Author.select().order_by(m.Author.id).first()
        m.Book(title="fresh", author=author)
        prefetch([author], "books")
        with count_queries() as counter:
            titles = sorted(b.title for b in author.books)
        assert counter.count == 0
        assert "fresh" in titles


def test_seed_objects_are_loaded(m: Any) -> None:
    """Objects known only by primary key are loaded before their to-one relation."""
    with db_session:
        ids = list(select(b.id for b in m.Book))
    with db_session:
        books = [m.Book._get_by_raw_pkval_((i,)) for i in ids]  # seeds, as Pony makes for foreign keys
        with count_queries() as counter:
            prefetch(books, "author")
        assert counter.count == 2
        with count_queries() as counter:
            assert all(b.author.name for b in books)
        assert counter.count == 0


def test_empty_input_and_bad_paths(m: Any) -> None:
    """No objects runs no SQL; unknown attributes, plain columns and paths after lazy attrs are refused."""
    with db_session:
        with count_queries() as counter:
            assert prefetch([], "books") == []
        assert counter.count == 0
        authors = list(m.Author.select())
        with pytest.raises(ConfigurationError, match="no attribute 'nope'"):
            prefetch(authors, "nope")
        with pytest.raises(ConfigurationError, match="plain column"):
            prefetch(authors, "name")
        with pytest.raises(ConfigurationError, match="lazy"):
            prefetch(authors, "bio.x")
        with pytest.raises(ConfigurationError, match="dotted"):
            prefetch(authors, "books..tags")
        with pytest.raises(ConfigurationError, match="entity objects"):
            prefetch([1, 2], "books")
        with pytest.raises(ConfigurationError, match="selects entities"):
            prefetch(select(a.name for a in m.Author), "books")


def test_inheritance_and_composite_keys(db: Database) -> None:
    """Subclass rows (discriminator) and composite primary keys go through Pony's own row parser."""
    from pony.orm import PrimaryKey

    class Owner(db.Entity):
        name = Required(str)
        pets = Set("Pet")
        slots = Set("Slot")

    class Pet(db.Entity):
        owner = Required(Owner)
        name = Required(str)

    class Dog(Pet):
        barks = Optional(bool)

    class Slot(db.Entity):
        owner = Required(Owner)
        n = Required(int)
        PrimaryKey(owner, n)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        for i in range(3):
            o = Owner(name=f"o{i}")
            Pet(owner=o, name="cat")
            Dog(owner=o, name="dog", barks=True)
            Slot(owner=o, n=1)
            Slot(owner=o, n=2)
    with db_session:
        with count_queries() as counter:
            owners = prefetch(select(o for o in Owner), "pets", "slots")
        assert counter.count == 3
        with count_queries() as counter:
            kinds = sorted(type(p).__name__ for o in owners for p in o.pets)
            slots = sorted(s.n for o in owners for s in o.slots)
        assert counter.count == 0
        assert kinds == ["Dog"] * 3 + ["Pet"] * 3
        assert slots == [1, 1, 1, 2, 2, 2]


def _state(obj: Any) -> dict[str, Any]:
    """The identity-map state of one object, by attribute name (related objects by primary key)."""

    def plain(value: Any) -> Any:
        if hasattr(value, "_pkval_"):
            return ("E", value._pkval_)
        if isinstance(value, set):  # SetData of a reverse collection
            return ("S", sorted(v._pkval_ for v in value), value.is_fully_loaded)
        return (type(value).__name__, value)  # 0 == False: compare types too

    cache = obj._session_cache_
    return {
        "vals": {a.name: plain(v) for a, v in obj._vals_.items()},
        "dbvals": {a.name: plain(v) for a, v in obj._dbvals_.items()},
        "bits": (obj._rbits_, obj._wbits_, obj._status_, obj._newid_, obj._save_pos_),
        "indexed": cache.indexes[obj._pk_attrs_].get(obj._pkval_) is obj,
        "seed": obj in cache.seeds[obj._pk_attrs_],
        "tracked": obj in cache.objects,
    }


texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
rows = st.lists(
    st.tuples(
        texts,
        st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
        st.booleans(),
        st.decimals(min_value=-9999, max_value=9999, places=2, allow_nan=False, allow_infinity=False),
        st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2100, 1, 1)),
        st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False).map(lambda f: round(f, 3))),
        st.booleans(),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=15)
@given(data=rows)
def test_materialized_objects_have_ponys_session_state(db: Database, data: Any) -> None:
    """Objects and collections built by ponykit's generated row functions equal Pony's own, value by value.

    Covers the converters of str, int, bool, Decimal, datetime and float columns, NULLs, an Optional
    str stored as '', a nullable to-one relation and the reverse collection it fills.
    """
    if "_mat_models" not in db.__dict__:

        class Owner(db.Entity):
            name = Required(str)
            things = Set("Thing")

        class Thing(db.Entity):
            label = Optional(str)
            count = Optional(int)
            flag = Required(bool)
            price = Required(Decimal, precision=8, scale=2)
            when = Required(dt.datetime)
            ratio = Optional(float)
            owner = Optional(Owner)

        pk.attach(db)
        db.generate_mapping(create_tables=True)
        db._mat_models = (Owner, Thing)
    owner_cls, thing_cls = db._mat_models
    with db_session:
        thing_cls.select().delete(bulk=True)
        owner_cls.select().delete(bulk=True)
    with db_session:
        owners = [owner_cls(name=f"o{i}") for i in range(2)]
        for i, (label, count, flag, price, when, ratio, owned) in enumerate(data):
            thing_cls(
                label=label,
                count=count,
                flag=flag,
                price=price,
                when=when,
                ratio=ratio,
                owner=owners[i % 2] if owned else None,
            )

    def load(use_ponykit: bool) -> dict[Any, Any]:
        with db_session:
            parents = list(owner_cls.select())
            unowned = select(t for t in thing_cls if t.owner is None)
            if use_ponykit:
                prefetch(parents, "things")  # children built by the generated row function
                things = prefetch(unowned)
            else:
                for p in parents:
                    p.things.load()
                things = list(unowned)
            things += [t for p in parents for t in p.things]
            states = {("T", t._pkval_): _state(t) for t in things}
            states.update({("O", p._pkval_): _state(p) for p in parents})
            return states

    assert load(True) == load(False)
