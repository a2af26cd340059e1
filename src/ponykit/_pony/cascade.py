"""Pony's delete rules read from the mapping: what ``obj.delete()`` does to the rows that refer to a
deleted object (``Entity._delete_`` in pony/orm/core.py), as frozen facts a set-wise delete can follow.

For each relation attribute ``attr`` of the deleted object, with ``reverse`` on the other entity:

- ``Set`` whose reverse is to-one (one-to-many): ``attr.cascade_delete`` (Pony's default is True when the
  reverse is ``Required``) deletes the children; else an ``Optional`` reverse is set to NULL; else Pony
  raises ``ConstraintError`` ("... non-empty set of ..., and 'cascade_delete' option of ... is not set").
- to-one whose reverse is to-one (one-to-one): the same three outcomes (the default ``cascade_delete`` is
  False there); the column is on one side only.
- ``Set`` whose reverse is a ``Set`` (many-to-many): the link rows go (``EntityInfo.link_tables``).
- to-one whose reverse is a ``Set``: only the parent's collection changes, nothing in the database.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Literal

from ._typing import Entity
from .model import LinkTable, entity_info

__all__ = ["DeleteRule", "delete_rules", "link_tables_of", "loaded_target"]

Action = Literal["cascade", "set_null", "restrict"]


@dataclass(frozen=True)
class DeleteRule:
    """What deleting a row of ``owner`` (the root of a hierarchy) does through one relation.

    ``relation`` names the pair for messages: ``"Parent.children -> Child.parent"``; ``attr`` is the
    deleted side's attribute (``"Parent.children"``, what Pony's ConstraintError names). ``target`` is the
    entity of the other side and ``target_root`` its root (whose table holds its rows). The link is either
    ``fk_columns`` in the target's table (pointing at the owner's primary key) or, for a one-to-one whose
    column is on the owner's side, ``own_columns`` in the owner's table (pointing at the target's key).
    ``reverse_name`` is the target's attribute (set to NULL by ``set_null``).
    """

    action: Action
    relation: str
    attr: str
    attr_name: str
    target: Entity
    target_root: Entity
    reverse_name: str
    fk_columns: tuple[str, ...]
    own_columns: tuple[str, ...]


_rules_cache: weakref.WeakKeyDictionary[Any, tuple[DeleteRule, ...]] = weakref.WeakKeyDictionary()


def _hierarchy(entity: Entity) -> list[Entity]:
    """The root of ``entity``'s hierarchy and every subclass of it (rows of all share the root's table)."""
    root = entity._root_
    return [root, *sorted(root._subclasses_, key=lambda c: c.__name__)]


def delete_rules(entity: Entity) -> tuple[DeleteRule, ...]:
    """The delete rules of every relation of ``entity``'s hierarchy (root and subclasses), in declaration
    order; relations whose delete changes nothing in the database are left out."""
    root = entity._root_
    found = _rules_cache.get(root)
    if found is not None:
        return found
    rules: list[DeleteRule] = []
    seen: set[Any] = set()
    for cls in _hierarchy(root):
        for attr in cls._attrs_:
            reverse = attr.reverse
            if attr in seen or reverse is None or reverse.is_collection:
                continue  # not a relation, or many-to-many (link rows) / to-one of a Set (nothing)
            seen.add(attr)
            if not attr.is_collection and not reverse.columns and not attr.columns:
                continue  # cannot happen in a mapped one-to-one; kept safe
            if attr.cascade_delete:
                action: Action = "cascade"
            elif not reverse.is_required:
                action = "set_null"
                if not reverse.columns:
                    continue  # the column is in the deleted row itself: it goes with it
            else:
                action = "restrict"
            target = reverse.entity
            rules.append(
                DeleteRule(
                    action=action,
                    relation=f"{attr} -> {reverse}",
                    attr=str(attr),
                    attr_name=attr.name,
                    target=target,
                    target_root=target._root_,
                    reverse_name=reverse.name,
                    fk_columns=tuple(reverse.columns),
                    own_columns=() if reverse.columns else tuple(attr.columns),
                )
            )
    result = tuple(rules)
    _rules_cache[root] = result
    return result


def link_tables_of(entity: Entity) -> tuple[LinkTable, ...]:
    """The many-to-many link tables holding rows of ``entity`` or of any of its subclasses (deleting
    their rows deletes those link rows too); a symmetric ``Set`` appears once per column."""
    found: dict[tuple[Any, tuple[str, ...]], LinkTable] = {}
    for cls in [entity, *sorted(entity._subclasses_, key=lambda c: c.__name__)]:
        for link in entity_info(cls).link_tables:
            found.setdefault((link.table, link.columns), link)
        for attr in cls._attrs_:
            if attr.is_collection and attr.symmetric:
                # A symmetric Set stores each pair in both directions: the rows pointing at the
                # deleted row from the other column go too.
                mirror = LinkTable(attr.name, attr.table, tuple(attr.columns), tuple(attr.reverse_columns))
                found.setdefault((mirror.table, mirror.columns), mirror)
    return tuple(found.values())


def loaded_target(obj: Any, attr_name: str) -> Any:
    """The object ``obj``'s loaded to-one attribute ``attr_name`` points at (a seed if its row was never
    read), or None (not loaded, or NULL): which parent a loaded child refers to, read without any SQL."""
    attr = obj._adict_.get(attr_name)
    if attr is None:
        return None
    return obj._vals_.get(attr)
