"""Serialization: JSON-safe ``to_dict``, ``to_json`` bytes, validated ``from_dict``, and JSON Schema.

Put :class:`Serializable` on an entity::

    class User(db.Entity, pk.Serializable):
        name = Required(str)
        posts = Set("Post")

    user.to_dict(only=["name", "posts"])              # Pony's vocabulary, JSON-safe values
    user.to_json(related={"posts": {"only": ["title"]}})   # bytes, through orjson
    User.from_dict({"name": "Ann"})                   # validated; every problem listed at once
    pk.to_json(select(u for u in User))               # straight from the rows when it can

The options, everywhere: ``only``, ``exclude``, ``with_collections``, ``with_lazy`` (as in Pony's
``Entity.to_dict``; ``only`` overrides the two flags), ``related`` (relations to nest, with their own
options, e.g. ``{"posts": {"only": ["title"], "related": {"comments": {}}}}`` or ``["posts.comments"]``),
``depth`` (nest every selected relation that many levels), ``include_sensitive``. Without nesting a
to-one relation is its primary key and a collection the sorted list of keys (composite keys are lists).
The value rules are in the table of ``docs/serialization.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson

from .. import _pony
from ..errors import OptionError
from ..security.sensitive import is_sensitive, mask
from ._entity import dumps_one, serialize
from ._fast import eligible, rows_to_dicts
from ._input import from_dict as _from_dict
from ._input import update_from as _update_from
from ._jsonschema import document_schema
from ._plan import CALL_PLANS, compile_method, plan_for, remember
from ._validators import check_names as check_validator_names
from ._validators import install as install_validators
from ._validators import validates

__all__ = ["Serializable", "from_dict", "json_schema", "pydantic_model", "to_dict", "to_json", "validates"]

Names = Iterable[str] | str | None


_NO_OPTIONS: dict[str, Any] = {}


def _no_options(
    only: Names,
    exclude: Names,
    with_collections: bool,
    with_lazy: bool,
    related: Any,
    depth: int | None,
    include_sensitive: bool,
) -> bool:
    """True when a call asks for the default output: the case the generated per-class methods serve.

    (The generated methods test the same thing in their own first line, see ``compile_method``.)
    """
    return (
        only is None
        and exclude is None
        and related is None
        and depth is None
        and not (with_collections or with_lazy or include_sensitive)
    )


def _options(
    only: Names,
    exclude: Names,
    with_collections: bool,
    with_lazy: bool,
    related: Any,
    depth: int | None,
    include_sensitive: bool,
) -> dict[str, Any]:
    if _no_options(only, exclude, with_collections, with_lazy, related, depth, include_sensitive):
        return _NO_OPTIONS
    options: dict[str, Any] = {}
    if only is not None:
        options["only"] = only if isinstance(only, str) else tuple(only)
    if exclude is not None:
        options["exclude"] = exclude if isinstance(exclude, str) else tuple(exclude)
    if with_collections:
        options["with_collections"] = True
    if with_lazy:
        options["with_lazy"] = True
    if related is not None:
        options["related"] = related
    if depth is not None:
        options["depth"] = depth
    if include_sensitive:
        options["include_sensitive"] = True
    return options


_CALL_PLANS_MAX = 256  # per entity class: calls with ever new option values must not grow it forever


def _call_plan(
    entity: Any,
    only: Names,
    exclude: Names,
    with_collections: bool,
    with_lazy: bool,
    related: Any,
    depth: int | None,
    include_sensitive: bool,
) -> Any:
    """``plan_for(entity, options)`` for the options of one method call, cached on the entity class by
    the arguments themselves: normalizing and freezing the options costs several times the
    serialization of a small object. ``related=`` (a mapping) takes the general lookup.
    """
    key: tuple[Any, ...] | None = None
    cache: dict[tuple[Any, ...], Any] | None = None
    if related is None:
        if only is not None and not isinstance(only, str):
            only = tuple(only)  # the key and the plan see the same names in the same order
        if exclude is not None and not isinstance(exclude, str):
            exclude = tuple(exclude)
        key = (only, exclude, bool(with_collections), bool(with_lazy), depth, bool(include_sensitive))
        cache = entity.__dict__.get(CALL_PLANS)
        if cache is None:
            cache = {}
            setattr(entity, CALL_PLANS, cache)
            remember(entity)
        try:
            return cache[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable value: the general lookup reports what is wrong with it
            key = None
    options = _options(only, exclude, with_collections, with_lazy, related, depth, include_sensitive)
    plan = plan_for(entity, options)
    if key is not None and cache is not None and len(cache) < _CALL_PLANS_MAX:
        cache[key] = plan
    return plan


def _one(obj: Any, options: dict[str, Any], *, for_json: bool = False) -> dict[str, Any]:
    _pony.flush_if_dirty(obj)
    return serialize(obj, plan_for(type(obj), options), for_json=for_json)


def _many(objects: Iterable[Any], options: dict[str, Any], *, for_json: bool = False) -> list[dict[str, Any]]:
    result = []
    plans: dict[type, Any] = {}
    flushed = False
    for obj in objects:
        if not flushed:
            _pony.flush_if_dirty(obj)
            flushed = True
        cls = type(obj)
        plan = plans.get(cls)
        if plan is None:
            plan = plans[cls] = plan_for(cls, options)
        result.append(serialize(obj, plan, for_json=for_json))
    return result


def to_dict(
    query_or_objects: Any,
    only: Names = None,
    exclude: Names = None,
    with_collections: bool = False,
    with_lazy: bool = False,
    *,
    related: Any = None,
    depth: int | None = None,
    include_sensitive: bool = False,
) -> Any:
    """The JSON-safe form of an entity instance (a dict) or of a query or iterable of them (a list).

    Works for any entity, with or without the :class:`Serializable` mixin. The session is flushed first
    when it holds unsaved changes, as Pony's ``to_dict`` does, so new objects have their keys.
    """
    options = _options(only, exclude, with_collections, with_lazy, related, depth, include_sensitive)
    if _pony.is_entity_instance(query_or_objects):
        return _one(query_or_objects, options)
    return _many(query_or_objects, options)


def to_json(
    query_or_objects: Any,
    only: Names = None,
    exclude: Names = None,
    with_collections: bool = False,
    with_lazy: bool = False,
    *,
    related: Any = None,
    depth: int | None = None,
    include_sensitive: bool = False,
    fast: bool | None = None,
) -> bytes:
    """JSON bytes (orjson) of an entity instance, a Pony query, or an iterable of instances.

    For a query whose requested fields are all columns of its entity (values, and to-one relations as
    keys), one SELECT runs and rows go to JSON without building entity objects; otherwise the entity
    path runs. Both give the same bytes. ``fast=False`` forces the entity path; ``fast=True`` raises
    ``ValueError`` when the fast path cannot serve the request.
    """
    options = _options(only, exclude, with_collections, with_lazy, related, depth, include_sensitive)
    if _pony.is_entity_instance(query_or_objects):
        return dumps_one(_one(query_or_objects, options, for_json=True))
    query, entity, limit, offset = _pony.query_parts(query_or_objects)
    if query is not None and entity is not None and fast is not False:
        plan = plan_for(entity, options)
        if eligible(plan, entity):
            return orjson.dumps(rows_to_dicts(query, plan, limit, offset))
        if fast:
            raise OptionError(
                f"to_json(fast=True): the query fast path cannot serve this request for {entity.__name__} "
                "(collections, nesting or entity subclasses need entity objects); drop fast=True"
            )
    elif fast:
        raise OptionError(
            f"to_json(fast=True) needs a Pony query that selects entity instances, got "
            f"{type(query_or_objects).__name__}; pass the query itself (select(...), Entity.select()) "
            "or drop fast=True"
        )
    return orjson.dumps(_many(query_or_objects, options, for_json=True))


def json_schema(
    entity: Any,
    only: Names = None,
    exclude: Names = None,
    with_collections: bool = False,
    with_lazy: bool = False,
    *,
    related: Any = None,
    depth: int | None = None,
    include_sensitive: bool = False,
    many: bool = False,
) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``to_dict``/``to_json`` output for ``entity`` with these options.

    ``many=True`` describes the array that ``to_json(query)`` produces.
    """
    options = _options(only, exclude, with_collections, with_lazy, related, depth, include_sensitive)
    return document_schema(plan_for(entity, options), many=many)


