"""Pony's model, seen through frozen views: what the rest of ponykit may know about entities and attributes.

Outside ``_pony`` no module reads a Pony ``Attribute``'s fields: it asks :func:`attr_info` for an
:class:`AttrInfo` (or :func:`entity_info` for an :class:`EntityInfo`) and passes ``info.attr`` (an opaque
handle) back through the door where Pony needs the attribute itself. The lookups here (an entity's
attributes, its primary key, its root, its Database) read the mapping only, never a session.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pony.orm.core as _core
from pony.orm import Database

from ._typing import Attribute, Entity

__all__ = [
    "AttrInfo",
    "EntityInfo",
    "LinkTable",
    "RelationKind",
    "attr_autostrip",
    "attr_column",
    "attr_expectation",
    "attr_info",
    "attr_infos",
    "attr_is_lazy",
    "attr_is_sensitive",
    "attr_label",
    "attr_names_without_columns",
    "attr_type",
    "attribute_converter",
    "attribute_entity",
    "attribute_option",
    "collection_attr_info",
    "collection_attr_names",
    "column_converters",
    "column_sql_types",
    "database_of",
    "default_alias",
    "discriminator_value",
    "entities_of",
    "entity_attribute",
    "entity_attributes",
    "entity_base",
    "entity_info",
    "entity_lineage",
    "entity_pk_attributes",
    "find_attribute",
    "is_attribute",
    "is_entity_class",
    "is_entity_instance",
    "max_length",
    "object_primary_key",
    "pony_repr",
    "primary_key",
    "raw_pk_leaf_attributes",
    "raw_primary_key",
    "relation_kind",
    "root_entity",
    "root_entity_name",
    "table_key",
]


def collection_attr_names(entity: Entity) -> frozenset[str]:
    """Names of the collection attributes (``Set``) of ``entity``: bulk writes do not take them."""
    return frozenset(a.name for a in entity._attrs_ if a.is_collection)


def attr_names_without_columns(entity: Entity) -> frozenset[str]:
    """Names of the non-collection attributes of ``entity`` that have no column (the reverse of a 1-1)."""
    return frozenset(a.name for a in entity._attrs_ if not a.is_collection and not a.columns)


@dataclass(frozen=True)
class LinkTable:
    """A many-to-many link table: ``attr`` of ``entity`` is stored in ``table``."""

    attr: str
    table: str | tuple[str, ...]
    columns: tuple[str, ...]  # the columns that point at this entity
    reverse_columns: tuple[str, ...]  # the columns that point at the related entity


@dataclass(frozen=True)
class EntityInfo:
    """What a mapped entity looks like in the database."""

    name: str
    table: str | tuple[str, ...]
    columns: tuple[str, ...]
    pk_attrs: tuple[str, ...]
    pk_columns: tuple[str, ...]
    pk_is_composite: bool
    column_attrs: tuple[str, ...]  # attributes stored in this entity's table, in column order
    discriminator: tuple[str, str, Any] | None  # (attribute, column, this entity's code)
    keys: tuple[tuple[str, ...], ...]  # unique keys other than the primary key, by attribute name
    link_tables: tuple[LinkTable, ...]


_info_cache: weakref.WeakKeyDictionary[Any, EntityInfo] = weakref.WeakKeyDictionary()


def entity_info(entity: Entity) -> EntityInfo:
    """Mapping metadata of a mapped entity (cached per entity class)."""
    info = _info_cache.get(entity)
    if info is not None:
        return info
    if entity._database_.schema is None:
        raise RuntimeError(f"entity {entity.__name__} is not mapped yet: call db.generate_mapping() first")
    disc_attr = entity._discriminator_attr_
    discriminator = None
    if disc_attr is not None:
        discriminator = (disc_attr.name, disc_attr.column, entity._discriminator_)
    keys: list[tuple[str, ...]] = []
    for attrs in entity._keys_:
        keys.append(tuple(a.name for a in attrs))
    links = []
    for attr in entity._attrs_:
        if attr.is_collection and attr.reverse is not None and attr.reverse.is_collection:
            links.append(
                LinkTable(
                    attr=attr.name,
                    table=attr.table,
                    columns=tuple(attr.reverse_columns) if attr.symmetric else tuple(attr.reverse.columns),
                    reverse_columns=tuple(attr.columns),
                )
            )
    info = EntityInfo(
        name=entity.__name__,
        table=entity._table_,
        columns=tuple(entity._columns_),
        pk_attrs=tuple(a.name for a in entity._pk_attrs_),
        pk_columns=tuple(entity._pk_columns_),
        pk_is_composite=bool(entity._pk_is_composite_),
        column_attrs=tuple(a.name for a in entity._attrs_with_columns_),
        discriminator=discriminator,
        keys=tuple(keys),
        link_tables=tuple(links),
    )
    _info_cache[entity] = info
    return info


def column_converters(entity: Entity) -> dict[str, list[Any]]:
    """The Pony converters of each attribute stored in the entity's table, by attribute name.

    A to-one relation has the converters of the related entity's primary-key columns.
    """
    return {a.name: list(a.converters) for a in entity._attrs_with_columns_}


def find_attribute(entity: Any, name: str) -> Attribute | None:
    """The attribute ``name`` of an entity class, or None (also when ``entity`` is not an entity)."""
    adict = getattr(entity, "_adict_", None)
    return None if adict is None else adict.get(name)


def root_entity(entity: Entity) -> Entity:
    """The root of an entity's class hierarchy (the entity itself when it has no base entity)."""
    return entity._root_


