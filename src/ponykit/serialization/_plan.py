"""Serialization plans: which attributes of an entity go out, in which form, and how deep.

A plan is built once per entity and set of options (and cached), then applied to every object. The
selection follows Pony's ``Entity.to_dict``: ``only`` names exactly the attributes wanted (collections
and lazy ones included) and overrides ``with_collections``/``with_lazy``; without it every attribute
goes out except collections (unless ``with_collections``) and lazy ones (unless ``with_lazy``);
``exclude`` removes names from either. On top of that, sensitive attributes are left out unless named
in ``only`` or ``include_sensitive=True``, and relations named in ``related`` (or within ``depth``) are
nested objects instead of primary keys.
"""

from __future__ import annotations

import datetime
import inspect
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from .. import _pony
from .._codegen import build_function
from ..errors import SerializationOptionError
from ..security.sensitive import is_sensitive, on_change
from ._codec import Dump, identity, inline_expression, value_dumper

__all__ = ()

VALUE, REF, REFS, NESTED, NESTED_MANY = range(5)
# What a generated flat function raises to hand an object to the general path: KeyError for a value
# not loaded yet, IndexError from the inlined Decimal shortcut (see decimal_expression).
FALLBACK = (KeyError, IndexError)
_OPTION_NAMES = frozenset(
    ("only", "exclude", "related", "depth", "with_collections", "with_lazy", "include_sensitive")
)


@dataclass(frozen=True)
class Field:
    """One key of the output: the attribute, its form, and the plan of nested objects."""

    name: str
    attr: Any
    kind: int
    dump: Dump  # VALUE: value -> JSON; REF/REFS/NESTED*: related object -> its key in JSON form
    nullable: bool
    sub: Plan | None = None