def from_dict(entity: Any, data: Any, *, allow: Names = None, fields: Names = None) -> Any:
    """Create an ``entity`` instance from JSON-like data, validated by Pony's own rules.

    Raises :class:`ponykit.ValidationError` listing every problem (unknown keys, wrong types, missing
    required attributes, values out of range or too long, Decimals the column cannot hold, missing
    related objects) by field path, for the whole tree: relations also take entity objects, and objects
    without a primary key are new related objects created with it (``{"lines": [{"qty": 2}]}``, path
    ``lines.0.qty``); nothing is created when a problem is reported. The primary key, ``hidden=True``,
    sensitive and discriminator attributes are refused unless named in ``allow``; with ``fields`` only
    the attributes named there may be set. Both take dotted paths for nested objects (``"lines.qty"``).
    """
    return _from_dict(entity, data, allow=allow, fields=fields)


def pydantic_model(
    entity: Any,
    mode: str = "read",
    *,
    only: Names = None,
    exclude: Names = None,
    related: Any = None,
) -> Any:
    """A Pydantic v2 model of ``entity`` built from its Pony attributes (``pip install ponykit[pydantic]``).

    ``mode="read"`` describes ``to_dict`` output with the same options (sensitive attributes left out;
    ``model_validate(obj)`` takes a Pony object, ``model_dump(mode="json")`` equals ``obj.to_dict()``
    and ``model_json_schema(mode="serialization")`` equals :func:`json_schema`); ``"create"`` is the
    input of ``from_dict`` (no auto primary key, no volatile or database-default-only attribute, the
    same constraints and error types); ``"update"`` the input of ``update_from`` (every field optional).
    Models are cached per entity and options. See docs/serialization.md, "Pydantic models".
    """
    from ._pydantic import pydantic_model as build

    return build(entity, mode, only=only, exclude=exclude, related=related)


