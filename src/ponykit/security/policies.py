"""Policies: which rows of an entity a principal may read (or write, or any action you name), written as
Pony predicates and applied inside the SQL on every backend.

* :func:`policy` registers a predicate ``(obj, principal) -> condition`` in Pony's query language for an
  entity and some actions; several policies for one entity and action are OR-ed.
* :func:`scoped` (and ``Entity.scoped()`` through the :class:`Scoped` mixin) filters a query by them: the
  result is still a Pony query (chain ``.filter``, ``.order_by``, ``count()``, ``paginate``).
* :func:`can` decides for one object exactly as :func:`scoped` would: it asks the database whether the
  scoped query contains the object, so collations and NULLs are the database's in both.

Fail closed: ``scoped`` with no policy for the entity and action, or with no principal, raises
:class:`~ponykit.errors.PermissionDenied` before any SQL; ``can`` answers False. Python-side scoping
covers the queries it is given, nothing else: collection loads, ``Entity[pk]``, ``Entity.get()`` and raw
SQL are not filtered (PostgreSQL row-level security, :mod:`ponykit.security.rls`, is).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from .. import _pony
from ..errors import ConfigurationError, OptionError, PermissionDenied
from ._principal import current_principal

__all__ = ["Policy", "Scoped", "can", "policy", "registered_policies", "scoped"]

P = TypeVar("P", bound=Callable[..., Any])

#: ``actions="*"``: the policy applies to every action.
ALL = "*"


@dataclass(frozen=True, eq=False)
class Policy:
    """One registered policy: the entity, the actions it covers (None: all) and its predicate."""

    entity: Any
    actions: frozenset[str] | None
    predicate: _pony.Predicate

    @property
    def func(self) -> Callable[..., Any]:
        """The function given to :func:`policy`."""
        return self.predicate.func

    def covers(self, action: str) -> bool:
        """True if this policy applies to ``action``."""
        return self.actions is None or action in self.actions


_lock = threading.Lock()
# Keyed by entity class (weakly, so test Databases and their entities can go): policies belong to one
# entity of one Database, nothing is shared between Databases.
_registry: weakref.WeakKeyDictionary[Any, tuple[Policy, ...]] = weakref.WeakKeyDictionary()
# (entity, action) -> the OR of its policies, built once; emptied whenever a policy is registered, and
# ``_generation`` counts registrations so that a filter built from the policies before one is not stored
# after it (a thread may register while another builds).
_combined: weakref.WeakKeyDictionary[Any, dict[str, _pony.Combined | None]] = weakref.WeakKeyDictionary()
_generation = 0


def _actions(actions: str | Iterable[str]) -> frozenset[str] | None:
    names = (
        [actions] if isinstance(actions, str) else list(actions) if isinstance(actions, Iterable) else None
    )
    if not names or not all(isinstance(a, str) and a for a in names):
        raise OptionError(
            f'policy(actions=...) takes an action name, a sequence of names or "*", got {actions!r} '
            '(for example actions=("read", "update"))'
        )
    return None if ALL in names else frozenset(names)


def _check_action(func: str, action: Any) -> None:
    if not isinstance(action, str) or not action or action == ALL:
        raise OptionError(f'{func}() takes one action name such as "read", got {action!r}')


def policy(entity: Any, actions: str | Iterable[str] = ("read",)) -> Callable[[P], P]:
    """Register the decorated predicate as a policy of ``entity`` for ``actions`` (default ``"read"``;
    ``"*"`` for every action) and return it unchanged.

    The predicate takes the object and the principal and returns a condition in Pony's query language::

        @pk.policy(Order, actions="*")
        def same_tenant(order, user):
            return order.tenant.id == user.tenant_id or user.is_admin

    or ``pk.policy(Order)(lambda o, user: o.owner.id == user.id)``. Several policies of one entity and
    action are OR-ed: a row is visible if any of them allows it. Policies of a base entity apply to its
    subclasses too. Expressions on the principal alone (``user.tenant_id``, ``user.is_admin``) are
    computed in Python and sent as parameters; everything on the object runs in the database.
    """
    if not _pony.is_entity_class(entity):
        raise OptionError(
            f"policy() takes an entity class first, got {entity!r} (write @pk.policy(Order), with the entity)"
        )
    covered = _actions(actions)

    def register(func: P) -> P:
        try:
            predicate = _pony.predicate_of(func)
        except _pony.PredicateError as exc:
            name = getattr(func, "__qualname__", repr(func))
            raise OptionError(f"policy({entity.__name__}) cannot use {name}: {exc}") from None
        global _generation
        with _lock:
            _registry[entity] = (*_registry.get(entity, ()), Policy(entity, covered, predicate))
            _combined.clear()
            _generation += 1
        return func

    return register


def registered_policies(entity: Any, action: str | None = None) -> list[Policy]:
    """The policies that apply to ``entity`` (its own and its base entities'), for ``action`` or all."""
    found = [p for cls in reversed(_pony.entity_lineage(entity)) for p in _registry.get(cls, ())]
    return found if action is None else [p for p in found if p.covers(action)]


def _filter_for(entity: Any, action: str) -> _pony.Combined | None:
    per_entity = _combined.get(entity)
    if per_entity is not None and action in per_entity:
        return per_entity[action]
    generation = _generation
    found = registered_policies(entity, action)
    combined = _pony.combine(p.predicate for p in found) if found else None
    with _lock:
        if generation == _generation:
            _combined.setdefault(entity, {})[action] = combined
    return combined


def _entity_query(query: Any) -> tuple[Any, Any]:
    if _pony.is_entity_class(query):
        return query, None  # built with the filter in one step (select_text)
    entity = _pony.query_entity(query) if _pony.is_query(query) else None
    if entity is None:
        raise OptionError(
            f"scoped() takes an entity class or a Pony query of entity objects, got {type(query).__name__} "
            "(scope the query of objects, then select the values you need from it)"
        )
    return entity, query


def scoped(query: Any, action: str = "read", principal: Any = None) -> Any:
    """``query`` (a Pony query of entity objects, or an entity class) restricted to the rows the
    principal may ``action``: the OR of the entity's policies for that action, as a filter in the SQL.

    ``principal`` defaults to :func:`~ponykit.security.current_principal`. Raises
    :class:`~ponykit.errors.PermissionDenied` before any SQL when the entity has no policy for the action
    (a forgotten policy must be loud) or when no principal is acting. Returns a new lazy Pony query.
    A principal lacking an attribute the policies read raises :class:`~ponykit.errors.OptionError`, a
    policy Pony cannot translate :class:`~ponykit.errors.ConfigurationError`; both name the policies.
    """
    _check_action("scoped", action)
    entity, query = _entity_query(query)
    combined = _filter_for(entity, action)
    if combined is None:
        raise PermissionDenied(
            f"{entity.__name__} has no policy for action {action!r}, so scoped() refuses every row: register "
            f"one with @pk.policy({entity.__name__}, actions=({action!r},))",
            entity=entity.__name__,
            action=action,
        )
    if principal is None:
        principal = current_principal()
        if principal is None:
            raise PermissionDenied(
                f"scoped({entity.__name__}, {action!r}) needs a principal and none is acting: pass "
                "principal=..., or set one with ponykit.acting_as(user) / set_principal(user)",
                entity=entity.__name__,
                action=action,
            )
    return _apply(entity, query, action, combined, principal)


def _apply(entity: Any, query: Any, action: str, combined: _pony.Combined, principal: Any) -> Any:
    try:
        if query is None:
            return _pony.select_text(entity, combined, principal)
        return _pony.filter_text(query, combined, principal)
    except _pony.PredicateError as exc:
        labels = ", ".join(p.predicate.label for p in registered_policies(entity, action))
        where = f"the {action!r} policies of {entity.__name__} ({labels})"
        if exc.evaluation:
            raise OptionError(
                f"{where} read the principal, and that failed: {exc}; give a principal with the attributes "
                "the policies read"
            ) from exc
        raise ConfigurationError(
            f"Pony cannot translate {where}: {exc}; write them in Pony's query language"
        ) from exc


def can(principal: Any, action: str, obj: Any) -> bool:
    """True if ``principal`` may ``action`` the entity object ``obj``: exactly when ``scoped()`` of the
    object's entity would return it. Decided by the database (one ``EXISTS`` query), so that string
    collations and NULLs compare as in :func:`scoped`.

    Like a Pony query, it flushes the session's pending changes first: a new object is inserted, a
    modified one is decided on its new values. No principal, no policy, or a deleted object: False.
    """
    _check_action("can", action)
    if not _pony.is_entity_instance(obj):
        raise OptionError(f"can() takes an entity object as obj, got {type(obj).__name__}")
    if principal is None:
        return False
    entity = type(obj)
    combined = _filter_for(entity, action)
    if combined is None:
        return False
    _pony.flush_if_dirty(obj)
    if _pony.is_deleted_or_new(obj):
        return False
    query = _apply(entity, None, action, combined, principal)
    return bool(query.filter(lambda candidate: candidate == obj).exists())


class Scoped:
    """Mixin giving an entity ``Entity.scoped(action="read", principal=None)``::

    class Order(db.Entity, pk.security.Scoped): ...
    Order.scoped().order_by(Order.id)[:20]
    """

    __slots__ = ()

    @classmethod
    def scoped(cls, action: str = "read", principal: Any = None) -> Any:
        """``scoped(cls.select(), action, principal)``: the rows of this entity the principal may act on."""
        return scoped(cls, action, principal)
