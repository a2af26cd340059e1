"""bulk_link / bulk_unlink: many-to-many link rows through the link table Pony mapped (private to
ponykit.bulk; bulk_insert's collection values go through here too, see ``_collections``).

A link row is what Pony's flush writes for ``owner.collection.add(other)`` (``Set.add_m2m``): the owner's
key in the columns that point at the owner, the other object's key in the others, each key encoded as
Pony binds it; a symmetric relation stores both ``(a, b)`` and ``(b, a)``. The statements, chosen by
measurement (``benchmarks/test_bulk_links.py``):

* PostgreSQL: ``COPY`` straight into the link table under a savepoint of its own; when a link already
  exists or is given twice (a unique violation), back to the savepoint and ``INSERT ... ON CONFLICT DO
  NOTHING``.
* SQLite: multi-row ``INSERT ... ON CONFLICT DO NOTHING``.
* MariaDB: multi-row ``INSERT ... ON DUPLICATE KEY UPDATE`` that leaves the row as it is and counts the
  duplicates in a session variable (``INSERT IGNORE`` would also skip rows refused by a foreign key, and
  Pony's connections count a row found as a row affected).
* unlink: ``DELETE ... WHERE (columns) IN (...)``.
"""

from __future__ import annotations

import io
import itertools
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NoReturn

from .. import _pony
from .._codegen import build_function
from .._sql import Dialect
from ..errors import BulkWriteError, OptionError
from ..transactions import record_writes
from ._batch import Savepoint, all_or_nothing, cached_by_pk, start
from ._copy import CopyUnsupported, NulInText, copy_text, row_security_active
from ._references import existing_keys
from ._rows import RowPlan, plan_for

__all__ = ["LINK_BATCH_SIZE", "LinkPlan", "Objects", "link_plan", "write_links"]