_INSTALLED = ("to_dict", "to_json", "__repr__")


class Serializable:
    """Mixin for Pony entities: ``class User(db.Entity, pk.Serializable)``.

    Gives JSON-safe :meth:`to_dict` (replacing Pony's for this entity; the first four parameters keep
    Pony's names and order), :meth:`to_json`, :meth:`from_dict`, :meth:`update_from` and
    :meth:`json_schema`. Pony's ``Entity`` comes first in the bases and defines ``to_dict``/``to_json``
    itself, so the mixin puts its versions on each entity class as it is declared.
    """

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        entity = _pony.entity_base()
        if not issubclass(cls, entity):
            return
        for name in _INSTALLED:
            owner = next(k for k in cls.__mro__ if name in k.__dict__)
            if owner is entity:  # Pony's own version would win over the mixin: put ours on the class
                setattr(cls, name, Serializable.__dict__[name])
        # @validates methods and clean(): checked at flush too, by a save hook on this class
        check_validator_names(cls)
        install_validators(cls)

    def to_dict(
        self,
        only: Names = None,
        exclude: Names = None,
        with_collections: bool = False,
        with_lazy: bool = False,
        *,
        related: Any = None,
        depth: int | None = None,
        include_sensitive: bool = False,
    ) -> dict[str, Any]:
        """This object as a dict of JSON-safe values; see the module documentation for the options."""
        return _call(  # type: ignore[no-any-return]
            self, "to_dict", only, exclude, with_collections, with_lazy, related, depth, include_sensitive
        )

    def to_json(
        self,
        only: Names = None,
        exclude: Names = None,
        with_collections: bool = False,
        with_lazy: bool = False,
        *,
        related: Any = None,
        depth: int | None = None,
        include_sensitive: bool = False,
    ) -> bytes:
        """This object as JSON bytes (orjson), the same content as :meth:`to_dict`."""
        return _call(  # type: ignore[no-any-return]
            self, "to_json", only, exclude, with_collections, with_lazy, related, depth, include_sensitive
        )

    @classmethod
    def from_dict(cls, data: Any, *, allow: Names = None, fields: Names = None) -> Any:
        """A new instance from JSON-like data; see :func:`ponykit.serialization.from_dict`."""
        return _from_dict(cls, data, allow=allow, fields=fields)

    def update_from(self, data: Any, *, allow: Names = None, fields: Names = None) -> Any:
        """Validate every key of ``data`` first, then set them on this object; returns the object.

        Same rules as :meth:`from_dict`, except that missing attributes are simply left unchanged. An
        array given for a collection is its new content (existing objects and new nested ones).
        """
        return _update_from(self, data, allow=allow, fields=fields)

    @classmethod
    def json_schema(
        cls,
        only: Names = None,
        exclude: Names = None,
        with_collections: bool = False,
        with_lazy: bool = False,
        *,
        related: Any = None,
        depth: int | None = None,
        include_sensitive: bool = False,
        many: bool = False,
    ) -> dict[str, Any]:
        """The JSON Schema of this entity's serialized form; see :func:`ponykit.serialization.json_schema`."""
        return json_schema(
            cls,
            only,
            exclude,
            with_collections,
            with_lazy,
            related=related,
            depth=depth,
            include_sensitive=include_sensitive,
            many=many,
        )

    def __repr__(self) -> str:
        text = _pony.pony_repr(self)
        pk_attrs = _pony.entity_pk_attributes(type(self))
        if any(is_sensitive(a) for a in pk_attrs):
            return f"{type(self).__name__}[{mask(self)}]"
        return text


