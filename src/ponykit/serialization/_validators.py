"""Field validators (``@validates("email")``) and the entity-level ``clean()`` hook.

A validator is a method of a :class:`~ponykit.Serializable` entity::

    @pk.validates("email", "backup_email")
    def check_email(self, name, value):
        if value is not None and "@" not in value:
            raise ValueError("expected an e-mail address with an @")

It is called as ``validator(obj, name, value)`` after Pony's own checks passed, and refuses the value
by raising ``ValueError`` (its message becomes the error's ``msg``) or a :class:`ValidationError`
(its errors, located under the attribute). What it returns is ignored: validators check, they do not
convert. ``obj`` is the object the value is for: the existing one in ``update_from`` and at flush,
and ``None`` while ``from_dict`` checks input for an object not created yet (the value alone decides).

``clean(self)``, defined on the entity, sees the whole object after its values are set; it raises a
``ValidationError`` or ``ValueError``, or returns a list of :class:`FieldError` (empty or None: fine).

Both run from ``from_dict``/``update_from`` (every problem of the input in one ``ValidationError``,
type ``value_error``) and when Pony flushes a new or changed object (a ``before`` save hook, installed
per entity class as it is declared), which then raises one ``ValidationError`` holding every error of
the object. A validator's message is shown as written: ponykit replaces the value of a sensitive
attribute in it by its mask, but a message should not quote the value in the first place.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .. import _pony
from ..errors import FieldError, ValidationError
from ..security.sensitive import is_sensitive, mask

__all__ = ["validates"]

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__ponykit_validates__"
# per entity class: {attribute name: [validator functions]}, and its clean() (or None); computed once
_FIELD_VALIDATORS: weakref.WeakKeyDictionary[type, dict[str, list[Callable[..., Any]]]] = (
    weakref.WeakKeyDictionary()
)
_HOOKED: weakref.WeakSet[type] = weakref.WeakSet()


def validates(*names: str) -> Callable[[F], F]:
    """Mark an entity method as the validator of the attributes ``names``; see the module docs.

    ``validator(self, name, value)`` raises ``ValueError`` (or ``ValidationError``) to refuse a value.
    """
    if not names or not all(isinstance(n, str) and n for n in names):
        from ..errors import OptionError

        raise OptionError(f"validates() takes attribute names, like validates('email'); got {names!r}")

    def mark(fn: F) -> F:
        if not callable(fn):
            from ..errors import OptionError

            raise OptionError(f"@validates{names!r} decorates a method, got {type(fn).__name__}")
        existing: tuple[str, ...] = getattr(fn, _MARK, ())
        setattr(fn, _MARK, (*existing, *names))
        return fn

    return mark


def field_validators(entity: type) -> dict[str, list[Callable[..., Any]]]:
    """``{attribute name: validators}`` of ``entity``, inherited ones included (a subclass's method of
    the same name replaces its base's, as attribute lookup does)."""
    found = _FIELD_VALIDATORS.get(entity)
    if found is None:
        found = {}
        seen: set[str] = set()
        for klass in entity.__mro__:
            for method_name, fn in vars(klass).items():
                if method_name in seen:
                    continue
                seen.add(method_name)
                target = fn.__func__ if isinstance(fn, (staticmethod, classmethod)) else fn
                for name in getattr(target, _MARK, ()):
                    found.setdefault(name, []).append(target)
        _FIELD_VALIDATORS[entity] = found
    return found


def has_clean(entity: type) -> bool:
    """True when ``entity`` (or a base) defines a ``clean()`` method."""
    return callable(getattr(entity, "clean", None))


def check_names(entity: type) -> None:
    """Every name given to ``@validates`` is an attribute of ``entity`` (a typo would check nothing)."""
    from ..errors import OptionError

    for name in field_validators(entity):
        if not hasattr(entity, name):
            raise OptionError(
                f"@validates({name!r}) on {entity.__name__}: it has no attribute {name!r}; fix the name"
            )


def _hide(attr: Any, value: Any, message: str) -> str:
    """``message`` without the value of a sensitive attribute, as ``str()`` or ``repr()`` prints it."""
    if value is not None and attr is not None and is_sensitive(attr):
        for text in (repr(value), str(value)):  # repr first: it contains str's text for a plain str
            if text and text in message:
                message = message.replace(text, mask(value))
    return message


def _object_hider(obj: Any) -> Callable[[str], str]:
    """A message -> the message without the loaded values of ``obj``'s sensitive attributes."""
    secrets = []
    for info in _pony.attr_infos(type(obj)):
        if info.kind == "value" and is_sensitive(info.attr):
            value = _pony.loaded_value_by_name(obj, info.name)
            if value is not _pony.DEFAULT and value is not None:
                secrets.append((info.attr, value))

    def hide(message: str) -> str:
        for attr, value in secrets:
            message = _hide(attr, value, message)
        return message

    return hide


def _located(
    exc: ValidationError, loc: tuple[str | int, ...], hide: Callable[[str], str]
) -> list[FieldError]:
    """A validator's ValidationError at ``loc``; its messages pass through ``hide`` (a validator may quote
    the value it refused)."""
    if not exc.errors:
        return [FieldError(loc, hide(exc.summary))]
    return [FieldError((*loc, *e.loc), hide(e.msg), type=e.type, ctx=e.ctx) for e in exc.errors]


def run_field(
    entity: type,
    obj: Any,
    name: str,
    value: Any,
    where: str | tuple[str | int, ...],
    errors: list[FieldError],
) -> bool:
    """Run the validators of ``name`` on ``value``; record their refusals at ``where`` (a loc or a dotted
    path); True if none refused."""
    validators = field_validators(entity).get(name)
    if not validators:
        return True
    loc = FieldError(where, "").loc
    attr = _pony.find_attribute(entity, name)
    ok = True
    for validator in validators:
        try:
            validator(obj, name, value)
        except ValidationError as exc:
            errors.extend(_located(exc, loc, lambda message: _hide(attr, value, message)))
            ok = False
        except ValueError as exc:
            errors.append(FieldError(loc, _hide(attr, value, str(exc)), type="value_error"))
            ok = False
    return ok


def run_clean(obj: Any, where: str | tuple[str | int, ...], errors: list[FieldError]) -> None:
    """Run ``obj.clean()``; record what it refuses at (or under) ``where`` (a loc or a dotted path)."""
    clean = getattr(obj, "clean", None)
    if not callable(clean):
        return
    loc = FieldError(where, "").loc
    hide = _object_hider(obj)  # clean() sees the whole object: any sensitive value may be quoted
    try:
        result = clean()
    except ValidationError as exc:
        errors.extend(_located(exc, loc, hide))
        return
    except ValueError as exc:
        errors.append(FieldError(loc, hide(str(exc)), type="value_error"))
        return
    if result:
        for error in _as_errors(result, type(obj)):
            errors.append(FieldError((*loc, *error.loc), hide(error.msg), type=error.type, ctx=error.ctx))


def _as_errors(result: Any, entity: type) -> Sequence[FieldError]:
    if isinstance(result, FieldError):
        return [result]
    if isinstance(result, (list, tuple)) and all(isinstance(e, FieldError) for e in result):
        return result
    from ..errors import OptionError

    raise OptionError(
        f"{entity.__name__}.clean() returned {type(result).__name__}; return None or a list of "
        "FieldError, or raise ValidationError / ValueError"
    )


def object_errors(obj: Any) -> list[FieldError]:
    """Every refusal of ``obj``'s validators and ``clean()`` for its current values."""
    entity = type(obj)
    errors: list[FieldError] = []
    for name in field_validators(entity):
        run_field(entity, obj, name, getattr(obj, name), (name,), errors)
    run_clean(obj, (), errors)
    return errors


def _before_save(obj: Any, op: str) -> None:
    if op == "delete":
        return
    errors = object_errors(obj)
    if errors:
        raise ValidationError(f"{type(obj).__name__} cannot be saved: its validators refused it", errors)


def install(entity: type) -> None:
    """Install the flush check on ``entity`` when it (or a base) has validators or ``clean()``; once per
    hierarchy: the hook on a base runs for its subclasses, with each object's own validators."""
    if not (field_validators(entity) or has_clean(entity)):
        return
    if any(klass in _HOOKED for klass in entity.__mro__):
        return
    _pony.add_save_hook(entity, "before", _before_save)
    _HOOKED.add(entity)
