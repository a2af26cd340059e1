"""Regressions of issue #12 items 2, 4 and 12 (findings F2, F3, F9, F11) on every backend.

* Values the driver refuses (a lone surrogate anywhere; NUL in text on PostgreSQL; NaN/infinity on
  MariaDB) raise BulkWriteError naming the row before any statement of the batch, on every path
  (COPY, INSERT, UPDATE, upsert), exactly where plain Pony's flush refuses them too.
* A statement refused by the database after earlier statements of the same call ran (a foreign-key
  violation in a later batch) undoes the whole call: a caller who catches the error and commits never
  commits part of it.
* bulk_upsert compares conflict keys as the key column does (MariaDB's default case-insensitive
  collation, tested under the server default and not only utf8mb4_bin).
* Values of declared-sensitive attributes never appear in a bulk error, its ``errors`` or its chain;
  ``hooks=True`` raises the same BulkWriteError (with the row index) as ``hooks=False``.
"""

from __future__ import annotations

import math
import traceback
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pony.orm import Database, Optional, Required, Set, commit, db_session, flush, select

import ponykit as pk
from ponykit.bulk._check import column_checks, first_refusal

N = 4_000  # rows of a call: several statements on every backend (SQLite: 333 rows per INSERT)

BAD: dict[str, tuple[str, Any]] = {
    "surrogate": ("name", "bad\ud800"),
    "nul": ("name", "bad\x00"),
    "nan": ("v", math.nan),
    "inf": ("v", -math.inf),
}


class Model:
    """Item rows to write, an Owner they may point to, and Ref, Item's plain-Pony twin (the oracle)."""

    def __init__(self, db: Database, backend_name: str, rule: bool = False) -> None:
        class Owner(db.Entity):
            label = Optional(str)
            items = Set("Item")

        class Item(db.Entity):
            name = Required(str)
            v = Optional(float, nullable=True)
            owner = Optional(Owner)

        class Ref(db.Entity):
            name = Required(str)
            v = Optional(float, nullable=True)

        pk.attach(db)
        db.generate_mapping(create_tables=True)
        if rule:  # a table with a rewrite rule is written with INSERT, never COPY
            with db_session:
                db.execute("CREATE RULE keep_item AS ON UPDATE TO item DO ALSO NOTHING")
        self.db, self.backend, self.Owner, self.Item, self.Ref = db, backend_name, Owner, Item, Ref

    def pony_refuses(self, attr: str, value: Any) -> bool:
        """Whether plain Pony's flush refuses the value (the oracle of what bulk writes must refuse)."""
        try:
            with db_session:
                self.Ref(**{"name": "x", attr: value})
                flush()
                self.Ref.select().delete(bulk=True)
        except Exception:
            return True
        return False

    def seed(self, n: int) -> None:
        with db_session:
            pk.bulk_insert(self.Item, [{"id": i + 1, "name": f"old{i}", "v": 0.0} for i in range(n)])

    def names(self) -> list[str]:
        with db_session:
            return sorted(select(i.name for i in self.Item))


def _call(m: Model, path: str, rows: list[dict[str, Any]], **kw: Any) -> None:
    if path in ("copy", "insert"):
        pk.bulk_insert(m.Item, rows, **kw)
    elif path == "update":
        pk.bulk_update(m.Item, rows, **kw)
    else:
        pk.bulk_upsert(m.Item, rows, conflict="id", **kw)


def _rows(path: str, n: int) -> list[dict[str, Any]]:
    if path in ("copy", "insert"):
        return [{"name": f"new{i}", "v": float(i)} for i in range(n)]
    return [{"id": i + 1, "name": f"new{i}", "v": float(i)} for i in range(n)]


def _model(db: Database, backend_name: str, path: str) -> Model:
    assert path != "copy" or backend_name == "postgres", "COPY is PostgreSQL's path"
    return Model(db, backend_name, rule=path == "insert" and backend_name == "postgres")