def _general(for_json: bool) -> Callable[..., Any]:
    """The general path of ``to_json`` (``for_json``) or ``to_dict`` for one object: any options.

    One body for both methods; the generated per-class methods fall back to it (for options, and for
    attributes not loaded yet), so it never goes back to them.
    """

    def general(
        obj: Any,
        only: Names = None,
        exclude: Names = None,
        with_collections: bool = False,
        with_lazy: bool = False,
        *,
        related: Any = None,
        depth: int | None = None,
        include_sensitive: bool = False,
    ) -> Any:
        plan = _call_plan(
            type(obj), only, exclude, with_collections, with_lazy, related, depth, include_sensitive
        )
        _pony.flush_if_dirty(obj)
        if for_json:
            return dumps_one(serialize(obj, plan, for_json=True))
        return serialize(obj, plan)

    general.__name__ = general.__qualname__ = "_general_to_json" if for_json else "_general_to_dict"
    return general


# The mixin's own methods, and the general path each generated method falls back to.
_GENERIC = {name: Serializable.__dict__[name] for name in ("to_dict", "to_json")}
_GENERAL = {"to_dict": _general(for_json=False), "to_json": _general(for_json=True)}


def _call(
    obj: Any,
    name: str,
    only: Names,
    exclude: Names,
    with_collections: bool,
    with_lazy: bool,
    related: Any,
    depth: int | None,
    include_sensitive: bool,
) -> Any:
    """``obj.to_dict(...)`` or ``obj.to_json(...)`` (``name``) of the mixin: the class's generated method
    for the default options when it has one (installed on the first call), else the general path."""
    if _no_options(only, exclude, with_collections, with_lazy, related, depth, include_sensitive):
        method = _default_method(type(obj), name)
        if method is not None:
            return method(obj)
    return _GENERAL[name](
        obj,
        only,
        exclude,
        with_collections,
        with_lazy,
        related=related,
        depth=depth,
        include_sensitive=include_sensitive,
    )


def _default_method(cls: Any, name: str) -> Any:
    """``cls``'s generated ``to_dict``/``to_json`` for the default options, put on the class the first time.

    Per-object serialization without options is the hot case: the generated method does it in one
    function (see ``compile_method``), and being the class attribute it is what ``obj.to_json()`` finds
    from then on. None when the class has a method of its own there (a user's override is never
    replaced) or its default plan is not flat.
    """
    current = getattr(cls, name, None)
    owner = getattr(current, "__ponykit_entity__", None)
    if owner is cls:
        return current
    if owner is None and current is not _GENERIC[name]:
        return None
    plan = plan_for(cls, _NO_OPTIONS)
    if plan.json_fn is None:
        return None
    method = compile_method(
        cls, plan, for_json=name == "to_json", other_class=_GENERIC[name], general=_GENERAL[name]
    )
    if method is not None:
        setattr(cls, name, method)
        remember(cls)
    return method
