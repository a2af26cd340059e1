"""Validated input: ``Entity.from_dict(data)`` and ``obj.update_from(data)``.

Every value goes through the JSON rule of its attribute (``serialization._codec``) and then through
Pony's own ``Attribute.validate`` (the converter's ``validate``, ``py_check``, min/max, max_len,
required and nullability); a ``Decimal`` must also fit its column's ``DECIMAL(precision, scale)``.

Relations take an entity object of the right class, a primary key (a scalar, a list for composite
keys, or an object holding every key field, as nested ``to_dict`` output does), or an object without
the full key: a new related object, created with its reverse attribute pointing at the parent
(``Order.from_dict({"customer": 1, "lines": [{"product": 3, "qty": 2}]})``). The whole tree is
validated first and every problem is reported at once, by path (``lines.2.qty``); nothing is created
when there is one. The primary key, ``hidden=True`` attributes, sensitive attributes and the
discriminator are refused unless named in ``allow=``, and with ``fields=`` only the attributes named
there may be set; both take dotted paths for nested objects (``"lines.qty"``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import Any

from .. import _pony
from ..errors import ConfigurationError, FieldError, ValidationError
from ..security.sensitive import is_sensitive, mask
from ._codec import BadValue, describe, value_loader
from ._problems import constraint_error, type_error
from ._validators import run_clean, run_field

__all__ = ()

_MISSING = object()

# A tree of attribute names from dotted paths: {"lines": {"qty": {}}} for ["lines.qty"].
Tree = dict[str, "Tree"]


def _tree(names: Iterable[str] | str | None) -> Tree:
    if names is None:
        return {}
    if isinstance(names, str):
        names = names.replace(",", " ").split()
    tree: Tree = {}
    for name in names:
        if not isinstance(name, str):
            raise ConfigurationError(f"allow= and fields= take attribute names or dotted paths; got {name!r}")
        node = tree
        for part in name.split("."):
            node = node.setdefault(part, {})
    return tree


def _check_fields(entity: Any, tree: Tree, where: str) -> None:
    """``fields=`` names attributes (relations for inner segments): a typo would silently refuse input."""
    for name, sub in tree.items():
        attr = _pony.find_attribute(entity, name)
        if attr is None:
            raise ConfigurationError(
                f"from_dict(fields=...) for {where}: {entity.__name__} has no attribute {name!r}; "
                f"its attributes are {[info.name for info in _pony.attr_infos(entity)]}"
            )
        if sub:
            info = _pony.attr_info(attr)
            if not info.is_relation:
                raise ConfigurationError(
                    f"from_dict(fields=...) for {where}: {entity.__name__}.{name} is not a relation, "
                    f"so {name!r} cannot have nested fields {sorted(sub)}"
                )
            _check_fields(info.py_type, sub, f"{where}.{name}")


@dataclass
class _Node:
    """One object of the input tree: its validated values and the new objects nested in it."""

    entity: Any
    path: str
    values: dict[str, Any] = field(default_factory=dict)  # columns and to-one references
    before: list[tuple[str, _Node]] = field(default_factory=list)  # new to-one objects it points to
    after: list[tuple[Any, _Node]] = field(default_factory=list)  # new objects pointing back at it
    collections: dict[str, list[Any]] = field(default_factory=dict)  # existing objects of its sets
    existing: Any = None  # the object update_from changes; None for a new one
    built: Any = None  # the object made (or changed) from this node, once built
    old: dict[str, Any] = field(default_factory=dict)  # values update_from replaced, to put back


@dataclass
class _Context:
    errors: list[FieldError]
    allow: Tree
    fields: Tree | None  # None: no allow-list


def _join(path: str, name: str | int) -> str:
    return f"{path}.{name}" if path else str(name)


def _protection(attr: Any) -> str | None:
    """Why an attribute may not be mass-assigned by default, or None."""
    info = _pony.attr_info(attr)
    if info.pk_offset is not None:
        return "the primary key"
    if info.discriminator:
        return "the discriminator"
    if info.hidden:
        return "a hidden attribute"
    if is_sensitive(attr):
        return "a sensitive attribute"
    return None


def _pony_message(attr: Any, exc: BaseException) -> str:
    if is_sensitive(attr):
        # Pony's messages may quote the value; a sensitive value never reaches an error message.
        return f"value {mask(1)} was rejected by the attribute's validation (details hidden: sensitive)"
    return str(exc)


def _is_reference(target: Any, value: Any) -> bool:
    """A mapping holding every primary-key field names an existing object; other mappings are new ones."""
    return all(name in value for name in _pony.entity_info(target).pk_attrs)


def _reference(attr: Any, value: Any, path: str, errors: list[FieldError]) -> Any:
    """The related instance named by ``value`` (an instance or a key), or _MISSING after recording why."""
    target = _pony.attr_info(attr).py_type
    if _pony.is_entity_instance(value):
        if isinstance(value, target):
            return value
        message = f"expected a {target.__name__} or its key, got a {type(value).__name__}"
        errors.append(FieldError(path, message, type="model_type"))
        return _MISSING
    leaves = _pony.raw_pk_leaf_attributes(target)
    if isinstance(value, Mapping):
        pk_names = list(_pony.entity_info(target).pk_attrs)
        if not _is_reference(target, value):
            message = f"expected a {target.__name__} key or an object with {pk_names}"
            errors.append(FieldError(path, message, type="model_type"))
            return _MISSING
        parts = [value[n] for n in pk_names]
        value = parts[0] if len(parts) == 1 else parts
    raw = list(value) if isinstance(value, list) and len(leaves) > 1 else [value]
    if len(raw) != len(leaves) or any(isinstance(v, (dict, list)) for v in raw):
        shape = "a key" if len(leaves) == 1 else f"a list of {len(leaves)} key values"
        kind = type_error(leaves[0], value)[0] if len(leaves) == 1 else "list_type"
        errors.append(
            FieldError(path, f"expected {shape} of {target.__name__}, got {describe(value)}", type=kind)
        )
        return _MISSING
    key_parts = []
    for leaf, v in zip(leaves, raw, strict=True):
        try:
            key_parts.append(value_loader(leaf)(v))
        except BadValue as exc:
            kind, ctx = type_error(leaf, v)
            errors.append(FieldError(path, f"invalid key of {target.__name__}: {exc}", type=kind, ctx=ctx))
            return _MISSING
    key = tuple(key_parts)
    found = _pony.find_by_raw_pk(target, key)
    if found is None:
        shown = raw[0] if len(raw) == 1 else raw
        errors.append(
            FieldError(path, f"no {target.__name__} with primary key {shown!r} exists", type="not_found")
        )
        return _MISSING
    return found


def _at_scale(attr: Any, value: Any) -> Any:
    """A Decimal at its column's scale; "-0" would answer "-0.00" while PostgreSQL and MariaDB store
    0.00, so a zero is unsigned. Values that do not fit ``DECIMAL(precision, scale)`` were refused
    before (``_problems.constraint_error``): too many integer digits would fail at flush (or be stored
    as is on SQLite), more fractional digits would be rounded by the server, so nothing is rounded."""
    limits = _pony.decimal_limits(attr)
    if limits is None or not isinstance(value, Decimal):
        return value
    precision, scale = limits
    # exact: the value fits DECIMAL(precision, scale), so its quantized coefficient fits precision + 1
    quantized = value.quantize(Decimal(1).scaleb(-scale), context=Context(prec=precision + 2))
    return quantized if quantized else quantized.copy_abs()


def _scalar(attr: Any, value: Any, path: str, errors: list[FieldError]) -> Any:
    info = _pony.attr_info(attr)
    if value is None and (info.required or not info.nullable):
        # Pydantic refuses None for a required (or not nullable) field as a value of the wrong type
        kind, ctx = type_error(attr, value)
        why = "is required" if info.required else "is not nullable (Pony stores an empty string)"
        message = f"{info.label} {why}: expected a value, got null"
        errors.append(FieldError(path, message, type=kind, ctx=ctx))
        return _MISSING
    if value is not None:
        try:
            value = value_loader(attr)(value)
        except BadValue as exc:
            message = str(exc) if not is_sensitive(attr) else f"wrong type of value ({mask(value)})"
            kind, ctx = type_error(attr, value)
            errors.append(FieldError(path, message, type=kind, ctx=ctx))
            return _MISSING
        problem = constraint_error(attr, value, required=info.required)
        if problem is not None:
            kind, message, ctx = problem
            errors.append(FieldError(path, message, type=kind, ctx=ctx))
            return _MISSING
        value = _at_scale(attr, value)
    return _validated(attr, value, path, errors)


def _validated(attr: Any, value: Any, path: str, errors: list[FieldError]) -> Any:
    try:
        return _pony.validate_attribute(attr, value)
    except (ValueError, TypeError) as exc:
        errors.append(FieldError(path, _pony_message(attr, exc)))
        return _MISSING


def _relation(
    node: _Node, attr: Any, value: Any, path: str, ctx: _Context, sub: tuple[Tree, Tree | None]
) -> None:
    """Put a relation's value into ``node``: existing objects by reference, new ones as child nodes."""
    info = _pony.attr_info(attr)
    target = info.py_type
    if info.is_collection:
        if not isinstance(value, list):
            ctx.errors.append(
                FieldError(
                    path,
                    f"expected an array of {target.__name__} keys or objects, got {describe(value)}",
                    type="list_type",
                )
            )
            return
        refs = []
        for i, item in enumerate(value):
            item_path = _join(path, i)
            if isinstance(item, Mapping) and not _is_reference(target, item):
                child = _collect(
                    target, item, ctx, item_path, sub, reverse=info.reverse_attr, parent=node.existing
                )
                if child is not None:
                    node.after.append((attr, child))
            else:
                refs.append(_reference(attr, item, item_path, ctx.errors))
        if all(r is not _MISSING for r in refs):
            node.collections[info.name] = refs
        return
    if isinstance(value, Mapping) and not _is_reference(target, value):
        child = _collect(target, value, ctx, path, sub, reverse=info.reverse_attr, parent=node.existing)
        if child is None:
            return
        back = info.reverse
        if back is not None and back.required and not back.is_collection:
            node.after.append((attr, child))  # it cannot exist without this object: created after it
        else:
            node.before.append((info.name, child))
        return
    if value is not None:
        value = _reference(attr, value, path, ctx.errors)
        if value is _MISSING:
            return
    value = _validated(attr, value, path, ctx.errors)
    if value is not _MISSING and run_field(node.entity, node.existing, info.name, value, path, ctx.errors):
        node.values[info.name] = value