@pytest.mark.parametrize("bad", list(BAD))
@pytest.mark.parametrize("path", ["insert", "update", "upsert"])
def test_value_the_driver_refuses_writes_nothing_of_the_call(
    db: Database, backend_name: str, path: str, bad: str
) -> None:
    """On every backend; PostgreSQL's COPY path has its own test below."""
    _refused_value_case(db, backend_name, path, bad)


@pytest.mark.backends("postgres")
@pytest.mark.parametrize("bad", list(BAD))
def test_value_the_driver_refuses_writes_nothing_of_the_copy(
    db: Database, backend_name: str, bad: str
) -> None:
    """As the test above, through PostgreSQL's COPY path."""
    _refused_value_case(db, backend_name, "copy", bad)


def _refused_value_case(db: Database, backend_name: str, path: str, bad: str) -> None:
    """A refused value in the last of 4,000 rows: BulkWriteError naming the row and attribute, where
    plain Pony refuses the value too, and nothing of the call in the table even when the caller catches
    the error and commits. Where Pony stores the value, the bulk call stores it as well."""
    m = _model(db, backend_name, path)
    attr, value = BAD[bad]
    refused = m.pony_refuses(attr, value)
    if path in ("update", "upsert"):
        m.seed(N // 2 if path == "upsert" else N)  # upsert: half the rows update, half insert
    before = m.names()
    rows = _rows(path, N)
    rows[-1][attr] = value
    error: pk.BulkWriteError | None = None
    with db_session:
        m.Owner(label="written by the caller before the call")
        try:
            _call(m, path, rows)
        except pk.BulkWriteError as exc:
            error = exc
        commit()
    if not refused:
        assert error is None
        assert len(m.names()) == N
        return
    assert error is not None, f"Pony refuses {bad!r} on {backend_name} but the bulk call did not"
    assert (error.row_index, error.entity, error.attribute) == (N - 1, "Item", attr)
    assert f"row {N - 1}" in str(error)
    assert isinstance(error, ValueError)
    assert m.names() == before  # nothing of the call
    with db_session:
        assert m.Owner.select().count() == 1  # the caller's own write commits


@pytest.mark.parametrize("path", ["insert", "update", "upsert"])
def test_statement_refused_after_earlier_ones_undoes_the_call(
    db: Database, backend_name: str, path: str
) -> None:
    """On every backend; PostgreSQL's COPY path has its own test below."""
    _refused_statement_case(db, backend_name, path)


@pytest.mark.backends("postgres")
def test_statement_refused_after_earlier_ones_undoes_the_copy(db: Database, backend_name: str) -> None:
    """As the test above, through PostgreSQL's COPY path."""
    _refused_statement_case(db, backend_name, "copy")


def _refused_statement_case(db: Database, backend_name: str, path: str) -> None:
    """The second line of defence: a foreign-key violation in the last batch of four, which only the
    database can see, undoes the earlier batches of the call too; the caller's transaction stays usable
    and commits its own writes, nothing of the call."""
    m = _model(db, backend_name, path)
    n = 400
    if path in ("update", "upsert"):
        m.seed(n // 2 if path == "upsert" else n)
    before = m.names()
    rows = _rows(path, n)
    rows[-1]["owner"] = 999_999  # no such Owner: the bulk encoder cannot know, the database refuses
    seen: list[int] = []
    with db_session:
        m.Owner(label="written by the caller before the call")
        with pytest.raises(pk.BulkWriteError) as info:  # the foreign key's refusal, named by its row
            _call(m, path, rows, batch_size=100, progress=lambda done, _total: seen.append(done))
        assert (info.value.row_index, info.value.attribute) == (n - 1, "owner")
        assert seen == [100, 200, 300]  # three batches were written before the fourth failed
        assert m.names() == before  # ... and are gone
        commit()
    assert m.names() == before
    with db_session:
        assert m.Owner.select().count() == 1


def test_error_in_progress_undoes_the_call(db: Database, backend_name: str) -> None:
    """An exception from the progress callback after batch 2 undoes batches 1 and 2 as well."""
    m = Model(db, backend_name)

    def progress(done: int, _total: int | None) -> None:
        if done == 20:
            raise KeyboardInterrupt  # not even an Exception: the call is still undone

    with db_session:
        with pytest.raises(KeyboardInterrupt):
            pk.bulk_insert(m.Item, _rows("insert", 30), batch_size=10, progress=progress)
        assert m.Item.select().count() == 0
        commit()
    assert m.names() == []


def test_refused_delete_chunk_undoes_the_earlier_ones(db: Database, backend_name: str) -> None:
    """bulk_delete of 30 parents in chunks of 10, the last one still referenced by a child: the
    database refuses that chunk, and the parents of the earlier chunks are back."""

    class Parent(db.Entity):
        children = Set("Child", cascade_delete=False)

    class Child(db.Entity):
        parent = Required(Parent)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        parents = [Parent() for _ in range(30)]
        Child(parent=parents[-1])
        commit()
        keys = [p.id for p in parents]
    with db_session:
        with pytest.raises(Exception):  # noqa: PT011 - the driver's integrity error
            pk.bulk_delete(Parent, keys, batch_size=10)
        assert Parent.select().count() == 30
        commit()
    with db_session:
        assert Parent.select().count() == 30


def test_loaded_objects_show_old_values_after_an_undone_update(db: Database, backend_name: str) -> None:
    """Objects bulk_update re-read after an earlier batch show the old values again once the call is
    undone (no value the database does not hold)."""
    m = Model(db, backend_name)
    m.seed(20)
    with db_session:
        first = m.Item[1]
        assert first.name == "old0"
        rows = _rows("update", 20)
        rows[-1]["owner"] = 999_999
        with pytest.raises(Exception):  # noqa: PT011 - the driver's integrity error
            pk.bulk_update(m.Item, rows, batch_size=5)
        assert first.name == "old0"
        first.name = "changed by the ORM"
        commit()
    with db_session:
        assert m.Item[1].name == "changed by the ORM"
        assert m.Item[2].name == "old1"


TEXT = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["bad\ud800", "\udfff", "a\x00b", "\x00", "é\udc80x", "ok"]),
)


