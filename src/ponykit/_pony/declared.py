"""The declared options of entities and attributes, and entities declared again from them (migrations).

A migration snapshot records what a model *declares* (``Required(str, 80, index=True)``), not what Pony
resolved from it, so that a fresh ``Database`` declared from the snapshot maps to the same tables on
every dialect. Pony keeps most declared options in an attribute's slots and ``kwargs``, but fills some
in while it builds the classes and the mapping (``nullable`` of optional non-string attributes and of
subclass attributes, ``cascade_delete``, ``reverse``, ``columns``, ``table``, the entity's ``_table_``
and ``_discriminator_``). :func:`attr_spec` reads an attribute *canonically*: an option is written only
when it is not what Pony would infer without it, so a model read mapped, read unmapped, or declared
again from its snapshot and read, gives one and the same spec. ``reverse`` is the exception: it is
written on both sides of every relation of a bound entity (Pony accepts it on both sides, and a
snapshot needs no name resolution to pair them).

The spec of one attribute: ``{"name", "kind", "type", "args", "options"}``; of one entity: ``{"bases",
"table", "discriminator", "primary_key", "attrs", "composite_keys", "composite_indexes"}``.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import types
import uuid
from typing import Any

from pony.orm import (
    Database,
    Discriminator,
    FloatArray,
    IntArray,
    Json,
    LongStr,
    Optional,
    PrimaryKey,
    Required,
    Set,
    StrArray,
)
from pony.orm.core import Attribute, Index

from ..errors import MigrationError
from .declared_values import Unrestorable, import_qualname, qualified_name, spec_value, value_of_spec

__all__ = [
    "BUILTIN_TYPES",
    "Unrestorable",
    "attr_spec",
    "declare_attr",
    "declare_entities",
    "entity_specs",
    "import_qualname",
    "mapping_columns",
    "mapping_discriminator",
    "mapping_link",
    "mapping_table",
    "spec_value",
    "value_of_spec",
]

#: The snapshot's names of the types Pony supports natively.
BUILTIN_TYPES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "Decimal": decimal.Decimal,
    "datetime": _dt.datetime,
    "date": _dt.date,
    "time": _dt.time,
    "timedelta": _dt.timedelta,
    "UUID": uuid.UUID,
    "bytes": bytes,
    "Json": Json,
    "LongStr": LongStr,
    "IntArray": IntArray,
    "StrArray": StrArray,
    "FloatArray": FloatArray,
}
_TYPE_NAMES = {py_type: name for name, py_type in BUILTIN_TYPES.items()}
_KINDS: dict[str, type] = {
    "PrimaryKey": PrimaryKey,
    "Discriminator": Discriminator,
    "Required": Required,
    "Optional": Optional,
    "Set": Set,
}
_ENTITY_PREFIX = "entity:"
_PY_PREFIX = "py:"

# Slot-held options written when set; whatever else is left in ``attr.kwargs`` (converter options: size,
# max_len, precision, scale, unsigned, min, max, autostrip, ponykit type options ...) is kept verbatim.
_FLAG_SLOTS = (
    ("sql_type", "sql_type", None),
    ("fk_name", "fk_name", None),
    ("optimistic", "optimistic", None),
)


def _type_name(py_type: Any, where: str = "") -> str:
    if isinstance(py_type, str):
        return _ENTITY_PREFIX + py_type
    if isinstance(py_type, types.FunctionType):  # Required(lambda: Person)
        py_type = py_type()
    if isinstance(py_type, type) and hasattr(py_type, "_database_") and hasattr(py_type, "_pk_attrs_"):
        return _ENTITY_PREFIX + py_type.__name__
    name = _TYPE_NAMES.get(py_type)
    if name is not None:
        return name
    path = qualified_name(py_type)
    if path is None:
        raise MigrationError(
            f"{where}the attribute type {py_type!r} cannot be recorded in a migration snapshot: declare it "
            "at a module's top level so that it can be imported by name"
        )
    return _PY_PREFIX + path


def _kind(attr: Any) -> str:
    for name, cls in _KINDS.items():
        if isinstance(attr, cls):
            return name
    raise TypeError(f"unsupported attribute class {type(attr).__name__} for {attr!r}")


def _provider(attr: Any) -> Any:
    entity = attr.entity
    if entity is None:
        return None
    schema_db = entity._database_
    return schema_db.provider if schema_db.schema is not None else None


def _in_key(attr: Any) -> bool:
    # Every Index (a unique attribute's own, a composite key or index) makes its optional attributes nullable.
    return any(attr in index.attrs for index in attr.entity._indexes_)


def _nullable_implied(attr: Any) -> bool:
    """True where Pony makes the attribute nullable on its own (so declaring it changes nothing)."""
    if attr.is_required:
        return attr.entity is not None and attr.entity._root_ is not attr.entity
    if not attr.type_has_empty_value:
        return True
    # The rest needs the entity: a subclass, or a key (the attribute's own unique one, a composite one).
    return attr.entity is not None and (attr.entity._root_ is not attr.entity or _in_key(attr))


def _default_columns(attr: Any, provider: Any) -> list[str] | None:
    """The columns Pony gives a bound non-collection attribute that declares none (None: cannot tell)."""
    reverse = attr.reverse
    if not reverse:
        return list(provider.get_default_column_names(attr))
    pk_columns = reverse.entity._get_pk_columns_()
    return list(provider.get_default_column_names(attr, pk_columns))


def _relation_options(attr: Any, options: dict[str, Any], bound: bool, provider: Any) -> None:
    reverse = attr.reverse
    if reverse:
        options["reverse"] = reverse if isinstance(reverse, str) else reverse.name
    cascade = attr.cascade_delete
    if bound and reverse and not isinstance(reverse, str):
        if cascade is not None and cascade != (attr.is_collection and reverse.is_required):
            options["cascade_delete"] = cascade
    elif cascade is not None:
        options["cascade_delete"] = cascade
    if attr.is_collection:
        _collection_options(attr, options, bound, provider)


def _collection_options(attr: Any, options: dict[str, Any], bound: bool, provider: Any) -> None:
    reverse = attr.reverse
    m2m = bound and reverse and not isinstance(reverse, str) and reverse.is_collection
    if attr.reverse_fk_name is not None:
        options["reverse_fk_name"] = attr.reverse_fk_name
    if attr.nplus1_threshold != 1:
        options["nplus1_threshold"] = attr.nplus1_threshold
    if not m2m or provider is None:
        if attr.table:
            options["table"] = attr.table
        if attr.columns:
            options["columns"] = list(attr.columns)
        if attr.reverse_columns:
            options["reverse_columns"] = list(attr.reverse_columns)
        return
    first, second = sorted((attr, reverse), key=lambda a: (a.entity.__name__, a.name))
    if attr.table and attr.table != provider.get_default_m2m_table_name(first, second):
        options["table"] = attr.table
    defaults = [list(provider.get_default_m2m_column_names(reverse.entity))]
    if attr.entity is reverse.entity:  # the second side of a self-referencing pair gets "_2" names
        defaults.append([column + "_2" for column in defaults[0]])
    if attr.columns and list(attr.columns) not in defaults:
        options["columns"] = list(attr.columns)
    if attr.symmetric and attr.reverse_columns and list(attr.reverse_columns) not in defaults[1:]:
        own = [column + "_2" for column in attr.columns]
        if list(attr.reverse_columns) != own:
            options["reverse_columns"] = list(attr.reverse_columns)


def _column_options(attr: Any, options: dict[str, Any], provider: Any) -> None:
    columns = list(attr.columns or ())
    if not columns:
        return
    if provider is not None and attr.entity is not None and columns == _default_columns(attr, provider):
        return
    if len(columns) == 1:
        options["column"] = columns[0]
    else:
        options["columns"] = columns


def attr_spec(attr: Any) -> dict[str, Any]:
    """The snapshot spec of one Pony attribute, bound to an entity or not (``Optional(str, 40)``)."""
    bound = attr.entity is not None
    provider = _provider(attr)
    options: dict[str, Any] = {}
    if attr.is_unique and not attr.is_pk:
        options["unique"] = True
    if attr.nullable and not _nullable_implied(attr):
        options["nullable"] = True
    if attr.auto:
        options["auto"] = True
    for option, slot, empty in _FLAG_SLOTS:
        value = getattr(attr, slot)
        if value != empty:
            options[option] = spec_value(value)
    if attr.index is not None:
        options["index"] = attr.index
    if attr.reverse_index is not None:
        options["reverse_index"] = attr.reverse_index
    if attr.sql_default is not None:
        options["sql_default"] = attr.sql_default
    if attr.py_check is not None:
        options["py_check"] = spec_value(attr.py_check)
    if attr.is_volatile:
        options["volatile"] = True
    if attr.hidden:
        options["hidden"] = True
    if attr.interleave is not None:
        options["interleave"] = attr.interleave
    py_type = attr.py_type
    if attr.lazy != (False if attr.is_relation else getattr(py_type, "lazy", False)):
        options["lazy"] = attr.lazy
    if attr.is_relation:
        _relation_options(attr, options, bound, provider)
    if not attr.is_collection:
        _column_options(attr, options, provider)
    if bound and hasattr(attr, "original_default"):
        options["default"] = spec_value(attr.original_default)
    for key, value in attr.kwargs.items():
        options[key] = spec_value(value)
    if attr.is_discriminator and "column" in options and options["column"] == attr.name:
        del options["column"]  # Pony's implicit "classtype" declares its own column name
    return {
        "name": attr.name,
        "kind": _kind(attr),
        "type": _type_name(py_type, f"attribute {attr.entity.__name__}.{attr.name}: " if bound else ""),
        "args": [spec_value(arg) for arg in attr.args],
        "options": dict(sorted(options.items())),
    }


def _entity_spec(entity: Any) -> dict[str, Any]:
    is_root = entity._root_ is entity
    db = entity._database_
    table = None
    if is_root:
        table = entity._table_ if db.schema is not None else entity.__dict__.get("_table_")
        if db.schema is not None and table == db.provider.get_default_entity_table_name(entity):
            table = None
        if isinstance(table, tuple):
            raise NotImplementedError(f"{entity.__name__}: schema-qualified table names are not supported")
    discriminator = entity.__dict__.get("_discriminator_")
    if discriminator == entity.__name__:
        discriminator = None
    own = [index for index in entity._indexes_ if index.entity is entity and len(index.attrs) > 1]
    return {
        "bases": [base.__name__ for base in entity.__bases__ if base in db.entities.values()],
        "table": table,
        "discriminator": discriminator,
        "primary_key": [attr.name for attr in entity._pk_attrs_],
        "attrs": [attr_spec(attr) for attr in entity._new_attrs_],
        "composite_keys": [_names(i.attrs) for i in own if i.is_unique and not i.is_pk],
        "composite_indexes": [_names(i.attrs) for i in own if not i.is_unique],
    }


def _names(attrs: Any) -> list[str]:
    return [attr.name for attr in attrs]


def entity_specs(db: Database) -> dict[str, dict[str, Any]]:
    """The spec of every entity of ``db`` by name, in declaration order (canonical once ``db`` is mapped).

    On a Database not mapped yet, options Pony fills in at mapping (default column and table names,
    ``cascade_delete``) cannot be told from declared ones: declare the specs again and map them (the
    snapshot does) to get the canonical form.
    """
    return {name: _entity_spec(entity) for name, entity in db.entities.items()}


# -- declaring -----------------------------------------------------------------------------------------


def _py_type(type_name: str) -> Any:
    if type_name.startswith(_ENTITY_PREFIX):
        return type_name[len(_ENTITY_PREFIX) :]
    if type_name.startswith(_PY_PREFIX):
        return import_qualname(type_name[len(_PY_PREFIX) :])
    try:
        return BUILTIN_TYPES[type_name]
    except KeyError:
        raise ValueError(
            f"unknown attribute type {type_name!r}: expected one of {', '.join(BUILTIN_TYPES)}, "
            "'entity:<Name>' or 'py:<module>.<qualname>'"
        ) from None


def declare_attr(spec: dict[str, Any]) -> Attribute:
    """A new, unbound Pony attribute declared from its spec (the inverse of :func:`attr_spec`)."""
    try:
        cls = _KINDS[spec["kind"]]
    except KeyError:
        raise ValueError(f"attribute {spec.get('name')!r}: unknown kind {spec.get('kind')!r}") from None
    kwargs = {key: value_of_spec(value) for key, value in spec["options"].items()}
    args = [value_of_spec(arg) for arg in spec["args"]]
    attribute: Attribute = cls(_py_type(spec["type"]), *args, **kwargs)
    return attribute


def _order(entities_spec: dict[str, dict[str, Any]]) -> list[str]:
    done: list[str] = []
    seen: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in seen:
            return
        if name in path:
            raise ValueError(f"entity {name!r}: its bases form a cycle ({' -> '.join((*path, name))})")
        for base in entities_spec[name]["bases"]:
            if base not in entities_spec:
                raise ValueError(f"entity {name!r}: base {base!r} is not in the snapshot")
            visit(base, (*path, name))
        seen.add(name)
        done.append(name)

    for name in entities_spec:
        visit(name, ())
    return done


def declare_entities(db: Database, entities_spec: dict[str, dict[str, Any]]) -> None:
    """Declare the entity classes of ``entities_spec`` on a fresh, unmapped ``db`` (bases first)."""
    for name in _order(entities_spec):
        spec = entities_spec[name]
        namespace: dict[str, Any] = {"__module__": "ponykit.migrate.models", "__qualname__": name}
        for attr in spec["attrs"]:
            namespace[attr["name"]] = declare_attr(attr)
        indexes = []
        pk = spec["primary_key"]
        if len(pk) > 1 and not spec["bases"]:
            indexes.append(Index(*pk, is_pk=True))
        indexes += [Index(*names, is_pk=False, is_unique=True) for names in spec["composite_keys"]]
        indexes += [Index(*names, is_pk=False, is_unique=False) for names in spec["composite_indexes"]]
        if indexes:
            namespace["_indexes_"] = indexes
        if spec["table"] is not None:
            namespace["_table_"] = spec["table"]
        if spec["discriminator"] is not None:
            namespace["_discriminator_"] = spec["discriminator"]
        bases = tuple(db.entities[base] for base in spec["bases"]) or (db.Entity,)
        type(name, bases, namespace)


# -- mapping facts -------------------------------------------------------------------------------------


def _attr(db: Database, entity: str, name: str) -> Any:
    try:
        found = db.entities[entity]._adict_[name]
    except KeyError:
        raise KeyError(f"entity {entity!r} has no attribute {name!r}") from None
    return found


def mapping_table(db: Database, entity: str) -> str:
    """The table of ``entity`` in mapped ``db`` (the root's table for a subclass)."""
    return str(db.entities[entity]._table_)


def mapping_columns(db: Database, entity: str, attr: str) -> tuple[str, ...]:
    """The columns of a non-collection attribute in its entity's table (``()`` for a Set)."""
    found = _attr(db, entity, attr)
    return () if found.is_collection else tuple(found.columns)


def mapping_link(db: Database, entity: str, attr: str) -> tuple[str, tuple[str, ...]] | None:
    """(link table, the Set's columns there) of a many-to-many Set (a symmetric one owns both), else None."""
    found = _attr(db, entity, attr)
    reverse = found.reverse
    if not found.is_collection or not reverse.is_collection:
        return None
    return str(found.table), tuple(found.columns) + (tuple(found.reverse_columns) if reverse is found else ())


def mapping_discriminator(db: Database, entity: str) -> tuple[str, str, Any] | None:
    """(table, discriminator column, ``entity``'s value) when its hierarchy has a discriminator."""
    cls = db.entities[entity]
    attr = cls._discriminator_attr_
    if attr is None:
        return None
    return str(cls._table_), str(attr.columns[0]), cls._discriminator_
