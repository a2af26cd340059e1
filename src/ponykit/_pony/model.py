"""Frozen views of Pony's model: what the rest of ponykit may know about an entity's attributes.

Outside ``_pony`` no module reads a Pony ``Attribute``'s fields: it asks :func:`attr_info` for an
:class:`AttrInfo` and passes ``info.attr`` (an opaque handle) back through the door where Pony needs the
attribute itself.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ._typing import Attribute, Entity

__all__ = ["AttrInfo", "RelationKind", "attr_info", "attr_infos", "attr_label"]

RelationKind = Literal["value", "one", "many"]


@dataclass(frozen=True, eq=False)
class AttrInfo:
    """A frozen view of one Pony attribute, taken when its entity is mapped (or on demand before).

    ``kind`` is ``"value"`` for a column value, ``"one"`` for a reference to one entity and ``"many"``
    for a collection (``Set``). ``columns`` and ``converters`` are empty until the entity is mapped.
    """

    attr: Attribute  # the Pony attribute: an opaque handle to give back to ``_pony`` functions
    name: str
    entity: Entity  # the entity class that declares the attribute
    py_type: Any
    kind: RelationKind
    columns: tuple[str, ...]
    pk: bool
    pk_offset: int | None
    auto: bool
    required: bool
    nullable: bool
    lazy: bool
    unique: bool
    discriminator: bool
    volatile: bool
    hidden: bool
    default: Any
    sql_default: Any
    py_check: Any
    converters: tuple[Any, ...]
    args: tuple[Any, ...]  # positional options after the type, as declared (``Required(str, 40)``)
    options: Mapping[str, Any]  # keyword options Pony left to the converter (``max_len=``, ``searchable=``)
    reverse_attr: Attribute | None

    @property
    def label(self) -> str:
        """``Entity.attribute``, the way errors name an attribute."""
        return f"{self.entity.__name__}.{self.name}"

    @property
    def is_relation(self) -> bool:
        """True for a reference or a collection of entities."""
        return self.kind != "value"

    @property
    def is_collection(self) -> bool:
        """True for a ``Set`` of entities."""
        return self.kind == "many"

    @property
    def column(self) -> str | None:
        """The attribute's one column, or None (no column, or a composite reference)."""
        return self.columns[0] if len(self.columns) == 1 else None

    @property
    def converter(self) -> Any:
        """The attribute's first Pony converter (its only one unless a composite reference), or None."""
        return self.converters[0] if self.converters else None

    @property
    def reverse(self) -> AttrInfo | None:
        """The view of the reverse attribute of a relation, or None."""
        return None if self.reverse_attr is None else attr_info(self.reverse_attr)

    def __repr__(self) -> str:
        return f"<AttrInfo {self.label} {self.kind}>"


# Per entity class (weakly, so a throwaway Database's entities can go): attribute name -> view.
_views: weakref.WeakKeyDictionary[Any, dict[str, AttrInfo]] = weakref.WeakKeyDictionary()


def _mapped(entity: Entity) -> bool:
    database = getattr(entity, "_database_", None)
    return database is not None and database.schema is not None


def _view(attr: Attribute) -> AttrInfo:
    reverse = attr.reverse if not isinstance(attr.reverse, str) else None
    return AttrInfo(
        attr=attr,
        name=attr.name,
        entity=attr.entity,
        py_type=attr.py_type,
        kind="many" if attr.is_collection else "one" if attr.is_relation else "value",
        columns=tuple(attr.columns or ()),
        pk=bool(attr.is_pk),
        pk_offset=attr.pk_offset,
        auto=bool(attr.auto),
        required=bool(attr.is_required),
        nullable=bool(attr.nullable),
        lazy=bool(attr.lazy),
        unique=bool(attr.is_unique),
        discriminator=bool(attr.is_discriminator),
        volatile=bool(attr.is_volatile),
        hidden=bool(getattr(attr, "hidden", False)),
        default=attr.default,
        sql_default=attr.sql_default,
        py_check=attr.py_check,
        converters=tuple(attr.converters or ()),
        args=tuple(attr.args or ()),
        options=dict(attr.kwargs or {}),
        reverse_attr=reverse,
    )


def attr_info(attr: Attribute) -> AttrInfo:
    """The frozen view of a Pony attribute (cached once its entity is mapped)."""
    entity = attr.entity
    if entity is None or not _mapped(entity):
        return _view(attr)
    views = _views.get(entity)
    if views is None:
        views = _views[entity] = {}
    info = views.get(attr.name)
    if info is None or info.attr is not attr:
        info = views[attr.name] = _view(attr)
    return info


def attr_infos(entity: Entity) -> tuple[AttrInfo, ...]:
    """The views of all attributes of an entity class (inherited ones included), in declaration order."""
    return tuple(attr_info(a) for a in entity._attrs_)


def attr_label(attr: Attribute) -> str:
    """``Entity.attribute`` for a Pony attribute (also before mapping)."""
    entity = attr.entity
    owner = entity.__name__ if entity is not None else "?"
    return f"{owner}.{attr.name}"