@given(texts=st.lists(TEXT, max_size=6))
@example(texts=["a", "b", "c", "d\ud800"])
@example(texts=["a", "b\x00", "c"])
def test_text_matches_pony(db: Database, backend_name: str, texts: list[str]) -> None:
    """Text with lone surrogates and NUL mixed into valid rows: bulk_insert refuses exactly what
    Pony's flush refuses, naming the first such row, writes nothing of the call when the caller
    catches the error and commits, and otherwise stores what Pony stores."""
    m: Model | None = getattr(db, "_faults_model_", None)
    if m is None:
        m = Model(db, backend_name)
        db._faults_model_ = m  # type: ignore[attr-defined]
    pony_error: Exception | None = None
    try:
        with db_session:
            for t in texts:
                m.Ref(name=t)
            flush()
            pony_rows = sorted(select(r.name for r in m.Ref))
            m.Ref.select().delete(bulk=True)
    except Exception as exc:
        pony_error = exc
    bulk_error: pk.BulkWriteError | None = None
    with db_session:
        try:
            pk.bulk_insert(m.Item, [{"name": t} for t in texts], batch_size=2)
        except pk.BulkWriteError as exc:
            bulk_error = exc
        commit()
    with db_session:
        stored = sorted(select(i.name for i in m.Item))
        m.Item.select().delete(bulk=True)
    assert (pony_error is None) == (bulk_error is None), (pony_error, bulk_error)
    if bulk_error is not None:
        assert stored == []
        nul = backend_name == "postgres"
        refused = [
            i for i, t in enumerate(texts) if not t.strip() or (nul and "\x00" in t) or _unencodable(t)
        ]
        assert bulk_error.row_index in refused
        assert bulk_error.attribute == "name"
    else:
        assert stored == pony_rows


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# ---------------------------------------------------------------------------------------------------------
# bulk_upsert and the key column's collation (F9)