def _collect(
    entity: Any,
    data: Any,
    ctx: _Context,
    path: str,
    rules: tuple[Tree, Tree | None],
    *,
    reverse: Any = None,
    parent: Any = None,
    existing: Any = None,
) -> _Node | None:
    """Validate ``data`` for one object (and its nested ones); None when nothing of it could be used.

    ``reverse`` is the attribute of a nested object pointing at its parent: it is set automatically, so
    the input leaves it out (or names ``parent`` itself, when the parent already exists).
    """
    errors = ctx.errors
    if not isinstance(data, Mapping):
        errors.append(FieldError(path, f"expected an object, got {describe(data)}", type="model_type"))
        return None
    allow, fields = rules
    node = _Node(entity, path, existing=existing)
    for key, value in data.items():
        if not isinstance(key, str):
            errors.append(FieldError(_join(path, str(key)), "keys must be attribute names (strings)"))
            continue
        here = _join(path, key)
        attr = _pony.find_attribute(entity, key)
        if attr is None:
            message = f"unknown attribute: {entity.__name__} has no attribute {key!r}"
            errors.append(FieldError(here, message, type="extra_forbidden"))
            continue
        if reverse is not None and attr is reverse:
            back = _pony.attr_info(reverse)
            owner = back.py_type.__name__
            if parent is None or back.is_collection:
                new = "new " if parent is None else ""
                message = f"set automatically to the {new}{owner} it is nested in; leave it out"
                errors.append(FieldError(here, message, type="extra_forbidden"))
            elif _reference(reverse, value, here, errors) not in (parent, _MISSING):
                errors.append(FieldError(here, f"must be the {owner} it is nested in, or be left out"))
            continue
        if fields is not None and key not in fields:
            listed = sorted(fields)
            hint = f"this input may set only {listed}" if listed else "this input may set no attribute here"
            errors.append(FieldError(here, f"{key!r} is not in fields= ({hint})", type="extra_forbidden"))
            continue
        reason = _protection(attr)
        if reason is not None and key not in allow:
            dotted = here.split(".")
            name = ".".join(p for p in dotted if not p.isdigit())
            errors.append(
                FieldError(
                    here,
                    f"{key!r} is {reason} of {entity.__name__} and cannot be set from input; "
                    f"pass allow=[{name!r}] to permit it",
                    type="extra_forbidden",
                )
            )
            continue
        if _pony.attr_info(attr).is_relation:
            sub = (allow.get(key, {}), None if fields is None else fields[key])
            _relation(node, attr, value, here, ctx, sub)
        else:
            converted = _scalar(attr, value, here, errors)
            if converted is not _MISSING and run_field(entity, existing, key, converted, here, errors):
                node.values[key] = converted
    if existing is None:
        for info in _pony.attr_infos(entity):
            if info.name in data or info.attr is reverse or not info.required or info.is_collection:
                continue
            if info.discriminator or info.default is not None or info.auto or info.volatile:
                continue
            if info.sql_default:
                continue
            hint = f"; pass it and allow=[{info.name!r}]" if _protection(info.attr) else ""
            message = f"missing required attribute{hint}"
            errors.append(FieldError(_join(path, info.name), message, type="missing"))
    return node


