"""bulk_delete's relations: what Pony's per-object delete does to the rows that refer to the deleted
ones (cascade, set NULL, refuse), done set-wise (private to ponykit.bulk).

Pony's ``obj.delete()`` walks the object's relations (``_pony.delete_rules``): children of a
``cascade_delete`` relation are deleted (recursively, with their own rules), an ``Optional`` reverse is
set to NULL, a ``Required`` reverse without cascade is refused. :class:`Cascade` does the same for a set
of keys, with a fixed number of statements per relation and level (per chunk of keys), never per row:

1. Read, level by level: for each cascade relation one ``SELECT`` of the doomed children's keys (so that
   their own relations are handled in turn), for each refused relation one ``SELECT ... LIMIT 1``; a hit
   raises before anything is written. A cascade child whose whole hierarchy has no relation of its own
   and no many-to-many collection (a leaf) is not read: its rows go by their foreign key.
2. Write: ``UPDATE child SET fk = NULL WHERE fk IN (...)`` for each set-NULL relation, then the deletes,
   every row before the rows it refers to (a row reached again from a deeper row, in a self-referencing
   tree, moves deeper): a leaf's rows by ``DELETE FROM child WHERE fk IN (...)`` just before their
   parents, the others by key with their link rows, as for the entity itself.
3. Session upkeep for every entity touched: loaded doomed objects are forgotten, loaded set-NULL children
   re-read, and each entity's write is recorded (so cached queries over it drop at commit).

The database's own ``ON DELETE CASCADE / SET NULL`` rules (which Pony declares for these relations) never
get to act: the children are gone or NULL before their parents are deleted, so the end state is the
same with or without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import _pony
from .._sql import Dialect
from ..errors import BulkWriteError
from ._batch import Savepoint, after_write, cached_by_pk, chunks, flat
from ._delete import delete_keys, encode_pk
from ._rows import RowPlan, plan_for

__all__ = ["Cascade", "has_relations"]


def has_relations(entity: Any) -> bool:
    """True if deleting rows of ``entity`` touches rows of other tables through a relation."""
    return bool(_pony.delete_rules(entity))


@dataclass
class _Group:
    """Rows of one hierarchy to delete by key (``plan``: the caller's entity for its own rows, else the
    root's); a higher ``rank`` goes first."""

    plan: RowPlan
    keys: dict[Any, None]  # an ordered set: a key may move to a deeper group
    rank: int
    first: bool = False  # the caller's own rows (its plan may filter by class)


@dataclass
class _ByParent:
    """Rows of ``plan`` whose ``rule.fk_columns`` hold one of ``parent_keys``: set to NULL, or (a leaf
    cascade) deleted by their foreign key."""

    rule: _pony.DeleteRule
    plan: RowPlan
    parent_plan: RowPlan
    parent_keys: list[Any]


# One step of the walk: a group, the keys found for it in this step, and those moved into it (already
# handled for their set-NULL and refused relations, their cascades are followed again).
_Step = tuple[_Group, list[Any], list[Any]]


@dataclass
class Cascade:
    """One bulk_delete call's rows, and those its relations reach, in the order they must go."""

    plan: RowPlan
    dialect: Dialect
    size: int
    input_index: dict[Any, int] = field(default_factory=dict)  # caller's key -> its input position
    groups: dict[tuple[Any, int], _Group] = field(default_factory=dict)  # (root, rank) -> rows
    nulls: list[_ByParent] = field(default_factory=list)
    rank_of: dict[Any, dict[Any, int]] = field(default_factory=dict)  # root -> key -> rank
    moved_from_first: int = 0

    # -- reading ----------------------------------------------------------------------------------

    def collect(self, keys: list[Any]) -> None:
        """Find every row the delete of ``keys`` reaches; raise BulkWriteError for a refused relation
        (nothing is written by this step)."""
        if self.plan.class_column:
            keys = self._existing(keys)  # only rows of the class go: their children only
        root = _pony.root_entity(self.plan.entity)
        first = _Group(self.plan, dict.fromkeys(keys), 0, first=True)
        self.groups[root, 0] = first
        self.rank_of[root] = dict.fromkeys(keys, 0)
        frontier: list[_Step] = [(first, keys, [])]
        while frontier:
            found: dict[tuple[Any, int], _Step] = {}
            for group, new, moved in frontier:
                for rule in _pony.delete_rules(group.plan.entity):
                    self._follow(group, rule, new, moved, found)
            frontier = list(found.values())

    def _follow(
        self,
        group: _Group,
        rule: _pony.DeleteRule,
        new: list[Any],
        moved: list[Any],
        found: dict[tuple[Any, int], _Step],
    ) -> None:
        if rule.action == "restrict":
            self._refuse_if_referenced(group, rule, new)
        elif rule.action == "set_null":
            if new:
                self.nulls.append(_ByParent(rule, plan_for(rule.target_root), group.plan, new))
        elif not (rule.fk_columns and _is_leaf(rule.target_root)):  # leaves go with their parents
            self._cascade(group, rule, new + moved, found)

    def _cascade(
        self, group: _Group, rule: _pony.DeleteRule, keys: list[Any], found: dict[tuple[Any, int], _Step]
    ) -> None:
        # Children hold the foreign key: they go first (a higher rank). A row reached again from a
        # deeper row (a self-referencing tree reached through two paths) moves deeper, so that no row
        # goes before a row that refers to it; in a cycle it stops moving once the rank passes the
        # number of rows. The target of a one-to-one whose column is in the deleted row goes after it.
        root = rule.target_root
        rank = group.rank + 1 if rule.fk_columns else group.rank - 1
        ranks = self.rank_of.setdefault(root, {})
        for key in dict.fromkeys(self._reached(group, rule, keys)):
            old = ranks.get(key)
            if old is None:
                self._step(found, root, rank)[1].append(key)
            elif rule.fk_columns and old < rank <= len(ranks) + 1:
                before = self.groups[root, old]
                del before.keys[key]
                if before.first:
                    self.moved_from_first += 1
                self._step(found, root, rank)[2].append(key)
            else:
                continue
            ranks[key] = rank
            self.groups[root, rank].keys[key] = None

    def _step(self, found: dict[tuple[Any, int], _Step], root: Any, rank: int) -> _Step:
        step = found.get((root, rank))
        if step is None:
            group = self.groups.get((root, rank))
            if group is None:
                group = self.groups[root, rank] = _Group(plan_for(root), {}, rank)
            step = found[root, rank] = (group, [], [])
        return step

    def _existing(self, keys: list[Any]) -> list[Any]:
        plan, d = self.plan, self.dialect
        classes = plan.class_values
        assert plan.class_column is not None  # only called for a subclass of a single-table hierarchy
        found: list[Any] = []
        for chunk in self._chunks(keys, len(plan.pk_columns), len(classes)):
            sql = (
                f"SELECT {_cols(d, plan.pk_columns)} FROM {d.q(plan.table)} "
                f"WHERE {d.key_in(plan.pk_columns, len(chunk))}"
                f"{d.class_in((plan.class_column, len(classes)))}"
            )
            found.extend(_keys(self._run(sql, self._args(chunk, plan.pk_columns) + classes)))
        return found

    def _reached(self, group: _Group, rule: _pony.DeleteRule, keys: list[Any]) -> list[Any]:
        """The keys of the rows ``rule`` cascades to from ``group``'s rows (one SELECT per chunk)."""
        d = self.dialect
        plan = group.plan
        target = plan_for(rule.target_root)
        reached: list[Any] = []
        if rule.fk_columns:
            for chunk in self._chunks(keys, len(rule.fk_columns)):
                sql = (
                    f"SELECT {_cols(d, target.pk_columns)} FROM {d.q(target.table)} "
                    f"WHERE {d.key_in(rule.fk_columns, len(chunk))}"
                )
                reached.extend(_keys(self._run(sql, self._args(chunk, plan.pk_columns))))
        else:
            for chunk in self._chunks(keys, len(plan.pk_columns)):
                where = d.key_in(plan.pk_columns, len(chunk))
                sql = (
                    f"SELECT {_cols(d, rule.own_columns)} FROM {d.q(plan.table)} "
                    f"WHERE {where} AND {d.q(rule.own_columns[0])} IS NOT NULL"
                )
                reached.extend(_keys(self._run(sql, self._args(chunk, plan.pk_columns))))
        return reached

    def _refuse_if_referenced(self, group: _Group, rule: _pony.DeleteRule, keys: list[Any]) -> None:
        d = self.dialect
        plan = group.plan
        target = plan_for(rule.target_root)
        for chunk in self._chunks(keys, len(plan.pk_columns)):
            if rule.fk_columns:
                where = d.key_in(rule.fk_columns, len(chunk))
                sql = f"SELECT {_cols(d, rule.fk_columns)} FROM {d.q(target.table)} WHERE {where} LIMIT 1"
            else:
                where = d.key_in(plan.pk_columns, len(chunk))
                sql = (
                    f"SELECT {_cols(d, plan.pk_columns)} FROM {d.q(plan.table)} "
                    f"WHERE {where} AND {d.q(rule.own_columns[0])} IS NOT NULL LIMIT 1"
                )
            rows = _keys(self._run(sql, self._args(chunk, plan.pk_columns)))
            if rows:
                raise self._refusal(group, rule, rows[0])

    def _refusal(self, group: _Group, rule: _pony.DeleteRule, key: Any) -> BulkWriteError:
        # The key itself is not quoted (a key part may be sensitive); the input index is, when the
        # refused row is one the caller named.
        index = self.input_index.get(key) if group.first else None
        whose = f"input item {index}" if index is not None else f"a {group.plan.name} row it reaches"
        target = rule.target.__name__
        return BulkWriteError(
            f"bulk_delete({self.plan.name}): cannot delete {whose}: {target} rows refer to it through "
            f"{rule.relation}, which is Required on the {target} side and has no cascade_delete (Pony's "
            f"obj.delete() raises ConstraintError for {rule.attr} too); nothing was deleted. Declare "
            f"cascade_delete=True on {rule.attr}, delete the {target} rows first, or make "
            f"{target}.{rule.reverse_name} Optional",
            row_index=index,
            entity=group.plan.name,
            attribute=rule.attr_name,
        )

    # -- writing ----------------------------------------------------------------------------------

    def write(self, savepoint: Savepoint) -> int:
        """Run the statements (under the call's savepoint); the number of the caller's rows deleted."""
        d = self.dialect
        deleted = self.moved_from_first
        for step in self.nulls:
            sets = ", ".join(f"{d.q(c)} = NULL" for c in step.rule.fk_columns)
            self._by_parent(step, f"UPDATE {d.q(step.plan.table)} SET {sets}", savepoint)
        # Stable sort: discovery order within a rank.
        for group in sorted(self.groups.values(), key=lambda g: -g.rank):
            if not group.keys:
                continue
            keys = list(group.keys)
            for leaf in self._leaves(group.plan, keys):
                self._by_parent(leaf, f"DELETE FROM {d.q(leaf.plan.table)}", savepoint)
            count = delete_keys(group.plan, d, keys, self.size, savepoint)
            if group.first:
                deleted += count
        return deleted

    @staticmethod
    def _leaves(plan: RowPlan, keys: list[Any]) -> list[_ByParent]:
        """The children of ``keys`` that go by their foreign key, unread (leaf cascades)."""
        return [
            _ByParent(rule, plan_for(rule.target_root), plan, keys)
            for rule in _pony.delete_rules(plan.entity)
            if rule.action == "cascade" and rule.fk_columns and _is_leaf(rule.target_root)
        ]

    def _by_parent(self, step: _ByParent, head: str, savepoint: Savepoint) -> None:
        d = self.dialect
        pk_columns = step.parent_plan.pk_columns
        for chunk in self._chunks(step.parent_keys, len(pk_columns)):
            savepoint.begin()
            where = d.key_in(step.rule.fk_columns, len(chunk))
            _pony.execute_in_session(d.db, f"{head} WHERE {where}", self._args(chunk, pk_columns))

    # -- session upkeep ---------------------------------------------------------------------------

    def loaded_children(self, step: _ByParent) -> list[Any]:
        """Loaded objects of ``step``'s entity that refer to one of its parent keys (no SQL)."""
        keys = set(step.parent_keys)
        found = []
        for obj in _pony.cached_objects(self.dialect.db, step.rule.target):
            parent = _pony.loaded_target(obj, step.rule.reverse_name)
            # A parent of another class of the hierarchy than the deleted subclass is not deleted.
            if isinstance(parent, step.parent_plan.entity) and encode_pk(step.parent_plan, parent, 0) in keys:
                found.append(obj)
        return found

    def before_write(self, savepoint: Savepoint) -> tuple[list[Any], list[tuple[list[Any], frozenset[str]]]]:
        """What the session holds that the write changes, read before it: the loaded objects that will
        be deleted, and the loaded children to re-read per set-NULL relation (kept for an undo)."""
        db = self.dialect.db
        gone: list[Any] = []
        for root, ranks in self.rank_of.items():
            if not ranks:
                continue
            plan = plan_for(root)
            cached = cached_by_pk(plan, db)
            gone.extend(cached[k] for k in ranks if k in cached)
            for leaf in self._leaves(plan, list(ranks)):
                gone.extend(self.loaded_children(leaf))
        refresh = [(self.loaded_children(s), frozenset({s.rule.reverse_name})) for s in self.nulls]
        savepoint.refreshed.extend(refresh)
        return gone, refresh

    def after(self, gone: list[Any], refresh: list[tuple[list[Any], frozenset[str]]]) -> None:
        """Session upkeep once the write succeeded: forget the deleted objects, re-read the set-NULL
        children, and record a write of every entity touched (so the query cache drops at commit)."""
        db = self.dialect.db
        _pony.forget_objects(db, gone)
        for step, (objects, attrs) in zip(self.nulls, refresh, strict=True):
            after_write(step.plan, db, keys=None, relations=attrs, refresh=objects, refresh_attrs=attrs)
        own_root = _pony.root_entity(self.plan.entity)
        for root, ranks in self.rank_of.items():
            if not ranks and root is not own_root:
                continue
            plan = self.plan if root is own_root else plan_for(root)
            for leaf in self._leaves(plan, []) if ranks else []:  # no parent deleted: no leaf row either
                after_write(leaf.plan, db, keys=None)
            after_write(plan, db, keys=list(ranks))

    # -- helpers ----------------------------------------------------------------------------------

    def _chunks(self, keys: Sequence[Any], width: int, extra: int = 0) -> Any:
        return chunks(keys, max(1, min(self.size, (self.dialect.max_params - extra) // max(1, width))))

    @staticmethod
    def _args(chunk: Sequence[Any], pk_columns: Sequence[str]) -> tuple[Any, ...]:
        return tuple(chunk) if len(pk_columns) == 1 else flat(chunk)

    def _run(self, sql: str, args: tuple[Any, ...]) -> Any:
        return _pony.execute_in_session(self.dialect.db, sql, args)


def _is_leaf(root: Any) -> bool:
    """True if rows of ``root``'s hierarchy can be deleted without knowing their keys: no relation of
    theirs reaches other rows, and no many-to-many link rows hang on them."""
    return not _pony.delete_rules(root) and not _pony.link_tables_of(root)


def _cols(d: Dialect, columns: Sequence[str]) -> str:
    return ", ".join(d.q(c) for c in columns)


def _keys(cursor: Any) -> list[Any]:
    return [r[0] if len(r) == 1 else tuple(r) for r in cursor.fetchall()]
