"""One problem with one input field (:class:`FieldError`), in Pydantic's error vocabulary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["FieldError"]


def _loc_of(path: str) -> tuple[str | int, ...]:
    """``"lines.2.qty"`` -> ``("lines", 2, "qty")``: digits are list indexes, as in Pydantic's ``loc``."""
    if not path:
        return ()
    return tuple(int(p) if p.isdigit() else p for p in path.split("."))


def _json_safe(value: Any) -> Any:
    """A ``ctx`` value as JSON has it: numbers and strings as they are, anything else (Decimal) as text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return str(value)


class FieldError:
    """One problem with one input field, in Pydantic's error vocabulary.

    - ``loc``: where it is, a tuple of attribute names and list indexes (``("lines", 2, "qty")``);
    - ``type``: what kind of problem, with Pydantic's name where a Pydantic constraint matches
      (``"missing"``, ``"string_too_long"``, ``"greater_than_equal"``, ``"less_than_equal"``,
      ``"int_type"``, ``"decimal_max_places"``, ``"enum"``, ``"extra_forbidden"``...), else a ponykit
      name (``"not_found"`` for a key with no row) or ``"value_error"`` (a validator's refusal);
    - ``msg``: what was expected and what was given (never a sensitive or encrypted value);
    - ``ctx``: the constraint's parameters (``{"max_length": 10}``), or None.

    ``FieldError(path, message)`` still works (``path`` a dotted string, or a ``loc`` tuple), and
    ``path`` (``"lines.2.qty"``) and ``message`` read as before. Two errors are equal when they have the
    same ``loc`` and ``msg``: ``type`` and ``ctx`` classify the same problem.
    """

    __slots__ = ("ctx", "loc", "msg", "type")

    def __init__(
        self,
        path: str | Sequence[str | int],
        message: str,
        *,
        type: str = "value_error",  # the name Pydantic gives the key
        ctx: dict[str, Any] | None = None,
    ) -> None:
        self.loc: tuple[str | int, ...] = _loc_of(path) if isinstance(path, str) else tuple(path)
        self.msg = message
        self.type = type
        self.ctx = ctx

    @property
    def path(self) -> str:
        """The dotted form of ``loc`` (``"lines.2.qty"``; ``""`` for the input as a whole)."""
        return ".".join(str(p) for p in self.loc)

    @property
    def message(self) -> str:
        """The same as ``msg`` (its name before the Pydantic-compatible keys)."""
        return self.msg

    def to_dict(self) -> dict[str, Any]:
        """``{"loc": [...], "type": ..., "msg": ..., "ctx": {...}}``, JSON-safe, the shape of one item of
        Pydantic's ``errors()`` and FastAPI's 422 ``detail`` (without ``input``: it is never echoed)."""
        item: dict[str, Any] = {"loc": list(self.loc), "type": self.type, "msg": self.msg}
        if self.ctx:
            item["ctx"] = {k: _json_safe(v) for k, v in self.ctx.items()}
        return item

    def __repr__(self) -> str:
        ctx = f", ctx={self.ctx!r}" if self.ctx else ""
        return f"FieldError({self.path!r}, {self.msg!r}, type={self.type!r}{ctx})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldError):
            return NotImplemented
        return (self.loc, self.msg) == (other.loc, other.msg)

    def __hash__(self) -> int:
        return hash((self.loc, self.msg))

    def __str__(self) -> str:
        return f"{self.path}: {self.msg}" if self.loc else self.msg


FieldError.__module__ = "ponykit.errors"  # its public home
