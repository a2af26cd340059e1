"""Snapshot values as Python source: attribute declarations with Pony's own classes, literals, references.

A :class:`Source` collects the imports the rendered text needs, so a migration file imports exactly what
its operations use. Declarations render as the user would write them in a model:
``Optional(str, 40, unique=True)``, ``Required("Person", reverse="pets")``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import importlib
import json
import sys
import uuid
from typing import Any

__all__ = ["Source", "literal"]

# The module migration files import Pony's attribute classes from (written as text, never imported here).
_PONY_ORM = "pony.orm"
# snapshot type name -> (module to import from, or None for a builtin)
_TYPES: dict[str, str | None] = {
    "str": None,
    "int": None,
    "float": None,
    "bool": None,
    "bytes": None,
    "Decimal": "decimal",
    "datetime": "datetime",
    "date": "datetime",
    "time": "datetime",
    "timedelta": "datetime",
    "UUID": "uuid",
    "Json": _PONY_ORM,
    "LongStr": _PONY_ORM,
    "IntArray": _PONY_ORM,
    "StrArray": _PONY_ORM,
    "FloatArray": _PONY_ORM,
}


def literal(value: Any) -> str:
    """A JSON value as a Python literal (strings in double quotes, like ruff formats them)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        inner = ", ".join(literal(item) for item in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot render {value!r} ({type(value).__name__}) as a literal in a migration file")


def _tagged(value: Any) -> Any:
    """A Python value in the snapshot's tagged JSON form (the same tags as ``_pony.spec_value``)."""
    if isinstance(value, enum.Enum):
        return {"enum": f"{type(value).__module__}.{type(value).__qualname__}", "member": value.name}
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    for kind in (dt.datetime, dt.date, dt.time):
        if type(value) is kind:
            return {kind.__name__: value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    if isinstance(value, tuple):
        return list(value)
    return value


def split_dotted(dotted: str) -> tuple[str, str]:
    """(module, qualname) of an importable ``module.qualname`` (the longest importable module prefix)."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:cut])
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        return module, ".".join(parts[cut:])
    raise ValueError(f"{dotted!r} is not an importable 'module.qualname'")


class Source:
    """Collects imports while operations render."""

    def __init__(self) -> None:
        self.from_imports: dict[str, set[str]] = {}
        self.module_imports: set[str] = set()

    def name(self, module: str | None, name: str) -> str:
        """``name`` imported from ``module`` (None: a builtin)."""
        if module is not None:
            self.from_imports.setdefault(module, set()).add(name)
        return name

    def reference(self, dotted: str) -> str:
        """An importable object (a callable default, a registered type) by its full dotted name."""
        module, qualname = split_dotted(dotted)
        # `import datetime` would clash with `from datetime import datetime`: modules get an alias
        alias = "_" + module.replace(".", "_")
        self.module_imports.add(f"import {module} as {alias}" if alias != module else f"import {module}")
        return f"{alias}.{qualname}"

    def type_(self, type_name: str) -> str:
        """A snapshot ``type`` as source: ``str``, ``Decimal``, ``"Person"``, an imported class."""
        if type_name.startswith("entity:"):
            return literal(type_name[len("entity:") :])
        if type_name.startswith("py:"):
            return self.reference(type_name[len("py:") :])
        if type_name not in _TYPES:
            raise ValueError(f"unknown attribute type {type_name!r} in a snapshot")
        return self.name(_TYPES[type_name], type_name)

    def value(self, value: Any) -> str:
        """An option value as the snapshot tags it (``{"callable": "m.f"}``, ``{"decimal": "1.5"}`` ...), or
        a Python value (a backfill): written as the Python expression that gives it back."""
        value = _tagged(value)
        if isinstance(value, list):
            return "[" + ", ".join(self.value(item) for item in value) + "]"
        if not isinstance(value, dict) or len(value) not in (1, 2):
            return literal(value)
        if set(value) == {"enum", "member"}:
            return f"{self.reference(value['enum'])}.{value['member']}"
        ((kind, text),) = value.items() if len(value) == 1 else (("", ""),)
        if kind in ("callable", "type"):
            return self.reference(str(text))
        if kind == "decimal":
            return f"{self.name('decimal', 'Decimal')}({literal(text)})"
        if kind in ("datetime", "date", "time"):
            return f"{self.name('datetime', kind)}.fromisoformat({literal(text)})"
        if kind == "uuid":
            return f"{self.name('uuid', 'UUID')}({literal(text)})"
        if kind == "repr":  # a lambda default: recorded, not restorable (calling it in the file raises)
            return f"op.Unrestorable({literal(text)})"
        return "{" + ", ".join(f"{literal(k)}: {self.value(v)}" for k, v in value.items()) + "}"

    def decl(self, spec: dict[str, Any]) -> str:
        """A snapshot attr dict as a Pony declaration: ``Optional(str, 40, unique=True)``."""
        kind = self.name(_PONY_ORM, spec["kind"])
        parts = [self.type_(spec["type"])]
        parts += [self.value(arg) for arg in spec.get("args", [])]
        parts += [f"{key}={self.value(val)}" for key, val in sorted(spec.get("options", {}).items())]
        return f"{kind}({', '.join(parts)})"

    def import_blocks(self) -> list[list[str]]:
        """The import statements in three groups: standard library, the others (Pony, the application's
        types and functions), ponykit (``op`` included)."""
        groups: list[list[str]] = [[], [], []]

        def group(module: str) -> list[str]:
            top = module.split(".")[0]
            if top in sys.stdlib_module_names:
                return groups[0]
            return groups[2] if top == "ponykit" else groups[1]

        for line in sorted(self.module_imports):
            group(line.split()[1]).append(line)
        for module in sorted(self.from_imports):
            names = ", ".join(sorted(self.from_imports[module]))
            group(module).append(f"from {module} import {names}")
        groups[2].append("from ponykit.migrate import op")
        for lines in groups:
            # `import x` before `from x import y`, each sorted by module (ruff's isort order)
            lines.sort(key=lambda line: (line.startswith("from "), line.split()[1]))
        return [lines for lines in groups if lines]