class _Side:
    """One side of a link: the entity's plan, and how a column of given keys or objects is encoded."""

    def __init__(self, plan: RowPlan, columns: tuple[str, ...], position: str) -> None:
        self.plan = plan
        self.columns = columns
        self.position = position  # "first" / "second": which item of a pair
        self.width = len(columns)
        names = plan.pk_names
        self._fast: Callable[[list[Any]], list[Any]] | None = None
        self._ints: tuple[int | None, int | None] | None = None
        if len(names) == 1 and len(plan.attrs[names[0]].columns) == 1:
            if int not in (plan.param_encoders or {}):
                self._ints = _pony.int_key_bounds(plan.attrs[names[0]].attr)
            code, env = _pony.bulk_encoder_source(
                plan.entity, plan.attrs[names[0]].attr, "v", "a_", plan.param_encoders
            )
            lines = ["def encode_keys(values):", "    out = []; p = out.append", "    for v in values:"]
            lines += ["        " + line for line in code] + ["        p(v)", "    return out"]
            self._fast = build_function("encode_keys", lines, env, label=f"bulk.encode_keys {plan.name}")

    def encode(self, values: list[Any], offsets: Sequence[int], link: LinkPlan) -> list[Any]:
        """The link-column values of ``values`` (keys or objects): one value each (a tuple when the key
        has several columns). ``offsets[i]`` is the input index of ``values[i]`` for errors."""
        values, wrong = _pony.object_keys(values, self.plan.entity)
        if wrong is not None:
            self._key_of(values[wrong], offsets[wrong], link)  # raises, naming the pair
        if self._ints is not None and values and set(map(type, values)) == {int}:
            low, high = self._ints  # a column of plain ints: bound once, in C, then bound as they are
            if (low is None or min(values) >= low) and (high is None or max(values) <= high):
                return values
        if self._fast is not None:
            try:
                return self._fast(values)
            except Exception:  # noqa: BLE001, S110 - converters raise anything; the loop below names it
                pass
            for i, value in enumerate(values):  # outside the except block: no __context__ with a value
                self.encode_one(value, offsets[i], link)
            raise AssertionError("a key failed to encode once and then succeeded")
        return [self.encode_one(v, offsets[i], link) for i, v in enumerate(values)]

    def _key_of(self, value: Any, index: int, link: LinkPlan) -> Any:
        if not _pony.is_entity_instance(value):
            return value
        if not isinstance(value, self.plan.entity):
            self.fail(index, link, f"a {type(value).__name__} object", None, None)
        return _pony.primary_key(value)

    def encode_one(self, value: Any, index: int, link: LinkPlan) -> Any:
        """Encode one key (or object), raising BulkWriteError naming pair ``index`` if it is invalid."""
        plan = self.plan
        value = self._key_of(value, index, link)
        names = plan.pk_names
        if len(names) > 1 and (not isinstance(value, tuple) or len(value) != len(names)):
            given = (
                f"a tuple of {len(value)} values" if isinstance(value, tuple) else f"a {type(value).__name__}"
            )
            self.fail(index, link, given, None, None)
        parts = value if len(names) > 1 else (value,)
        encoded: list[Any] = []
        for name, part in zip(names, parts, strict=True):
            failed: Exception | None = None
            try:
                got = plan.encoders[name](part)
            except Exception as exc:  # noqa: BLE001 - converters raise anything
                failed = exc
            if failed is not None:  # raised outside the except block: no __context__ quoting the value
                self.fail(index, link, None, name, (part, failed))
            encoded.extend(got if len(plan.attrs[name].columns) > 1 else (got,))
        return encoded[0] if len(encoded) == 1 else tuple(encoded)

    def fail(
        self,
        index: int,
        link: LinkPlan,
        shape: str | None,
        name: str | None,
        bad: tuple[Any, Exception] | None,
    ) -> NoReturn:
        """Raise the BulkWriteError of an invalid key in pair ``index``."""
        plan = self.plan
        keys = ", ".join(plan.pk_names)
        expected = f"a {plan.name} object or its primary key ({keys})"
        if len(plan.pk_names) > 1:
            expected += f" as a tuple of {len(plan.pk_names)} values in that order"
        if shape is not None:
            given = shape
        else:
            assert bad is not None
            assert name is not None
            part, exc = bad
            if plan.is_sensitive(name):
                given = f"a value of type {type(part).__name__} (hidden: the key is sensitive)"
            else:
                given = f"{part!r:.60} ({type(part).__name__}), refused: {exc}"
        attribute: str | None
        if link.op == "bulk_insert":  # an item of a collection value in a row
            owner = link.owner.plan.name
            where = f"bulk_insert({owner}): row {index}, an item of collection {link.name!r} ({plan.name})"
            fix = "Fix the row or drop the item"
            entity, attribute = owner, link.name
        else:  # a key of one side of a pair
            where = f"{link.op}({link.label}): pair {index}, the {self.position} item ({plan.name} side)"
            fix = "Fix the pair or drop it"
            entity, attribute = plan.name, name
        raise BulkWriteError(
            f"{where} is invalid, nothing of this call was written. Expected: {expected}. Given: {given}. "
            f"{fix}.",
            row_index=index,
            entity=entity,
            attribute=attribute,
        ) from None