class Authors:
    def __init__(self, db: Database) -> None:
        class Author(db.Entity):
            name = Required(str, unique=True)
            bio = Optional(str)

        pk.attach(db)
        db.generate_mapping(create_tables=True)
        self.db, self.Author = db, Author
        with db_session:
            ann = Author(name="Ann", bio="old")
            commit()
            self.ann = ann.id

    def rows(self) -> list[tuple[Any, ...]]:
        with db_session:
            return sorted((a.id, a.name, a.bio) for a in self.Author.select())


def _case_insensitive(db: Database, backend_name: str) -> bool:
    if backend_name != "mysql":
        return False
    with db_session:
        collation = db.select("SELECT @@collation_database")[0]
    assert collation.endswith("_ci"), collation  # the server default, not the fixture's utf8mb4_bin
    return True


@pytest.mark.server_collation
def test_upsert_keys_equal_under_the_collation_in_one_batch(db: Database, backend_name: str) -> None:
    """'BOB' and 'bob' in one batch are one key under MariaDB's default collation: BulkWriteError
    naming the second, nothing written (not 'bob' silently overwriting 'BOB'). Exact elsewhere."""
    a = Authors(db)
    ci = _case_insensitive(db, backend_name)
    before = a.rows()
    rows = [{"name": "ann", "bio": "new"}, {"name": "BOB", "bio": "x"}, {"name": "bob", "bio": "y"}]
    with db_session:
        if ci:
            with pytest.raises(pk.BulkWriteError, match="rows 1 and 2 .* same conflict key") as info:
                pk.bulk_upsert(a.Author, rows, conflict="name", return_ids=True)
            assert (info.value.row_index, info.value.attribute) == (2, "name")
            commit()
        else:
            result = pk.bulk_upsert(a.Author, rows, conflict="name", return_ids=True)
            assert (result.inserted, result.updated) == (3, 0)
            assert result.ids is not None and None not in result.ids and len(set(result.ids)) == 3
    if ci:
        assert a.rows() == before


@pytest.mark.server_collation
def test_upsert_matches_existing_rows_under_the_collation(db: Database, backend_name: str) -> None:
    """Rows matching existing keys under the column's collation get the existing row's id and count
    as updates ('Bob  ' is 'Bob' everywhere: Pony's autostrip, as for Author(name='Bob  '))."""
    a = Authors(db)
    ci = _case_insensitive(db, backend_name)
    with db_session:
        result = pk.bulk_upsert(
            a.Author, [{"name": "ann", "bio": "new"}, {"name": "Bob"}], conflict="name", return_ids=True
        )
        assert result.ids is not None and None not in result.ids
        if ci:
            assert (result.inserted, result.updated) == (1, 1)
            assert result.ids[0] == a.ann
            assert a.Author[a.ann].bio == "new"
        else:
            assert (result.inserted, result.updated) == (2, 0)
            assert result.ids[0] != a.ann
        bob = result.ids[1]
    with db_session:
        again = pk.bulk_upsert(a.Author, [{"name": "Bob  ", "bio": "b"}], conflict="name", return_ids=True)
        assert (again.inserted, again.updated, again.ids) == (0, 1, [bob])
        if ci:
            again = pk.bulk_upsert(a.Author, [{"name": "BOB", "bio": "c"}], conflict="name", return_ids=True)
            assert (again.inserted, again.updated, again.ids) == (0, 1, [bob])


# ---------------------------------------------------------------------------------------------------------
# Sensitive values (F3) and hooks=True errors (F11)

