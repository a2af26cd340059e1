"""Save hooks on one entity class: what ponykit's entity mixins run when Pony flushes an object.

Pony calls ``obj._before_save_()`` before it writes an object and ``obj._after_save_(status)`` after.
:func:`add_save_hook` wraps these two methods on one entity class (never on Pony's ``Entity``), once,
and runs the hooks registered for the class and its bases, with Pony's status turned into an operation
name: ``"insert"``, ``"update"`` or ``"delete"``. The user's own ``before_insert``/``after_update`` ...
hooks keep running: a ``before`` hook runs first, then Pony's (and so the user's); an ``after`` hook
runs after them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

__all__ = ["SaveHook", "add_save_hook", "is_modified", "object_status", "stored_value"]

#: ``hook(obj, op)``: ``op`` is "insert", "update" or "delete".
SaveHook = Callable[[Any, str], None]

_BEFORE = {"created": "insert", "modified": "update", "marked_to_delete": "delete"}
_AFTER = {"inserted": "insert", "updated": "update", "deleted": "delete"}


def add_save_hook(entity: Any, when: Literal["before", "after"], hook: SaveHook) -> None:
    """Run ``hook(obj, op)`` before (or after) Pony writes an object of ``entity`` or of a subclass.

    May be called while the entity class is being declared (from ``__init_subclass__``). Hooks of one
    class run in the order they were added.
    """
    key = "_ponykit_before_hooks_" if when == "before" else "_ponykit_after_hooks_"
    own: list[SaveHook] | None = entity.__dict__.get(key)
    if own is None:
        own = []
        setattr(entity, key, own)
        if when == "before":
            _wrap_before(entity)
        else:
            _wrap_after(entity)
    own.append(hook)


def _wrap_before(entity: Any) -> None:
    original = entity.__dict__.get("_before_save_") or _inherited(entity, "_before_save_")

    def _before_save_(obj: Any) -> None:
        op = _BEFORE.get(obj._status_)
        if op is not None:
            for hook in entity.__dict__["_ponykit_before_hooks_"]:
                hook(obj, op)
        original(obj)

    entity._before_save_ = _before_save_


def _wrap_after(entity: Any) -> None:
    original = entity.__dict__.get("_after_save_") or _inherited(entity, "_after_save_")

    def _after_save_(obj: Any, status: str) -> None:
        original(obj, status)
        op = _AFTER.get(status)
        if op is not None:
            for hook in entity.__dict__["_ponykit_after_hooks_"]:
                hook(obj, op)

    entity._after_save_ = _after_save_


def _inherited(entity: Any, name: str) -> Callable[..., Any]:
    for klass in entity.__mro__[1:]:
        if name in klass.__dict__:
            method: Callable[..., Any] = klass.__dict__[name]
            return method
    raise AssertionError(f"Pony's Entity defines {name}")  # a Pony without it: a ponykit bug to fix


def object_status(obj: Any) -> str | None:
    """Pony's status of an object: "created", "loaded", "modified", "marked_to_delete", "deleted" ..."""
    status: str | None = obj._status_
    return status


def stored_value(obj: Any, name: str) -> Any:
    """The value of attribute ``name`` as last read from (or written to) the database, before the changes
    of this flush; raises KeyError when the object has not read it."""
    attr = obj._adict_[name]
    return obj._dbvals_[attr]


def is_modified(obj: Any, name: str) -> bool:
    """True if attribute ``name`` of a loaded object was assigned since it was read or last flushed (the
    attributes Pony's next UPDATE writes)."""
    attr = obj._adict_[name]
    return bool((obj._wbits_ or 0) & obj._bits_.get(attr, 0))
