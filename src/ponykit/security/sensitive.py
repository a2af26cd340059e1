"""Sensitive attributes: declared once, left out of serialized output, masked in reprs and errors.

An attribute is sensitive when

* its type says so: any ``py_type`` with a truthy class attribute ``__ponykit_sensitive__`` (ponykit's
  encrypted types set it), or
* it is declared sensitive, in one of three equivalent ways::

      class User(db.Entity, pk.Serializable):
          __sensitive__ = ("ssn",)              # 1. class-level tuple of attribute names
          ssn = Required(str)
          pin = Optional(str)

      pk.security.sensitive(User.pin)           # 2. after the class, naming attributes

      @pk.security.sensitive("ssn", "pin")      # 3. a class decorator
      class Patient(db.Entity): ...

Declarations are inherited by entity subclasses. They are stored on the entity class itself (never in a
process-wide registry), so two Databases with same-named entities never share them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar, overload

from .. import _pony
from ..errors import OptionError, SerializationOptionError

__all__ = ["SENSITIVE_ATTR", "is_sensitive", "mask", "on_change", "sensitive", "sensitive_names"]

SENSITIVE_ATTR = "__ponykit_sensitive__"
"""The class attribute a value type sets to a truthy value to make every attribute of that type sensitive."""

_DECLARED = "_ponykit_sensitive_names_"
_MASK = "***"

T = TypeVar("T")

# Called after every new declaration: what other parts of ponykit derived from the old declarations
# (serialization's cached plans) must be rebuilt. Replaced, never mutated, under the lock.
_listeners: tuple[Callable[[], None], ...] = ()
_listeners_lock = threading.Lock()


def on_change(listener: Callable[[], None]) -> Callable[[], None]:
    """Call ``listener()`` after every new sensitivity declaration; returns a function that removes it.

    For caches derived from the declarations (``ponykit.serialization`` drops its serialization plans):
    a plan built before ``sensitive(User.ssn)`` must not go on serializing ``ssn``. Adding the same
    listener twice keeps one.
    """
    global _listeners
    with _listeners_lock:
        if listener not in _listeners:
            _listeners = (*_listeners, listener)

    def remove() -> None:
        global _listeners
        with _listeners_lock:
            _listeners = tuple(x for x in _listeners if x is not listener)

    return remove


def _entity_of(attr: Any) -> Any:
    entity = _pony.attr_info(attr).entity if _pony.is_attribute(attr) else None
    if entity is None:
        raise OptionError(
            f"sensitive() expects entity attributes such as User.ssn or attribute names as strings; "
            f"got {type(attr).__name__}"
        )
    return entity


def _declare(entity: Any, names: tuple[str, ...]) -> None:
    current: frozenset[str] = entity.__dict__.get(_DECLARED, frozenset())
    known = {info.name for info in _pony.attr_infos(entity)}
    for name in names:
        if name not in known:
            raise SerializationOptionError(
                f"sensitive(): entity {entity.__name__} has no attribute {name!r}; "
                f"declare only attributes it has ({', '.join(sorted(known))})"
            )
    setattr(entity, _DECLARED, current | frozenset(names))
    # Serialization plans built before this declaration would still include these attributes.
    for listener in _listeners:
        listener()


@overload
def sensitive(*attrs: str) -> Callable[[T], T]: ...
@overload
def sensitive(*attrs: Any) -> None: ...


def sensitive(*attrs: Any) -> Callable[[T], T] | None:
    """Declare attributes sensitive.

    ``sensitive(User.ssn, User.pin)`` marks attributes of already-declared entities. With strings,
    ``@sensitive("ssn", "pin")`` returns a class decorator for an entity class. Sensitive attributes are
    left out of ``to_dict``/``to_json`` unless asked for by name or with ``include_sensitive=True``, are
    refused by ``from_dict``/``update_from`` unless allowed, and their values are masked in reprs and
    error messages.
    """
    if not attrs:
        raise OptionError("sensitive() needs at least one attribute (User.ssn) or attribute name ('ssn')")
    if all(isinstance(a, str) for a in attrs):
        names = tuple(attrs)

        def decorate(entity: T) -> T:
            _declare(entity, names)
            return entity

        return decorate
    for attr in attrs:
        entity = _entity_of(attr)
        _declare(entity, (_pony.attr_info(attr).name,))
    return None


def sensitive_names(entity: Any) -> frozenset[str]:
    """The names of the attributes declared sensitive on ``entity`` and on the entities it inherits from.

    Only declarations count here; :func:`is_sensitive` also looks at the attribute's type.
    """
    names: set[str] = set()
    for klass in getattr(entity, "__mro__", ()):
        declared = klass.__dict__.get(_DECLARED)
        if declared:
            names.update(declared)
        listed = klass.__dict__.get("__sensitive__")
        if listed:
            names.update((listed,) if isinstance(listed, str) else listed)
    return frozenset(names)


def is_sensitive(attr: Any) -> bool:
    """True if ``attr`` (an entity attribute) holds sensitive data, by declaration or by its type."""
    if not _pony.is_attribute(attr):
        return False
    info = _pony.attr_info(attr)
    if getattr(info.py_type, SENSITIVE_ATTR, False):
        return True
    return info.entity is not None and info.name in sensitive_names(info.entity)


def mask(value: object) -> str:
    """The text shown instead of a sensitive value in reprs, logs and error messages.

    Always ``'***'`` (``'None'`` for None): neither the value nor its length leaks.
    """
    return "None" if value is None else _MASK