SECRET_SSN = "SEC" + "RET-SSN-123456789"  # built at run time: a traceback's source lines never show it
SECRET_PIN = "SEC" + "RETPIN"


class Customers:
    def __init__(self, db: Database) -> None:
        class Customer(db.Entity):
            __sensitive__ = ("ssn",)
            name = Required(str)
            ssn = Required(str, 11)
            pin = Optional(str, py_check=lambda v: v == "" or v.isdigit())

        pk.attach(db)
        db.generate_mapping(create_tables=True)
        pk.security.sensitive(Customer.pin)  # declared after mapping, as an application may
        self.Customer = Customer
        with db_session:
            Customer(id=1, name="a", ssn="1")


def _chain_text(exc: BaseException) -> str:
    """Everything an error shows: messages and reprs of it and its whole chain, ``errors``, traceback."""
    parts = ["".join(traceback.format_exception(type(exc), exc, exc.__traceback__))]
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        parts += [str(e), repr(e), repr(e.args)]
        parts += [f"{f!s} {f!r}" for f in getattr(e, "errors", ())]
        stack += [e.__cause__, e.__context__]
    return "\n".join(parts)


def _secret_cases(backend_name: str) -> list[tuple[str, str, dict[str, Any], str]]:
    cases = [
        ("insert", "ssn", {"name": "b", "ssn": SECRET_SSN}, SECRET_SSN),  # too long
        ("insert", "pin", {"name": "b", "ssn": "2", "pin": SECRET_PIN}, SECRET_PIN),  # py_check
        ("hooks", "ssn", {"name": "b", "ssn": SECRET_SSN}, SECRET_SSN),
        ("hooks", "pin", {"name": "b", "ssn": "2", "pin": SECRET_PIN}, SECRET_PIN),
        ("update", "pin", {"id": 1, "pin": SECRET_PIN}, SECRET_PIN),
        ("upsert", "pin", {"id": 1, "name": "b", "ssn": "1", "pin": SECRET_PIN}, SECRET_PIN),
        ("insert", "ssn", {"name": "b", "ssn": "SEC\ud800RET"}, "SEC\ud800RET"),  # driver refusal
        ("update", "ssn", {"id": 1, "ssn": "SEC\ud800RET"}, "SEC\ud800RET"),
    ]
    if backend_name == "postgres":
        cases.append(("insert", "ssn", {"name": "b", "ssn": "SEC\x00RET"}, "SEC\x00RET"))
    return cases


def test_sensitive_values_never_appear_in_bulk_errors(db: Database, backend_name: str) -> None:
    """Declared-sensitive values (``__sensitive__``, ``sensitive()``) are masked in the message, repr,
    ``errors``, chained exceptions and the formatted traceback, on every path; the row is named."""
    c = Customers(db)
    for op, attribute, row, secret in _secret_cases(backend_name):
        with db_session, pytest.raises(pk.BulkWriteError) as info:
            if op in ("insert", "hooks"):
                pk.bulk_insert(c.Customer, [{"name": "ok", "ssn": "3"}, row], hooks=op == "hooks")
            elif op == "update":
                pk.bulk_update(c.Customer, [row])
            else:
                pk.bulk_upsert(c.Customer, [row], conflict="id")
        exc = info.value
        shown = _chain_text(exc)
        for text in (secret, secret.encode("unicode_escape").decode(), repr(secret)[1:-1]):
            assert text not in shown, (op, attribute, shown)
        assert exc.attribute == attribute, (op, exc)
        assert exc.row_index == (1 if op in ("insert", "hooks") else 0)
        assert "sensitive" in str(exc)


BOOK_PROBLEMS: list[tuple[dict[str, Any], str]] = [
    ({"title": "x" * 41}, "title"),  # too long
    ({"title": "t", "nope": 1}, "nope"),  # unknown key
    ({"title": "t", "year": "abc"}, "year"),  # wrong type
    ({"title": "t", "year": 99_999}, "year"),  # above max
    ({"year": 1}, "title"),  # required missing
]