class LinkPlan:
    """A many-to-many collection's link table, its two sides, and the statements that write it."""

    def __init__(self, collection: Any, op: str) -> None:
        self.op = op
        link = _pony.many_to_many(collection) if _pony.is_attribute(collection) else None
        if link is None:
            raise OptionError(_not_many_to_many(collection, op))
        self.link = link
        self.label = link.label
        self.name = link.label.rpartition(".")[2]  # the collection attribute's name
        self.owner = _Side(plan_for(link.owner), link.owner_columns, "first")
        self.other = _Side(plan_for(link.other), link.other_columns, "second")
        self.columns = link.owner_columns + link.other_columns
        self.copy_refused: bool | None = None  # row-level security applies to the link table (PostgreSQL)

    def with_op(self, op: str) -> LinkPlan:
        """This plan for another public function (its name in messages)."""
        clone = object.__new__(LinkPlan)
        clone.__dict__.update(self.__dict__)
        clone.op = op
        return clone

    # -- input ----------------------------------------------------------------------------------------

    def encode_pairs(self, batch: list[Any], offset: int) -> tuple[list[Any], list[Any]]:
        """The encoded first and second keys of the pairs of a batch (input index ``offset`` onwards)."""
        if not set(map(type, batch)) <= {tuple, list} or set(map(len, batch)) != {2}:
            index = next(i for i, p in enumerate(batch) if type(p) not in (tuple, list) or len(p) != 2)
            bad = batch[index]
            given = type(bad).__name__ + ("" if type(bad) not in (tuple, list) else f" of {len(bad)} items")
            raise BulkWriteError(
                f"{self.op}({self.label}): pair {offset + index} must be a tuple (first, second) of a "
                f"{self.owner.plan.name} and a {self.other.plan.name} (objects or primary keys), got a "
                f"{given}",
                row_index=offset + index,
                entity=self.owner.plan.name,
            )
        offsets = range(offset, offset + len(batch))
        # itemgetter in C: no tuple per pair (allocations wake the garbage collector)
        firsts = self.owner.encode(list(map(_FIRST, batch)), offsets, self)
        seconds = self.other.encode(list(map(_SECOND, batch)), offsets, self)
        return firsts, seconds

    def link_values(self, firsts: list[Any], seconds: list[Any]) -> Columns:
        """The link-table columns of pairs, one list of values per column (both directions of a
        symmetric relation). Pairs given twice stay twice: every statement skips a link already there."""
        owner, other = _split(firsts, self.owner.width), _split(seconds, self.other.width)
        if not self.link.symmetric:
            return owner + other
        back = _split(seconds, self.owner.width) + _split(firsts, self.other.width)
        return [a + b for a, b in zip(owner + other, back, strict=True)]

    # -- statements -----------------------------------------------------------------------------------

    def insert(self, dialect: Dialect, columns: Columns, savepoint: Savepoint) -> int:
        """Write the link rows of ``columns`` that are not there yet; the number added."""
        n = len(columns[0])
        if not n:
            return 0
        savepoint.begin()
        if dialect.name == "postgres":
            copied = self._copy(dialect, columns)
            if copied is not None:
                return copied
        db = dialect.db
        per = max(1, dialect.max_params // len(self.columns))
        table = self.link.table
        if dialect.name == "mysql":
            _pony.execute_in_session(db, "SET @ponykit_link_dups = 0", ())
            first = dialect.q(self.columns[0])
            dup = "(@ponykit_link_dups := @ponykit_link_dups + 1) > 0"
            counted = f"ON DUPLICATE KEY UPDATE {first} = IF({dup}, {first}, {first})"
            for begin in range(0, n, per):
                stop = min(n, begin + per)
                sql = f"{dialect.insert(table, self.columns, stop - begin)} {counted}"
                _pony.execute_in_session(db, sql, _params(columns, begin, stop))
            dups = _pony.execute_in_session(db, "SELECT @ponykit_link_dups", ()).fetchone()[0]
            return n - int(dups)
        added = 0
        for begin in range(0, n, per):
            stop = min(n, begin + per)
            sql = dialect.upsert(table, self.columns, stop - begin, self.columns, ())
            added += int(_pony.execute_in_session(db, sql, _params(columns, begin, stop)).rowcount)
        return added

    def _copy(self, dialect: Dialect, columns: Columns) -> int | None:
        """COPY the rows of ``columns`` into the link table when none of them exists yet; None when
        INSERT must write them (a link already there or given twice, or a value COPY cannot carry
        exactly). Rows are not made distinct first (a tuple per row costs more than the rare retry), but
        for a symmetric relation, where ``(a, a)`` comes back reversed as itself."""
        if self.copy_refused is None:
            self.copy_refused = row_security_active(dialect, dialect.q(self.link.table))
        if self.copy_refused:  # PostgreSQL refuses COPY FROM under row-level security
            return None
        if self.link.symmetric:
            columns = [list(c) for c in zip(*dict.fromkeys(zip(*columns, strict=True)), strict=True)]
        try:
            text = copy_text(columns)
        except (CopyUnsupported, NulInText):
            return None
        db = dialect.db
        name = f"ponykit_link_{next(_numbers)}"
        _pony.bookkeeping_in_session(db, f"SAVEPOINT {name}")
        sql = dialect.copy_from_stdin(self.link.table, self.columns)
        failed: Exception | None = None
        try:
            copied = _pony.copy_in_session(db, sql, io.StringIO(text))
        except Exception as exc:  # noqa: BLE001 - the driver's error, wrapped by Pony
            failed = exc
        if failed is None:
            _pony.bookkeeping_in_session(db, f"RELEASE SAVEPOINT {name}")
            return copied
        _pony.bookkeeping_in_session(db, f"ROLLBACK TO SAVEPOINT {name}")
        _pony.bookkeeping_in_session(db, f"RELEASE SAVEPOINT {name}")
        failure = _pony.driver_failure(failed)
        if failure is not None and failure.kind == "unique":  # some links exist already
            return None
        raise failed

    def delete(self, dialect: Dialect, columns: Columns, savepoint: Savepoint) -> int:
        """Delete the link rows of ``columns``; the number removed."""
        n = len(columns[0])
        if not n:
            return 0
        savepoint.begin()
        db = dialect.db
        per = max(1, dialect.max_params // len(self.columns))
        removed = 0
        for begin in range(0, n, per):
            stop = min(n, begin + per)
            sql = dialect.delete_keys(self.link.table, self.columns, stop - begin)
            removed += int(_pony.execute_in_session(db, sql, _params(columns, begin, stop)).rowcount)
        return removed

    def raise_missing(
        self, dialect: Dialect, firsts: list[Any], seconds: list[Any], offset: int, failed: Exception
    ) -> NoReturn:
        """Raise the BulkWriteError naming the first pair of a batch refused by a foreign key (a key
        with no row), found with one query per side; ``failed`` itself if none is found."""
        for side, given in ((self.owner, firsts), (self.other, seconds)):
            plan = side.plan
            keys = given if side.width > 1 else [(key,) for key in given]
            found = existing_keys(dialect, plan, set(keys))
            index = next((i for i, key in enumerate(keys) if key not in found), None)
            if index is not None:
                error = BulkWriteError(
                    f"{self.op}({self.label}): pair {offset + index}, the {side.position} item names a "
                    f"{plan.name} that does not exist (no row with that primary key), so the database's "
                    f"foreign key refused the link; nothing of this call was written. Create the {plan.name} "
                    "first, or drop the pair.",
                    row_index=offset + index,
                    entity=plan.name,
                )
                raise error from (None if plan.any_sensitive() else failed)  # its text quotes the key
        raise failed

    # -- session upkeep -------------------------------------------------------------------------------

    def session_objects(self, db: Any) -> Objects:
        """The session's objects of each side by encoded key, all of them and those whose collection
        (of this relation) is loaded: the pairs that touch one of those need their collections updated."""
        owners = cached_by_pk(self.owner.plan, db)
        others = owners if self.owner.plan is self.other.plan else cached_by_pk(self.other.plan, db)
        attr = self.link.attr
        loaded_owners = _pony.loaded_collections(owners, attr)
        loaded_others = _pony.loaded_collections(others, _pony.attr_info(attr).reverse_attr)
        return owners, others, loaded_owners, loaded_others

    def touched(self, pairs: Iterable[tuple[Any, Any]], objects: Objects) -> Iterator[tuple[Any, Any]]:
        """``(owner, other)`` session objects (None where not in the session) of the pairs that touch a
        loaded collection."""
        owners, others, loaded_owners, loaded_others = objects
        if not loaded_owners and not loaded_others:
            return
        for a, b in pairs:
            if a in loaded_owners or b in loaded_others:
                yield owners.get(a), others.get(b)

    def after(
        self, db: Any, touched: list[tuple[Any, Any]], linked: bool, keys: tuple[set[Any], set[Any]]
    ) -> None:
        """Session upkeep once the call's rows are written: loaded collections on both sides (the
        ``touched`` pairs of session objects), the session's query results, and the commit events
        naming the keys of both sides (``keys``)."""
        if touched:
            _pony.update_loaded_links(self.link, touched, linked)
        _pony.query_results_clear(db)
        for side, written in zip((self.owner, self.other), keys, strict=True):
            record_writes(db, side.plan.entity, written if side.plan.pk_plain else None)


_numbers = itertools.count()
_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)

# Pairs per batch by default: a link row is two keys, so five times bulk_insert's rows fit the same
# memory, and fewer, larger statements (one COPY per batch on PostgreSQL) go faster.
LINK_BATCH_SIZE = 50_000

# All session objects of the owner and other side by key, then those with the collection loaded.
Objects = tuple[dict[Any, Any], dict[Any, Any], dict[Any, Any], dict[Any, Any]]


# The values of link rows, one list per link column.
Columns = list[list[Any]]


def _split(values: list[Any], width: int) -> Columns:
    """One side's encoded keys as columns: the list itself, or one list per column of a wider key."""
    return [values] if width == 1 else [list(c) for c in zip(*values, strict=True)] or [[]] * width


def _params(columns: Columns, begin: int, stop: int) -> tuple[Any, ...]:
    """The values of rows ``begin`` to ``stop`` in one tuple, row after row (slice assignments: no tuple
    per row)."""
    width = len(columns)
    out: list[Any] = [None] * (width * (stop - begin))
    for index, column in enumerate(columns):
        out[index::width] = column[begin:stop]
    return tuple(out)


def _not_many_to_many(collection: Any, op: str) -> str:
    if not _pony.is_attribute(collection):
        given = collection.__name__ if isinstance(collection, type) else f"a {type(collection).__name__}"
        return (
            f"{op}() takes a many-to-many collection attribute such as Book.tags (a Set whose reverse is a "
            f"Set), got {given}; pass the attribute of the entity class: {op}(Book.tags, pairs)"
        )
    info = _pony.attr_info(collection)
    if info.kind == "many":
        target = info.reverse
        where = f"{target.label}" if target is not None else "the child's reference"
        return (
            f"{op}({info.label}): {info.label} is a one-to-many collection, stored in the foreign key "
            f"{where} of each child, not in a link table; set that attribute on the children instead "
            f"(bulk_update({info.py_type.__name__}, rows))"
        )
    return (
        f"{op}({info.label}): {info.label} is not a collection (Set); {op} takes a many-to-many "
        "collection attribute such as Book.tags"
    )


def link_plan(collection: Any, op: str) -> LinkPlan:
    """The :class:`LinkPlan` of a collection attribute, built once and kept on the owner's RowPlan (so
    it goes with the entity class, as the RowPlan does)."""
    link = _pony.many_to_many(collection) if _pony.is_attribute(collection) else None
    if link is None:
        raise OptionError(_not_many_to_many(collection, op))
    cache = plan_for(link.owner).link_plans
    plan: LinkPlan | None = cache.get(link.label)
    if plan is None:
        plan = cache[link.label] = LinkPlan(collection, op)
    return plan if plan.op == op else plan.with_op(op)


# ---------------------------------------------------------------------------------------------------------
# The calls


def write_links(collection: Any, pairs: Iterable[Any], batch_size: int | None, linked: bool) -> int:
    """bulk_link (``linked``) or bulk_unlink: the number of link rows added or removed."""
    op = "bulk_link" if linked else "bulk_unlink"
    link = link_plan(collection, op)
    _plan, dialect, _ = start(link.owner.plan.entity, batch_size, op)
    size = batch_size or LINK_BATCH_SIZE
    db = dialect.db
    objects = link.session_objects(db)
    touched: list[tuple[Any, Any]] = []
    keys: tuple[set[Any], set[Any]] = (set(), set())
    count = done = 0
    it = iter(pairs)
    firsts: list[Any] = []
    seconds: list[Any] = []
    failed: Exception | None = None
    try:
        with all_or_nothing(db) as savepoint:
            while batch := list(itertools.islice(it, size)):
                firsts, seconds = link.encode_pairs(batch, done)
                columns = link.link_values(firsts, seconds)
                count += (
                    link.insert(dialect, columns, savepoint)
                    if linked
                    else link.delete(dialect, columns, savepoint)
                )
                touched.extend(link.touched(zip(firsts, seconds, strict=True), objects))
                keys[0].update(firsts)
                keys[1].update(seconds)
                done += len(batch)
    except Exception as exc:
        failure = _pony.driver_failure(exc)
        if not linked or failure is None or failure.kind != "foreign_key":
            raise
        failed = exc  # the call is undone: the session's transaction can ask which key has no row
    if failed is not None:
        link.raise_missing(dialect, firsts, seconds, done, failed)
    # Only once the whole call is written: a call undone leaves the session as it was.
    link.after(db, touched, linked, keys)
    return count
