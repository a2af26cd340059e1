"""Option and default values of a migration snapshot as JSON, and back (the ``declared`` door's codec).

Literals stay as they are; other values are tagged by kind: ``{"enum": q, "member": n}``, ``{"decimal":
...}``, ``{"datetime" | "date" | "time": iso}``, ``{"uuid": ...}``, ``{"callable": "module.qualname"}``.
A value that cannot be named so that it imports back (a lambda, an arbitrary object) is kept as ``{"repr":
...}`` and declared again as an :class:`Unrestorable` stand-in.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import importlib
import re
import uuid
from typing import Any

__all__ = ["Unrestorable", "import_qualname", "qualified_name", "spec_value", "value_of_spec"]


def import_qualname(path: str) -> Any:
    """The object named ``module.qualname`` (the module part is the longest importable prefix)."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name)
        return target
    raise ImportError(f"cannot import {path!r}: no importable module prefix")


def qualified_name(obj: Any) -> str | None:
    """``module.qualname`` of ``obj``, or None when it cannot be imported back by that name."""
    module = getattr(obj, "__module__", None)
    owner = getattr(obj, "__self__", None)
    if module is None and isinstance(owner, type):
        # A method of a C type bound to the class (``datetime.now``, ``date.today``) has no __module__.
        module = owner.__module__
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    path = f"{module}.{qualname}"
    try:
        found = import_qualname(path)
    except (ImportError, AttributeError):
        return None
    return path if found == obj or found is obj else None


class Unrestorable:
    """A value the snapshot could only record as ``{"repr": ...}`` (a lambda default, an arbitrary object).

    Declared again it stands in for the value (so the snapshot reads back the same); calling it, as Pony
    does for a callable default or ``py_check``, raises: a historical model does not have that value.
    """

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def __call__(self, *args: Any) -> Any:
        raise RuntimeError(
            f"{self.text} is not restorable from a migration snapshot (a lambda or an arbitrary object): "
            "a historical model has no such default or check; set the value explicitly"
        )


def spec_value(value: Any) -> Any:
    """``value`` (an option or default) as JSON: literals as they are, other values tagged by their kind."""
    if isinstance(value, Unrestorable):
        return {"repr": value.text}
    if value is None or (isinstance(value, (bool, int, float, str)) and not isinstance(value, enum.Enum)):
        return value
    if isinstance(value, (list, tuple)):
        return [spec_value(item) for item in value]
    if isinstance(value, enum.Enum) and qualified_name(type(value)) is not None:
        return {"enum": qualified_name(type(value)), "member": value.name}
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    for kind in (_dt.datetime, _dt.date, _dt.time):
        if type(value) is kind:
            return {kind.__name__: value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    path = qualified_name(value) if callable(value) else None
    if path is not None:
        return {"callable": path}
    # Not restorable (a lambda, an arbitrary object): kept for comparison, dropped when declared again;
    # without its memory address, which differs in every process (the snapshot would never be in sync).
    return {"repr": re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))}


def value_of_spec(spec: Any) -> Any:
    """The Python value of a :func:`spec_value` (an :class:`Unrestorable` for a ``{"repr": ...}``)."""
    if isinstance(spec, list):
        return [value_of_spec(item) for item in spec]
    if not isinstance(spec, dict):
        return spec
    if "enum" in spec:
        return getattr(import_qualname(spec["enum"]), spec["member"])
    ((kind, text),) = spec.items()
    text = str(text)
    if kind == "decimal":
        return decimal.Decimal(text)
    if kind in ("datetime", "date", "time"):
        return getattr(_dt, kind).fromisoformat(text)
    if kind == "uuid":
        return uuid.UUID(text)
    if kind in ("callable", "type"):
        return import_qualname(text)
    return Unrestorable(text)


# -- reading -------------------------------------------------------------------------------------------