def _build(node: _Node, obj: Any, reverse: Any, parent: Any, created: list[Any]) -> Any:
    """Create (or, with ``obj``, update) the object of ``node`` and its nested new objects."""
    values = dict(node.values)
    for name, child in node.before:
        values[name] = _build(child, None, None, None, created)
    if reverse is not None:
        back = _pony.attr_info(reverse)
        values[back.name] = [parent] if back.is_collection else parent
    try:
        if obj is None:
            obj = node.entity(**values)
            created.append(obj)
        elif values:
            node.old.update((name, getattr(obj, name)) for name in values)
            obj.set(**values)
    except _pony.input_errors() as exc:  # what only Pony checks: a unique value already in the session
        raise ValidationError(
            f"invalid input for {node.entity.__name__}", [FieldError(node.path, str(exc))]
        ) from exc
    new: dict[str, list[Any]] = {}
    for attr, child in node.after:
        info = _pony.attr_info(attr)
        made = _build(child, None, info.reverse_attr, obj, created)
        if info.is_collection:
            new.setdefault(info.name, []).append(made)
    for name in {*node.collections, *new}:
        # the array is the collection's new content: existing objects named in it and the new ones
        content = [*node.collections.get(name, ()), *new.get(name, ())]
        try:
            if node.existing is not None:
                node.old.setdefault(name, list(getattr(obj, name)))
            obj.set(**{name: content})
        except _pony.input_errors() as exc:
            path = _join(node.path, name)
            raise ValidationError(
                f"invalid input for {node.entity.__name__}", [FieldError(path, str(exc))]
            ) from exc
    node.built = obj
    return obj