def entity_base() -> type:
    """Pony's ``Entity`` base class (whose own ``to_dict``/``to_json`` the Serializable mixin replaces)."""
    return _core.Entity  # type: ignore[no-any-return]


def entity_attribute(entity: Entity, name: str) -> Attribute:
    """The attribute object called ``name``; raises AttributeError naming the entity if there is none."""
    attr = entity._adict_.get(name)
    if attr is None:
        raise AttributeError(f"entity {entity.__name__} has no attribute {name!r}")
    return attr


def entities_of(db: Database) -> dict[str, Entity]:
    """The entity classes declared on ``db``, by name."""
    return dict(db.entities)


def database_of(entity: Entity) -> Database:
    """The Database an entity class belongs to."""
    return entity._database_


def entity_lineage(entity: Entity) -> list[Any]:
    """The entity and every entity it inherits from, most derived first."""
    return [c for c in entity.__mro__ if c in entity._all_bases_ or c is entity]


def primary_key(obj: Any) -> Any:
    """The primary key of an entity instance: a scalar, or a tuple for composite keys."""
    return obj._pkval_


def table_key(table: str | tuple[str, ...]) -> str:
    """The lower-cased unqualified name of a Pony table name (``"t"`` or ``("schema", "t")``).

    The one normalisation ponykit uses to match a table named in SQL against an entity's table.
    """
    return (table[-1] if isinstance(table, tuple) else str(table)).lower()


def raw_primary_key(obj: Any) -> tuple[Any, ...]:
    """The primary key of an instance as a flat tuple of column values (relations replaced by keys)."""
    return tuple(obj._get_raw_pkval_())


def collection_attr_info(attr: Attribute) -> tuple[Any, Any, bool]:
    """``(entity, related_entity, is_many_to_many)`` for a collection attribute."""
    reverse = attr.reverse
    return attr.entity, attr.py_type, bool(reverse is not None and reverse.is_collection)


def column_sql_types(entity: Entity) -> dict[str, str]:
    """The SQL type Pony declared for each column of ``entity``'s table (for casts in VALUES lists)."""
    table = entity._database_.schema.tables[entity._table_]
    return {name: str(column.sql_type) for name, column in table.column_dict.items()}


def is_entity_instance(value: Any) -> bool:
    """True if ``value`` is an instance of some Pony entity."""
    return isinstance(value, _core.Entity)


def is_entity_class(value: Any) -> bool:
    """True if ``value`` is a Pony entity class."""
    return isinstance(value, _core.EntityMeta)


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
    pk: bool  # a single-attribute PrimaryKey (Pony's is_pk); a part of a composite key has pk_offset only
    pk_offset: int | None  # position in the primary key (also for a part of a composite key), else None
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
    index: Any  # the declared ``index=`` option: None, True/False, or an index name
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
    # Not ``db.schema is not None``: Pony sets the schema first and the columns and converters later in
    # generate_mapping, so a view taken mid-mapping (a converter's init) would be cached incomplete. Pony
    # gives each entity its ``_bits_`` in the last pass, once every entity's columns and converters exist.
    return "_bits_" in getattr(entity, "__dict__", {})


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
        index=attr.index,
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


def attr_type(attr: Attribute) -> Any:
    """The attribute's declared type (``str``, an Enum, an entity class ...): the one field read without a
    view, for the per-type rules that also take stand-ins of attributes."""
    return attr.py_type


def is_attribute(value: Any) -> bool:
    """True for a Pony entity attribute (``Required``, ``Optional``, ``PrimaryKey``, ``Set`` ...)."""
    return isinstance(value, _core.Attribute)


