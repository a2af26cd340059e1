"""``pydantic_model(Entity, mode)``: Pydantic v2 models built from Pony's metadata (``ponykit[pydantic]``).

Read models follow the serialization plan of ``to_dict`` with the same options, field by field: the
same names, order and nesting, sensitive attributes left out, each field's JSON Schema the one
``json_schema`` gives (``WithJsonSchema``) and each value dumped by the same JSON rule
(``PlainSerializer`` in JSON mode). ``model_validate(obj)`` on a Pony object reads it through that
plan (so a ``Set`` becomes the sorted list of keys, a relation its key, nested objects dicts), then
parses the JSON forms back into Python values (``Decimal``, ``datetime``, Enum members ...).

Create and update models describe the input of ``from_dict``/``update_from``: the same constraints
(``max_len``, non-blank ``Required`` strings, ``min``/``max`` and the int column's range, Decimal
precision and scale, Enum members; int, str, bool and float strict, as ``from_dict`` is), unknown keys
forbidden, so Pydantic reports the ``loc``/``type`` ponykit reports (see ``_problems``).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import ipaddress
import threading
import uuid
from decimal import Decimal
from typing import Annotated, Any

from .. import _pony
from ..errors import ConfigurationError, OptionError
from ..security.sensitive import on_change
from ._codec import custom_codec, nullable, value_dumper, value_schema
from ._entity import serialize
from ._jsonschema import key_schema, object_schema
from ._plan import NESTED, NESTED_MANY, REF, REFS, VALUE, Plan, plan_for
from ._problems import is_text

try:
    import pydantic
    from pydantic import BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema
except ImportError:  # pragma: no cover - the extra is not installed
    pydantic = None  # type: ignore[assignment]

__all__ = ["pydantic_model"]

MODES = ("read", "create", "update")
# Types whose JSON form Pydantic parses back to the value ponykit read: the field keeps the Python type.
_PARSED = (bool, int, float, Decimal, dt.datetime, dt.date, dt.time, dt.timedelta, uuid.UUID)
_IP = (ipaddress.IPv4Address, ipaddress.IPv6Address)

_cache: dict[tuple[Any, ...], Any] = {}
# Pydantic's typing of create_model/Field/Annotated does not fit types built at run time
_api: Any = pydantic
_Field: Any = Field if pydantic is not None else None


def _annotated(args: tuple[Any, ...]) -> Any:
    """``Annotated[args]`` for a tuple built at run time."""
    annotated: Any = Annotated
    return annotated[args]


_lock = threading.Lock()


def _forget_models() -> None:
    # A read model built before sensitive(User.pin) must not go on exposing pin: build them again.
    with _lock:
        _cache.clear()


on_change(_forget_models)


def _need_pydantic() -> None:
    if pydantic is None:
        raise ConfigurationError(
            "pydantic_model() needs Pydantic v2: pip install 'ponykit[pydantic]' (pydantic>=2.5)"
        )


def _names(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(value.replace(",", " ").split())
    return tuple(value)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _suffix(options: tuple[Any, ...]) -> str:
    """A stable suffix for models with options (plain data, the same in every process)."""
    if not any(o is not None for o in options):
        return ""
    return "_" + hashlib.sha256(repr(options).encode()).hexdigest()[:8]


def pydantic_model(
    entity: Any, mode: str = "read", *, only: Any = None, exclude: Any = None, related: Any = None
) -> Any:
    """The (cached) Pydantic model of ``entity`` in ``mode``; see ``ponykit.serialization.pydantic_model``."""
    _need_pydantic()
    if mode not in MODES:
        raise OptionError(f"pydantic_model(mode=...) takes one of {list(MODES)}, got {mode!r}")
    if not _pony.is_entity_class(entity):
        raise OptionError(f"pydantic_model() takes an entity class, got {entity!r}")
    key = (entity, mode, _freeze(_names(only)), _freeze(_names(exclude)), _freeze(related))
    with _lock:
        model = _cache.get(key)
    if model is not None:
        return model
    if mode == "read":
        options: dict[str, Any] = {}
        if only is not None:
            options["only"] = _names(only)
        if exclude is not None:
            options["exclude"] = _names(exclude)
        if related is not None:
            options["related"] = related
        plan = plan_for(entity, options)
        model = _read_model(plan, f"{entity.__name__}Read{_suffix(key[2:])}", ())
    else:
        if related is not None:
            raise OptionError(
                f"pydantic_model({entity.__name__}, {mode!r}): related= is for read models; input "
                "models take related objects by key"
            )
        name = f"{entity.__name__}{mode.capitalize()}{_suffix(key[2:])}"
        model = _input_model(entity, name, mode, _names(only), _names(exclude) or ())
    with _lock:
        return _cache.setdefault(key, model)


# ---------------------------------------------------------------------------------------------------------
# Read models


def _json_only(dump: Any) -> Any:
    return PlainSerializer(lambda v: None if v is None else dump(v), when_used="json")


def _loader(codec: Any) -> Any:
    """The codec's ``from_json`` for Pydantic: None passes, a refusal is a ``ValueError``."""

    def load(value: Any) -> Any:
        if value is None:
            return None
        try:
            return codec.from_json(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None

    return load


def _value_type(attr: Any) -> Any:
    """The Python type a read field holds: one Pydantic parses from the JSON form, else the JSON form."""
    py_type = _pony.attr_type(attr)
    if custom_codec(py_type) is not None:
        return Any
    if isinstance(py_type, type) and issubclass(py_type, enum.Enum):
        return py_type
    if py_type in _PARSED:
        return py_type
    if isinstance(py_type, type) and issubclass(py_type, str):
        return str
    if isinstance(py_type, type) and issubclass(py_type, _IP):
        return py_type
    return Any


def _read_field(f: Any, plan: Plan, ancestors: tuple[Any, ...], model_name: str) -> Any:
    info = _pony.attr_info(f.attr)
    if f.kind == VALUE:
        schema = value_schema(f.attr)
        if f.nullable and info.nullable:
            schema = nullable(schema)
        codec = custom_codec(_pony.attr_type(f.attr))
        if codec is not None:  # a ponykit type (an Enum, AwareDatetime ...): its Python value, its rule
            load, dump = BeforeValidator(_loader(codec)), _json_only(value_dumper(f.attr))
            return _annotated((Any, load, dump, WithJsonSchema(schema)))
        kind = _value_type(f.attr)
        if kind is Any:  # the JSON form itself: nothing to parse or dump
            return _annotated((Any, WithJsonSchema(schema)))
        return _annotated((kind | None, _json_only(value_dumper(f.attr)), WithJsonSchema(schema)))
    if f.kind in (REF, REFS):
        schema = key_schema(info.py_type)
        if f.kind == REFS:
            return Annotated[list[Any], WithJsonSchema({"type": "array", "items": schema})]
        if f.nullable:
            schema = nullable(schema)
        return Annotated[Any, WithJsonSchema(schema)]
    assert f.sub is not None
    sub_model = _read_model(f.sub, f"{model_name}_{f.name}", (*ancestors, plan.entity))
    schema = object_schema(f.sub, (*ancestors, plan.entity))
    item: Any = sub_model
    if info.py_type in (*ancestors, plan.entity):
        # the cycle guard may put a key where an ancestor object would repeat
        schema = {"anyOf": [schema, key_schema(info.py_type)]}
        item = sub_model | Any
    if f.kind == NESTED_MANY:
        return _annotated((list[item], WithJsonSchema({"type": "array", "items": schema})))
    assert f.kind == NESTED
    if f.nullable:
        schema = nullable(schema)
    return Annotated[item | None, WithJsonSchema(schema)]


def _read_model(plan: Plan, name: str, ancestors: tuple[Any, ...]) -> Any:
    entity = plan.entity

    def from_pony(cls: Any, data: Any) -> Any:
        # A Pony object is read as to_dict reads it, through the same plan; a dict is taken as it is.
        if _pony.is_entity_instance(data):
            _pony.flush_if_dirty(data)
            return serialize(data, plan)
        return data

    def schema_extra(schema: dict[str, Any], cls: Any) -> None:
        # Pydantic adds a title and a default to each property (each field's schema is otherwise the
        # WithJsonSchema one, ponykit's own): the properties are put back as json_schema has them
        schema["properties"] = object_schema(plan, ancestors)["properties"]
        schema["title"] = entity.__name__
        schema.pop("description", None)  # the model's docstring
        schema["additionalProperties"] = False  # as json_schema says; validation ignores extra keys

    fields = {f.name: (_read_field(f, plan, ancestors, name), ...) for f in plan.fields}
    config = ConfigDict(
        from_attributes=True,
        extra="ignore",
        json_schema_extra=schema_extra,
        json_schema_serialization_defaults_required=True,
        arbitrary_types_allowed=True,
    )
    validators = {"_ponykit_from_pony": _api.model_validator(mode="before")(classmethod(from_pony))}
    model = _api.create_model(name, __config__=config, __validators__=validators, **fields)
    model.__doc__ = f"{entity.__name__} as to_dict()/to_json() give it (ponykit.pydantic_model)."
    model.__ponykit_entity__ = entity
    return model


# ---------------------------------------------------------------------------------------------------------
# Create and update models


def input_type(attr: Any, *, required: bool) -> Any:
    """The annotated Python type of an input value of ``attr``, with the constraints ``from_dict`` checks."""
    py_type = _pony.attr_type(attr)
    codec = custom_codec(py_type)
    if isinstance(py_type, type) and issubclass(py_type, enum.Enum):
        return py_type
    if py_type is bool:
        return Annotated[bool, Field(strict=True)]
    limits = _pony.value_limits(attr)
    if py_type is float or (isinstance(py_type, type) and issubclass(py_type, int)):
        base = float if py_type is float else int
        return Annotated[base, Field(strict=True, ge=limits.min, le=limits.max)]
    if py_type is Decimal:
        digits = _pony.decimal_limits(attr)
        places = {"max_digits": digits[0], "decimal_places": digits[1]} if digits else {}
        return Annotated[Decimal, _Field(ge=limits.min, le=limits.max, allow_inf_nan=False, **places)]
    if (isinstance(py_type, type) and issubclass(py_type, str)) or is_text(attr):
        # str, LongStr, and ponykit types whose values are text with a max_len (encrypted str)
        # Pony strips a str before its Required check: whitespace alone is as empty as ""
        blank = r"\S" if required and _pony.attr_autostrip(attr) else None
        return Annotated[
            str,
            Field(
                strict=True,
                max_length=_pony.max_length(attr),
                min_length=1 if required else None,
                pattern=blank,
            ),
        ]
    if codec is not None:  # a ponykit type: its own JSON rule parses it, as in from_dict
        return _annotated((Any, BeforeValidator(_loader(codec)), WithJsonSchema(dict(codec.json_schema()))))
    if py_type in _PARSED or (isinstance(py_type, type) and issubclass(py_type, _IP)):
        return py_type
    return Annotated[Any, WithJsonSchema(value_schema(attr))]  # bytes, Json: taken in their JSON form


def _key_type(target: Any) -> Any:
    leaves = _pony.raw_pk_leaf_attributes(target)
    if len(leaves) == 1:
        return input_type(leaves[0], required=True)
    return list[Any]


def _input_model(
    entity: Any, name: str, mode: str, only: tuple[str, ...] | None, exclude: tuple[str, ...]
) -> Any:
    fields: dict[str, Any] = {}
    known = {info.name for info in _pony.attr_infos(entity)}
    for option, names in (("only", only or ()), ("exclude", exclude)):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise OptionError(
                f"pydantic_model({entity.__name__}, {mode!r}, {option}=...): no attribute {unknown}; "
                f"its attributes are {sorted(known)}"
            )
    for info in _pony.attr_infos(entity):
        if only is not None and info.name not in only:
            continue
        if info.name in exclude or info.discriminator or info.volatile:
            continue
        if only is None and (info.auto or info.hidden or (info.sql_default and info.default is None)):
            continue
        if info.is_collection:
            kind: Any = list[_key_type(info.py_type)]  # type: ignore[misc]
        elif info.is_relation:
            kind = _key_type(info.py_type)
        else:
            kind = input_type(info.attr, required=info.required)
        needed = mode == "create" and info.required and not info.is_collection and info.default is None
        if needed and not info.auto and not info.sql_default:
            fields[info.name] = (kind, ...)
        elif info.is_relation or info.nullable:
            fields[info.name] = (kind | None, None)
        else:  # Pony refuses None for it (an Optional str stores ""): it may be left out, not null
            fields[info.name] = (kind, None)
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    model = _api.create_model(name, __config__=config, **fields)
    what = "from_dict()" if mode == "create" else "update_from()"
    model.__doc__ = f"The input of {entity.__name__}.{what} (ponykit.pydantic_model)."
    model.__ponykit_entity__ = entity
    return model