def _clean_all(node: _Node, errors: list[FieldError]) -> None:
    """``clean()`` of every object built from the tree, children first (a parent's check may read them)."""
    for _, child in node.before:
        _clean_all(child, errors)
    for _, child in node.after:
        _clean_all(child, errors)
    run_clean(node.built, node.path, errors)


def _path_key(error: FieldError) -> list[tuple[int, int | str]]:
    # "lines.10" after "lines.9": numbers compare as numbers
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"\.", error.path)]


def _run(entity: Any, obj: Any, data: Any, allow: Any, fields: Any) -> Any:
    allow_tree = _tree(allow)
    fields_tree = None if fields is None else _tree(fields)
    if fields_tree is not None:
        _check_fields(entity, fields_tree, entity.__name__)
    if not isinstance(data, Mapping):
        raise ValidationError(
            f"invalid input for {entity.__name__}: expected an object (a mapping), got {describe(data)}",
            [FieldError("", f"expected an object, got {describe(data)}", type="model_type")],
        )
    ctx = _Context([], allow_tree, fields_tree)
    node = _collect(entity, data, ctx, "", (allow_tree, fields_tree), existing=obj)
    if ctx.errors or node is None:
        raise ValidationError(f"invalid input for {entity.__name__}", sorted(ctx.errors, key=_path_key))
    created: list[Any] = []
    try:
        built = _build(node, obj, None, None, created)
        errors: list[FieldError] = []
        _clean_all(node, errors)
        if errors:
            raise ValidationError(f"invalid input for {entity.__name__}", sorted(errors, key=_path_key))
        return built
    except BaseException:
        # nothing half-built stays in the session: children first, so no cascade reaches other objects
        for made in reversed(created):
            if _pony.is_entity_instance(made) and made in _pony.session_objects(_pony.database_of(entity)):
                made.delete()
        if node.old:  # update_from: the object gets back what it held
            node.existing.set(**node.old)
        raise


def from_dict(
    entity: Any,
    data: Any,
    *,
    allow: Iterable[str] | str | None = None,
    fields: Iterable[str] | str | None = None,
) -> Any:
    """Create an instance of ``entity`` (and the new objects nested in it) from JSON-like ``data``;
    every problem of the whole tree is reported at once."""
    return _run(entity, None, data, allow, fields)


def update_from(
    obj: Any,
    data: Any,
    *,
    allow: Iterable[str] | str | None = None,
    fields: Iterable[str] | str | None = None,
) -> Any:
    """Set the attributes named in ``data`` on ``obj`` after validating all of them; returns ``obj``."""
    return _run(type(obj), obj, data, allow, fields)