@pytest.mark.parametrize(("row", "attribute"), BOOK_PROBLEMS)
def test_hooks_true_raises_bulk_write_error_with_the_row(
    db: Database, backend_name: str, row: dict[str, Any], attribute: str
) -> None:
    """bulk_insert(..., hooks=True) names the invalid row like hooks=False does (was Pony's raw
    ValueError/TypeError without a row index), and writes nothing."""

    class Book(db.Entity):
        title = Required(str, 40)
        year = Optional(int, max=3000)

        def before_insert(self) -> None:
            self.title = self.title.upper()

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    for hooks in (False, True):
        with db_session:
            with pytest.raises(pk.BulkWriteError) as info:
                pk.bulk_insert(Book, [{"title": "fine"}, row], hooks=hooks)
            assert (info.value.row_index, info.value.entity, info.value.attribute) == (1, "Book", attribute)
            commit()
        with db_session:
            assert Book.select().count() == 0
    with db_session:
        pk.bulk_insert(Book, [{"title": "fine"}], hooks=True)
        assert Book.get().title == "FINE"


def test_an_error_of_the_hook_itself_propagates(db: Database, backend_name: str) -> None:
    """A before_insert hook's own exception is not a row error: it propagates unchanged."""

    class Note(db.Entity):
        text = Required(str)

        def before_insert(self) -> None:
            if self.text == "boom":
                raise LookupError("the hook refused")

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session, pytest.raises(LookupError, match="the hook refused"):
        pk.bulk_insert(Note, [{"text": "a"}, {"text": "boom"}], hooks=True)


VALUE = st.one_of(
    st.none(),
    st.text(max_size=4),
    st.sampled_from(["\ud800", "a\x00", "é"]),
    st.floats(),
    st.sampled_from([Decimal("1.5"), Decimal("NaN"), Decimal("sNaN"), Decimal("-Infinity")]),
    st.integers(),
    st.lists(st.sampled_from(["x", "\x00", "\udc00", 1]), max_size=2),
)


@given(
    kinds=st.lists(st.sampled_from(["safe", "str", "number", "any"]), min_size=1, max_size=3),
    data=st.data(),
)
def test_first_refusal_matches_a_value_by_value_oracle(kinds: list[str], data: st.DataObject) -> None:
    """The column checks (joined strings, C-level loops) find the same first refused value as looking
    at every value of every checked column one by one, for any mix of types and None."""
    n = data.draw(st.integers(0, 5))
    columns = [data.draw(st.lists(VALUE, min_size=n, max_size=n)) for _ in kinds]
    for dialect in ("sqlite", "postgres", "mysql"):
        checks = column_checks(kinds, dialect)
        expected = None
        for c, (kind, col) in enumerate(zip(kinds, columns, strict=True)):
            if kind == "safe" or (kind == "number" and dialect != "mysql"):
                continue
            bad = [r for r, v in enumerate(col) if _refused(v, dialect)]
            if bad:
                expected = (bad[0], c)
                break
        found = first_refusal(checks, columns)
        assert (found[:2] if found else None) == expected, (dialect, kinds, columns)
        rows = list(zip(*columns, strict=True))
        if rows:
            assert first_refusal(checks, rows=rows) == found


def _refused(value: Any, dialect: str) -> bool:
    """What the driver refuses, value by value (lists: PostgreSQL arrays, item by item)."""
    if isinstance(value, list):
        return any(_refused(v, dialect) for v in value)
    if isinstance(value, str):
        return _unencodable(value) or (dialect == "postgres" and "\x00" in value)
    if dialect == "mysql" and isinstance(value, Decimal):
        return not value.is_finite()
    if dialect == "mysql" and isinstance(value, float):
        return not math.isfinite(value)
    return False