@dataclass(frozen=True)
class Plan:
    """The fields of one entity's serialized form.

    ``flat_fn``, for plans of values and to-one keys only, builds the output straight from an object's
    loaded values (raising one of FALLBACK when the general path must do it).
    """

    entity: Any
    fields: tuple[Field, ...]
    flat_fn: Callable[[dict[Any, Any]], dict[str, Any]] | None = None
    json_fn: Callable[[dict[Any, Any]], dict[str, Any]] | None = None  # same, for orjson (native dates)
    # Pony's read bits of the fields, per class of serialized object (see _pony.read_bits)
    bits: dict[Any, int] = field(default_factory=dict, compare=False, repr=False)
    # The query fast path's generated row functions, by the positions of the fields' columns in a row.
    row_fns: dict[Any, Callable[[tuple[Any, ...]], dict[str, Any]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def read_bits(self, cls: Any) -> int:
        """The read bits of this plan's fields on instances of ``cls`` (computed once per class)."""
        bits = self.bits.get(cls)
        if bits is None:
            bits = self.bits[cls] = _pony.read_bits(cls, [f.attr for f in self.fields])
        return bits

    @property
    def flat(self) -> bool:
        """True when every field is a column value or a to-one key (the query fast path applies)."""
        return all(f.kind in (VALUE, REF) for f in self.fields)


def _bad(where: str, message: str) -> SerializationOptionError:
    """The error for a wrong option of the plan of ``where`` (``Book`` or ``Author.books`` when nested)."""
    return SerializationOptionError(f"serialization options for {where}: {message}")


def _names(value: Any, option: str, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(value.replace(",", " ").split())
    if isinstance(value, Iterable):
        names = tuple(value)
        if all(isinstance(n, str) for n in names):
            return names
    raise _bad(where, f"{option}= expects attribute names (a list of strings or 'a, b'); got {value!r}")


def _related(value: Any, where: str) -> dict[str, dict[str, Any]]:
    """Normalize ``related=`` into ``{name: options}``; dotted names nest (``"posts.comments"``)."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = [value]
    result: dict[str, dict[str, Any]] = {}
    if isinstance(value, Mapping):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, Iterable):
        items = ((name, {}) for name in value)
    else:
        raise _bad(where, f"related= expects a mapping of relation names to options, or names; got {value!r}")
    for name, spec in items:
        if not isinstance(name, str):
            raise _bad(where, f"related= keys must be relation names (strings); got {name!r}")
        if spec is None or spec is True:
            spec = {}
        if not isinstance(spec, Mapping):
            raise _bad(where, f"related[{name!r}] must be a mapping of options (only, exclude, related...)")
        head, _, rest = name.partition(".")
        target = result.setdefault(head, {})
        if rest:
            inner = dict(target.get("related") or {})
            inner[rest] = dict(spec)
            target["related"] = inner
        else:
            unknown = set(spec) - _OPTION_NAMES
            if unknown:
                raise _bad(
                    where,
                    f"related[{name!r}] has unknown options {sorted(unknown)}; "
                    f"known: {sorted(_OPTION_NAMES)}",
                )
            target.update(spec)
    return result


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(_freeze(v) for v in value)
    return value


_plans: weakref.WeakKeyDictionary[Any, dict[Any, Plan]] = weakref.WeakKeyDictionary()
_plans_lock = threading.Lock()
DEFAULT_PLAN = "_ponykit_default_plan_"
CALL_PLANS = "_ponykit_call_plans_"  # serialization's per-class cache of plans by call arguments
# Entity classes holding a DEFAULT_PLAN, CALL_PLANS or generated methods, for forget_plans.
_holders: weakref.WeakSet[Any] = weakref.WeakSet()


def remember(entity: Any) -> None:
    """Note that ``entity`` now holds cached plans or generated methods (see :func:`forget_plans`)."""
    _holders.add(entity)


def forget_plans() -> None:
    """Drop every cached plan and generated method; the next serialization builds them again.

    A sensitivity declaration changes what plans leave out (nested plans included), and a plan built
    before it must not go on serializing the attribute, so ``ponykit.security.sensitive`` calls this
    (registered with its ``on_change`` below).
    Declarations are rare, so everything is dropped.
    """
    with _plans_lock:
        _plans.clear()
        for entity in list(_holders):
            for name in (DEFAULT_PLAN, CALL_PLANS):
                if name in entity.__dict__:
                    delattr(entity, name)
            for name in ("to_json", "to_dict"):
                generic = getattr(entity.__dict__.get(name), "__ponykit_generic__", None)
                if generic is not None:
                    setattr(entity, name, generic)
        _holders.clear()


# Plans exist only once this module is imported, so registering here misses no declaration that matters.
on_change(forget_plans)


def plan_for(entity: Any, options: Mapping[str, Any]) -> Plan:
    """The (cached) plan of ``entity`` for these serialization options."""
    if not options:
        default = entity.__dict__.get(DEFAULT_PLAN)
        if default is not None:
            return default  # type: ignore[no-any-return]
    unknown = set(options) - _OPTION_NAMES
    if unknown:
        raise _bad(entity.__name__, f"unknown options {sorted(unknown)}; known: {sorted(_OPTION_NAMES)}")
    key = _freeze(options)
    per_entity = _plans.get(entity)
    if per_entity is not None:
        plan = per_entity.get(key)
        if plan is not None:
            return plan
    plan = _build(entity, dict(options), ())
    with _plans_lock:
        _plans.setdefault(entity, {})[key] = plan
    if not options:
        setattr(entity, DEFAULT_PLAN, plan)  # the common case skips the cache lookup
        remember(entity)
    return plan


def _select(
    entity: Any,
    only: tuple[str, ...] | None,
    exclude: tuple[str, ...],
    options: Mapping[str, Any],
    related: Mapping[str, Any],
    where: str,
) -> list[Any]:
    def attr_named(name: str, option: str) -> Any:
        try:
            return _pony.entity_attribute(entity, name)
        except AttributeError:
            known = [_pony.attr_info(a).name for a in _pony.entity_attributes(entity)]
            raise _bad(
                where,
                f"{option}= names {name!r}: Entity {entity.__name__} does not have attribute {name}; "
                f"its attributes are {known}; fix the name or leave it out",
            ) from None

    for name in exclude:
        attr_named(name, "exclude")
    for name in related:
        if not _pony.attr_info(
            attr_named(name, "related")
        ).is_relation:  # nesting a column would be silently ignored
            raise _bad(
                where,
                f"related= names {name!r}, a column of {entity.__name__}, not a relation; "
                "list columns in only= instead",
            )
    if only is not None:
        chosen = [attr_named(n, "only") for n in only]
        chosen += [attr_named(n, "related") for n in related if n not in only]
    else:
        with_collections = bool(options.get("with_collections"))
        with_lazy = bool(options.get("with_lazy"))
        include_sensitive = bool(options.get("include_sensitive"))
        chosen = []
        for attr in _pony.entity_attributes(entity):
            info = _pony.attr_info(attr)
            if info.name in related:
                chosen.append(attr)
            elif info.is_collection:
                if with_collections:
                    chosen.append(attr)
            elif (info.lazy and not with_lazy) or (not include_sensitive and is_sensitive(attr)):
                continue
            else:
                chosen.append(attr)
    excluded = set(exclude)
    clash = excluded & set(related)
    if clash:
        raise _bad(where, f"{sorted(clash)} named both in exclude= and related=; drop one of them")
    return [a for a in chosen if _pony.attr_info(a).name not in excluded]


def _build(entity: Any, options: dict[str, Any], path: tuple[Any, ...], where: str = "") -> Plan:
    where = where or entity.__name__
    unknown = set(options) - _OPTION_NAMES
    if unknown:
        raise _bad(where, f"unknown options {sorted(unknown)}; known: {sorted(_OPTION_NAMES)}")
    only = _names(options.get("only"), "only", where)
    exclude = _names(options.get("exclude"), "exclude", where) or ()
    related = _related(options.get("related"), where)
    depth = options.get("depth")
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 0):
        raise _bad(where, f"depth= expects a non-negative integer; got {depth!r}")
    attrs = _select(entity, only, exclude, options, related, where)
    inheritable = ("with_collections", "with_lazy", "include_sensitive")
    inherited = {k: options[k] for k in inheritable if k in options}
    fields = []
    for attr in attrs:
        info = _pony.attr_info(attr)
        if not info.is_relation:
            fields.append(Field(info.name, attr, VALUE, value_dumper(attr), _nullable(info)))
            continue
        target = info.py_type
        spec = related.get(info.name)
        if spec is None and depth:
            spec = {}
        key_dump = key_dumper(target)
        sub = None
        if spec is not None:
            if info.name not in related and depth:
                spec = {**inherited, "depth": depth - 1}
            elif "depth" not in spec and depth:
                spec = {**spec, "depth": depth - 1}
            else:
                spec = dict(spec)
            for k, v in inherited.items():
                spec.setdefault(k, v)
            if len(path) > 32:
                raise _bad(where, f"related= nests more than 32 levels deep at {entity.__name__}.{info.name}")
            sub = _build(target, spec, (*path, entity), f"{where}.{info.name} ({target.__name__})")
        if info.is_collection:
            kind = REFS if sub is None else NESTED_MANY
        else:
            kind = REF if sub is None else NESTED
        fields.append(Field(info.name, attr, kind, key_dump, _nullable(info), sub))
    return Plan(
        entity, tuple(fields), _compile(entity, fields, native=False), _compile(entity, fields, native=True)
    )


def _compile(
    entity: Any, fields: list[Field], *, native: bool
) -> Callable[[dict[Any, Any]], dict[str, Any]] | None:
    """A function from loaded values to the output dict, generated for one flat plan.

    One dict display with the attribute lookups inlined is several times faster than a loop over the
    fields, and per-object speed is the point of the entity path (attrs generates code the same way).
    With ``native`` the dict is meant for orjson, which writes naive datetimes, dates and UUIDs exactly
    as ``isoformat()``/``str()`` do, several times faster: those values are left to it.
    """
    display = _display(fields, native)
    if display is None:
        return None
    source = ["def flat(vals):", *_indent(display.statements, 1), f"    return {display.expression}"]
    label = f"serialization.{'flat_json' if native else 'flat'} {entity.__name__}"
    return build_function("flat", source, display.namespace, label=label)


@dataclass(frozen=True)
class Display:
    """The code building a flat plan's output from ``vals`` (an object's loaded values).

    ``statements`` bind the values used more than once; ``expression`` is the dict display; ``namespace``
    holds the names both use. The code raises one of FALLBACK when the general path must serialize the
    object (a value not loaded yet raises KeyError).
    """

    statements: list[str]
    expression: str
    namespace: dict[str, Any]


def _display(fields: list[Field], native: bool) -> Display | None:
    """The :class:`Display` of a flat plan's fields; None when the plan is not flat."""
    if not all(f.kind in (VALUE, REF) and f.name.isidentifier() for f in fields):
        return None
    namespace: dict[str, Any] = {"_datetime": datetime.datetime, "_date": datetime.date}
    statements = []
    items = []
    for i, f in enumerate(fields):
        namespace[f"a{i}"] = f.attr
        item, statement = _display_item(i, f, native, namespace)
        items.append(f"{f.name!r}: {item}")
        if statement is not None:
            statements.append(statement)
    return Display(statements, "{" + ", ".join(items) + "}", namespace)


def _display_item(i: int, f: Field, native: bool, namespace: dict[str, Any]) -> tuple[str, str | None]:
    """``(output value expression, statement binding v<i> or None)`` of field ``i``; fills ``namespace``."""
    if f.kind == VALUE and f.dump in _NO_OP_DUMPS:
        return f"vals[a{i}]", None
    inline = inline_expression(f.attr, f"v{i}", f"q{i}", native=native) if f.kind == VALUE else None
    if inline is not None:
        expression, constant = inline
        namespace[f"q{i}"] = constant
    else:
        namespace[f"d{i}"] = f.dump
        expression = f"d{i}(v{i})"
    return f"None if v{i} is None else {expression}", f"v{i} = vals[a{i}]"


def _indent(lines: list[str], levels: int) -> list[str]:
    return ["    " * levels + line for line in lines]


def compile_method(
    entity: Any, plan: Plan, *, for_json: bool, other_class: Callable[..., Any], general: Callable[..., Any]
) -> Callable[..., Any] | None:
    """A ``to_json`` (``for_json``) or ``to_dict`` method for the default options of ``entity``, or None.

    The method does, for instances of exactly ``entity`` called without options, what the general path
    does (flush a dirty session, read the loaded values, record the reads as Pony does, build the output,
    and for ``to_json`` call ``orjson.dumps``) in one generated function: on the per-object path the calls
    between those steps cost as much as the steps. Instances of another class go to
    ``other_class(self)``; options, deleted objects and attributes not loaded yet go to
    ``general(self, only, exclude, with_collections, with_lazy, **keyword_options)``, which checks them.
    ``plan`` must be ``entity``'s plan for the default options; None when it is not flat.

    The keyword-only options arrive as ``**options``: CPython looks up the default of every keyword-only
    parameter not passed in a dict on each call, which costs more than the empty ``options`` dict. The
    method's ``__signature__`` is ``other_class``'s, for introspection.
    """
    display = _display(list(plan.fields), for_json)
    if display is None:
        return None
    read_lines, mark_lines, read_names = _pony.output_values_source("self", "vals", "_bits")
    namespace = {
        **display.namespace,
        **read_names,
        "_entity": entity,
        "_other_class": other_class,
        "_general": general,
        "_dumps": orjson.dumps,
        "_newline": orjson.OPT_APPEND_NEWLINE,
        "_but_last": slice(None, -1),  # a constant: the display [:-1] builds a slice object per call
        "_fallback": FALLBACK,
        "_bits": plan.read_bits(entity),
    }
    name = "to_json" if for_json else "to_dict"
    source = _method_source(name, display, read_lines, mark_lines)
    method = build_function(name, source, namespace, label=f"serialization.{name} {entity.__name__}")
    method.__qualname__ = f"{entity.__name__}.{name}"
    method.__doc__ = other_class.__doc__
    method.__signature__ = inspect.signature(other_class)  # type: ignore[attr-defined]
    method.__ponykit_entity__ = entity  # type: ignore[attr-defined]
    method.__ponykit_generic__ = other_class  # type: ignore[attr-defined]
    return method


def _method_source(name: str, display: Display, read_lines: list[str], mark_lines: list[str]) -> list[str]:
    """The lines of a generated ``to_json``/``to_dict`` method (see :func:`compile_method`)."""
    result = "_dumps(out, None, _newline)[_but_last]" if name == "to_json" else "out"
    return [
        f"def {name}(self, only=None, exclude=None, with_collections=False, with_lazy=False, **options):",
        "    if only is not None or exclude is not None or with_collections or with_lazy or options:",
        "        return _general(self, only, exclude, with_collections, with_lazy, **options)",
        "    if type(self) is not _entity:",
        "        return _other_class(self)",
        *_indent(read_lines, 1),
        "    if vals is not None:",
        "        try:",
        *_indent(display.statements, 3),
        f"            out = {display.expression}",
        "        except _fallback:  # an attribute is not loaded yet: the general path loads it",
        "            pass",
        "        else:",
        *_indent(mark_lines, 3),
        f"            return {result}",
        "    return _general(self, None, None, False, False)",
    ]


def _nullable(info: _pony.AttrInfo) -> bool:
    return info.nullable or (info.is_relation and not info.required)


def key_dumper(entity: Any) -> Callable[[Any], Any]:
    """A function from an instance of ``entity`` to its primary key in JSON form (scalar or list)."""
    leaves = _pony.raw_pk_leaf_attributes(entity)
    dumps = [value_dumper(a) for a in leaves]
    raw_pk = _pony.raw_primary_key
    if len(dumps) == 1:
        only_dump = dumps[0]
        return lambda obj: only_dump(raw_pk(obj)[0])
    return lambda obj: [d(v) for d, v in zip(dumps, raw_pk(obj), strict=True)]


_NO_OP_DUMPS = (identity, bool)  # loaded values of these attributes are already JSON-safe