def attr_autostrip(attr: Attribute) -> bool:
    """True when Pony strips surrounding whitespace from the attribute's str values before checking and
    storing them (``StrConverter.autostrip``, on by default); False before the mapping is built."""
    converters = attr.converters or ()
    return bool(converters and getattr(converters[0], "autostrip", False))


def attr_label(attr: Attribute) -> str:
    """``Entity.attribute`` for a Pony attribute (also before mapping)."""
    entity = attr.entity
    owner = entity.__name__ if entity is not None else "?"
    return f"{owner}.{attr.name}"


def relation_kind(attr: Attribute) -> str | None:
    """``'to_one'``, ``'one_to_many'``, ``'many_to_many'``, ``'lazy'``, or None for a plain eager column."""
    if attr.is_collection:
        if attr.reverse is None:
            return None
        return "many_to_many" if attr.reverse.is_collection else "one_to_many"
    if attr.reverse is not None:
        return "to_one"
    if attr.lazy and attr.columns:
        return "lazy"
    return None


def attr_column(attr: Attribute) -> str:
    """The column of a one-column attribute (a sort column of a keyset page)."""
    return str(attr.columns[0])


def attr_expectation(attr: Attribute) -> tuple[str, str]:
    """``("Book.title", "str")``: the attribute and its Python type's name, for error messages."""
    return f"{attr.entity.__name__}.{attr.name}", attr.py_type.__name__


def attr_is_lazy(attr: Attribute) -> bool:
    """True if the attribute is lazy (not in the SELECT list of a query over its entity)."""
    return bool(attr.lazy)


def attr_is_sensitive(attr: Attribute) -> bool:
    """True if the attribute's type is marked sensitive (its values must not leak)."""
    return bool(getattr(attr.py_type, "__ponykit_sensitive__", False))


def entity_attributes(entity: Entity) -> tuple[Attribute, ...]:
    """Every attribute of ``entity`` (inherited ones included) in declaration order, as Pony lists them."""
    return tuple(entity._attrs_)


def entity_pk_attributes(entity: Entity) -> tuple[Attribute, ...]:
    """The primary-key attributes of ``entity``."""
    return tuple(entity._pk_attrs_)


def raw_pk_leaf_attributes(entity: Entity) -> tuple[Attribute, ...]:
    """The attributes whose values make up ``_get_raw_pkval_()`` of an instance, one per pk column.

    A primary key that includes a relation is flattened into the related entity's own key attributes,
    the way Pony flattens it into columns.
    """
    leaves: list[Attribute] = []
    for attr in entity._pk_attrs_:
        if attr.reverse is not None and not attr.is_collection:
            leaves.extend(raw_pk_leaf_attributes(attr.py_type))
        else:
            leaves.append(attr)
    return tuple(leaves)


def discriminator_value(entity: Entity) -> Any:
    """The discriminator code Pony stores for ``entity``'s rows, or None without inheritance."""
    return entity._discriminator_ if entity._discriminator_attr_ is not None else None


def pony_repr(obj: Any) -> str:
    """Pony's own ``Entity.__repr__`` of an instance (``User[1]``)."""
    from pony.orm.core import Entity as PonyEntity

    return str(PonyEntity.__repr__(obj))


def attribute_option(attr: Attribute, name: str, default: Any = None) -> Any:
    """The value of keyword option ``name`` given on ``Required(...)``/``Optional(...)``, or ``default``."""
    return attr.kwargs.get(name, default)


def root_entity_name(entity: Entity) -> str:
    """The name of the root of ``entity``'s inheritance tree (the entity that owns the table)."""
    return str(entity._root_.__name__)


def attribute_entity(attr: Attribute) -> Entity:
    """The entity class that declares ``attr``."""
    return attr.entity


def attribute_converter(attr: Attribute) -> Any:
    """The converter Pony built for a mapped, single-column attribute."""
    return attr.converters[0]


def max_length(attr: Attribute) -> int | None:
    """The maximum string length Pony enforces for ``attr`` (``max_len``), or None."""
    converters = attr.converters
    return getattr(converters[0], "max_len", None) if converters else None


def object_primary_key(obj: Any) -> Any:
    """The primary key of ``obj`` if it has one yet (None for an object not saved, or for no object)."""
    if obj is None:
        return None
    try:
        return obj._pkval_
    except AttributeError:
        return None


def default_alias(entity: Entity) -> str:
    """The SQL alias Pony gives ``entity`` in ``Entity.select()`` (its uppercase letters, lowercased)."""
    return str(entity._default_iter_name_)
