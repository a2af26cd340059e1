"""Validated input: ``Entity.from_dict(data)`` and ``obj.update_from(data)``.

Every value goes through the JSON rule of its attribute (``_serialize_codec``) and then through
Pony's own ``Attribute.validate`` (the converter's ``validate``, ``py_check``, min/max, max_len,
required and nullability), and every problem is collected before anything is written. Relations are
given by primary key (a scalar, a list for composite keys, or an object holding the key fields) and
must exist. The primary key, ``hidden=True`` attributes, sensitive attributes and the discriminator
are refused unless named in ``allow=``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Context, Decimal
from typing import Any

from . import _pony
from ._serialize_codec import BadValue, describe, value_loader
from .errors import FieldError, ValidationError
from .security.sensitive import is_sensitive, mask

__all__ = ()

_MISSING = object()


def _allowed(allow: Iterable[str] | str | None) -> frozenset[str]:
    if allow is None:
        return frozenset()
    if isinstance(allow, str):
        return frozenset(allow.replace(",", " ").split())
    return frozenset(allow)


def _protection(attr: Any) -> str | None:
    """Why an attribute may not be mass-assigned by default, or None."""
    if attr.pk_offset is not None:
        return "the primary key"
    if attr.is_discriminator:
        return "the discriminator"
    if getattr(attr, "hidden", False):
        return "a hidden attribute"
    if is_sensitive(attr):
        return "a sensitive attribute"
    return None


def _pony_message(attr: Any, exc: BaseException) -> str:
    if is_sensitive(attr):
        # Pony's messages may quote the value; a sensitive value never reaches an error message.
        return f"value {mask(1)} was rejected by the attribute's validation (details hidden: sensitive)"
    return str(exc)


def _reference(entity_name: str, attr: Any, value: Any, path: str, errors: list[FieldError]) -> Any:
    """The related instance named by ``value`` (a key), or _MISSING after recording the problem."""
    target = attr.py_type
    leaves = _pony.raw_pk_leaf_attributes(target)
    if isinstance(value, Mapping):
        pk_names = [a.name for a in _pony.entity_pk_attributes(target)]
        if not all(n in value for n in pk_names):
            errors.append(FieldError(path, f"expected a {target.__name__} key or an object with {pk_names}"))
            return _MISSING
        parts = [value[n] for n in pk_names]
        value = parts[0] if len(parts) == 1 else parts
    raw = list(value) if isinstance(value, list) and len(leaves) > 1 else [value]
    if len(raw) != len(leaves) or any(isinstance(v, (dict, list)) for v in raw):
        shape = "a key" if len(leaves) == 1 else f"a list of {len(leaves)} key values"
        errors.append(FieldError(path, f"expected {shape} of {target.__name__}, got {describe(value)}"))
        return _MISSING
    try:
        key = tuple(value_loader(leaf)(v) for leaf, v in zip(leaves, raw, strict=True))
    except BadValue as exc:
        errors.append(FieldError(path, f"invalid key of {target.__name__}: {exc}"))
        return _MISSING
    found = _pony.find_by_raw_pk(target, key)
    if found is None:
        shown = raw[0] if len(raw) == 1 else raw
        errors.append(FieldError(path, f"no {target.__name__} with primary key {shown!r} exists"))
        return _MISSING
    return found


def _decimal_fits(attr: Any, value: Any, path: str, errors: list[FieldError]) -> Any:
    """``value`` at the column's scale when it fits ``DECIMAL(precision, scale)``, else _MISSING.

    Too many integer digits would fail at flush (a DataError, or stored as is on SQLite); more fractional
    digits would be rounded by the server (half away from zero on PostgreSQL and MariaDB, half even by
    Pony on SQLite), so the object would not hold what is stored: both are refused, nothing is rounded.
    """
    limits = _pony.decimal_limits(attr)
    if limits is None or not isinstance(value, Decimal):
        return value
    precision, scale = limits
    shown = mask(value) if is_sensitive(attr) else repr(str(value))
    column = f"Decimal({precision}, {scale})"
    if abs(value) >= Decimal(10) ** (precision - scale):
        errors.append(
            FieldError(
                path,
                f"expected a number below 10^{precision - scale} (at most {precision - scale} digits "
                f"before the point for {attr.entity.__name__}.{attr.name}, a {column}), got {shown}",
            )
        )
        return _MISSING
    # exact: the value is below 10^(precision-scale), so its quantized coefficient fits precision + 1
    quantized = value.quantize(Decimal(1).scaleb(-scale), context=Context(prec=precision + 2))
    if quantized != value:
        errors.append(
            FieldError(
                path,
                f"expected at most {scale} digits after the point (for {attr.entity.__name__}.{attr.name}, "
                f"a {column}), got {shown}; round it before sending",
            )
        )
        return _MISSING
    # "-0" would answer "-0.00" while PostgreSQL and MariaDB store 0.00: a zero is stored unsigned
    return quantized.copy_abs() if not quantized else quantized


def _convert(entity: Any, attr: Any, value: Any, errors: list[FieldError]) -> Any:
    name = attr.name
    if attr.is_collection:
        if not isinstance(value, list):
            expected = f"expected an array of {attr.py_type.__name__} keys"
            errors.append(FieldError(name, f"{expected}, got {describe(value)}"))
            return _MISSING
        items = [_reference(entity.__name__, attr, v, f"{name}.{i}", errors) for i, v in enumerate(value)]
        return _MISSING if any(i is _MISSING for i in items) else items
    if attr.is_relation and value is not None:
        value = _reference(entity.__name__, attr, value, name, errors)
        if value is _MISSING:
            return _MISSING
    elif value is not None:
        try:
            value = value_loader(attr)(value)
        except BadValue as exc:
            message = str(exc) if not is_sensitive(attr) else f"wrong type of value ({mask(value)})"
            errors.append(FieldError(name, message))
            return _MISSING
        value = _decimal_fits(attr, value, name, errors)
        if value is _MISSING:
            return _MISSING
    try:
        return _pony.validate_attribute(attr, value)
    except (ValueError, TypeError) as exc:
        errors.append(FieldError(name, _pony_message(attr, exc)))
        return _MISSING


def _collect(entity: Any, data: Any, allow: Iterable[str] | str | None, *, creating: bool) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ValidationError(
            f"invalid input for {entity.__name__}: expected an object (a mapping), got {describe(data)}",
            [FieldError("", f"expected an object, got {describe(data)}")],
        )
    allowed = _allowed(allow)
    errors: list[FieldError] = []
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            errors.append(FieldError(str(key), "keys must be attribute names (strings)"))
            continue
        try:
            attr = _pony.entity_attribute(entity, key)
        except AttributeError:
            errors.append(FieldError(key, f"unknown attribute: {entity.__name__} has no attribute {key!r}"))
            continue
        reason = _protection(attr)
        if reason is not None and key not in allowed:
            errors.append(
                FieldError(
                    key,
                    f"{key!r} is {reason} of {entity.__name__} and cannot be set from input; "
                    f"pass allow=[{key!r}] to permit it",
                )
            )
            continue
        converted = _convert(entity, attr, value, errors)
        if converted is not _MISSING:
            kwargs[key] = converted
    if creating:
        for attr in _pony.entity_attributes(entity):
            if attr.name in data or not attr.is_required or attr.is_collection or attr.is_discriminator:
                continue
            if attr.default is not None or attr.auto or attr.is_volatile or attr.sql_default:
                continue
            hint = f"; pass it and allow=[{attr.name!r}]" if _protection(attr) else ""
            errors.append(FieldError(attr.name, f"missing required attribute{hint}"))
    if errors:
        errors.sort(key=lambda e: e.path)
        raise ValidationError(f"invalid input for {entity.__name__}", errors)
    return kwargs


def from_dict(entity: Any, data: Any, *, allow: Iterable[str] | str | None = None) -> Any:
    """Create an instance of ``entity`` from JSON-like ``data``; every problem is reported at once."""
    kwargs = _collect(entity, data, allow, creating=True)
    try:
        return entity(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"invalid input for {entity.__name__}", [FieldError("", str(exc))]) from exc


def update_from(obj: Any, data: Any, *, allow: Iterable[str] | str | None = None) -> Any:
    """Set the attributes named in ``data`` on ``obj`` after validating all of them; returns ``obj``."""
    entity = type(obj)
    kwargs = _collect(entity, data, allow, creating=False)
    try:
        obj.set(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"invalid input for {entity.__name__}", [FieldError("", str(exc))]) from exc
    return obj
