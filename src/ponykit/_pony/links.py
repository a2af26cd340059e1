"""Many-to-many link rows written behind Pony's back: the link table of a ``Set`` as Pony maps it, and the
session's loaded collections kept true afterwards.

Pony keeps a collection's known members in a ``SetData`` (a ``set`` in ``obj._vals_[attr]``) with
``is_fully_loaded``, ``count`` and ``absent``. Two rules of Pony's own ``Set.load`` matter here: a fully
loaded collection that meets a new member in the database raises ``UnrepeatableReadError`` ("phantom
object appeared"), and so does a member it holds that the database no longer has ("disappeared"). So
after link rows are written, both sides are brought up to date, never left claiming to be complete.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pony.orm.core as _core
import pony.orm.dbapiprovider as _dbapiprovider

from ._typing import Attribute, Entity

__all__ = [
    "ManyToMany",
    "int_key_bounds",
    "loaded_collections",
    "many_to_many",
    "object_keys",
    "update_loaded_links",
]


@dataclass(frozen=True)
class ManyToMany:
    """A many-to-many ``Set`` and its link table, as Pony's flush writes it (``Set.add_m2m``).

    A link row binds the owner's raw key to ``owner_columns`` and the other object's raw key to
    ``other_columns``. A symmetric relation (``friends = Set('Person', reverse='friends')``) stores each
    link twice, ``(a, b)`` and ``(b, a)``, as Pony does.
    """

    attr: Attribute  # opaque handle for update_loaded_links
    label: str  # "Book.tags"
    owner: Entity  # the entity that declares the collection
    other: Entity  # the entity of its items
    table: str | tuple[str, ...]
    owner_columns: tuple[str, ...]
    other_columns: tuple[str, ...]
    symmetric: bool


def many_to_many(attr: Attribute) -> ManyToMany | None:
    """The :class:`ManyToMany` view of a mapped collection attribute, or None if it is not one (a plain
    attribute, or a one-to-many ``Set`` whose reverse is a ``Required``/``Optional``)."""
    if not isinstance(attr, _core.Set):
        return None
    reverse = attr.reverse
    if reverse is None or not reverse.is_collection or attr.table is None:
        return None
    if attr.symmetric:
        owner_columns, other_columns = attr.columns, attr.reverse_columns
    else:
        owner_columns, other_columns = reverse.columns, attr.columns
    return ManyToMany(
        attr=attr,
        label=f"{attr.entity.__name__}.{attr.name}",
        owner=attr.entity,
        other=attr.py_type,
        table=attr.table,
        owner_columns=tuple(owner_columns),
        other_columns=tuple(other_columns),
        symmetric=bool(attr.symmetric),
    )


def int_key_bounds(attr: Attribute) -> tuple[int | None, int | None] | None:
    """``(min, max)`` when Pony binds an ``int`` value of the key attribute ``attr`` as it is once it is
    within those bounds (None: no bound), else None.

    That is the path ``bulk_encoder_source`` inlines for an ``int`` (Pony's own ``IntConverter.validate``,
    no ``py_check``, ``val2dbval`` and ``py2sql`` the identity, also under ponykit's query-parameter
    wrapper, which passes an ``int`` to the dialect's converter): a column of such ints is then checked in
    C (its types, its min and max) instead of value by value.
    """
    if attr.reverse is not None or attr.py_check is not None or len(attr.converters) != 1:
        return None
    conv = attr.converters[0]
    kind = type(conv)
    if kind.validate is not _dbapiprovider.IntConverter.validate:
        return None
    base: Any = kind.__mro__[1] if getattr(kind, "_ponykit_param_converter_", False) else kind
    identity = _dbapiprovider.Converter
    if base.py2sql is not identity.py2sql or kind.val2dbval is not identity.val2dbval:
        return None
    return conv.min_val, conv.max_val


def object_keys(values: list[Any], entity: Entity) -> tuple[list[Any], int | None]:
    """``values`` with each instance of ``entity`` replaced by its primary key (other values kept), and
    the index of the first object of another entity (None if there is none), in one pass over types."""
    kinds = {t for t in set(map(type, values)) if isinstance(t, _core.EntityMeta)}
    if not kinds:
        return values, None
    wrong = {t for t in kinds if not issubclass(t, entity)}
    if wrong:
        return values, next(i for i, v in enumerate(values) if type(v) in wrong)
    return [v._pkval_ if type(v) in kinds else v for v in values], None


def loaded_collections(objects: dict[Any, Any], attr: Attribute) -> dict[Any, Any]:
    """The entries of ``objects`` (key -> session object) whose collection ``attr`` is loaded (fully or
    in part): the only ones a link written behind Pony's back can make untrue."""
    return {k: o for k, o in objects.items() if o._vals_.get(attr) is not None}


def update_loaded_links(link: ManyToMany, pairs: Iterable[tuple[Any, Any]], linked: bool) -> None:
    """Bring the session's loaded collections up to date after link rows were written (``linked``) or
    deleted, for ``pairs`` of ``(owner, other)`` session objects (None where the object is not in the
    session's identity map).

    With both objects in the session, each side's collection gains (or loses) the other exactly, as
    Pony's ``add``/``remove`` would after a flush. With one object only, a link added to its collection
    marks it not fully loaded (Pony's next use fetches the new members, keeping the known ones); a removed
    link cannot be among its members (members are session objects), only its cached count goes.
    """
    attr = link.attr
    reverse = attr.reverse
    for owner, other in pairs:
        if (owner is None or owner._vals_.get(attr) is None) and (
            other is None or other._vals_.get(reverse) is None
        ):
            continue  # neither collection loaded: nothing known to keep true
        _update(owner, attr, other, linked)
        _update(other, reverse, owner, linked)  # symmetric: reverse is attr, the row (other, owner)


def _update(obj: Any, attr: Attribute, item: Any, linked: bool) -> None:
    if obj is None or obj._status_ in ("deleted", "cancelled", "marked_to_delete"):
        return
    setdata = obj._vals_.get(attr)
    if item is None or item._status_ in ("deleted", "cancelled", "marked_to_delete"):
        if setdata is not None and linked:
            setdata.is_fully_loaded = False  # Set.load fetches the new member on the next use
            setdata.count = None
            setdata.absent = None
        elif setdata is not None and not setdata.is_fully_loaded:
            setdata.count = None
        return
    if linked:
        if setdata is None:
            # Pony's invariant: an object known to be in a loaded collection knows that collection's
            # owner among its own (partly loaded) members, as Set.load's db_reverse_add leaves it.
            setdata = obj._vals_[attr] = _core.SetData()
        if item not in setdata:
            setdata.add(item)
            if setdata.count is not None:
                setdata.count += 1
        if setdata.absent is not None:
            setdata.absent.discard(item)
        return
    if setdata is None:
        return
    if item in setdata:
        setdata.discard(item)
        if setdata.count is not None:
            setdata.count -= 1
    elif not setdata.is_fully_loaded:
        setdata.count = None
