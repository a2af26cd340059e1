"""``EntityMixin``: how a ponykit mixin puts real attributes and hooks on each entity that lists it.

Pony reads an entity's attributes from the class's own namespace when the class is made, so attributes
declared on a plain base class are silently ignored (a hand-written ``Timestamped`` base adds no
columns). Python calls ``__init_subclass__`` while the class is being made, before Pony reads that
namespace: :class:`EntityMixin` uses it to add each mixin's attributes to the entity class itself, as if
the class body had declared them, and to register the mixin's flush hooks and bulk extension on that
class only. Pony's own classes are never changed.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .. import _pony
from ..errors import ConfigurationError

__all__ = ["EntityMixin"]


class EntityMixin:
    """Base of the entity mixins: ``class User(db.Entity, Timestamped): ...``.

    A subclass of EntityMixin (a mixin) defines :meth:`_ponykit_attributes_` (the attributes it adds) and
    :meth:`_ponykit_setup_` (hooks, bulk extension). Each runs once per entity hierarchy: an entity that
    inherits from an entity that already has the mixin gets the attributes by inheritance, as Pony does.
    """

    #: The option names of this mixin (class attributes an entity may set to rename what it adds).
    _ponykit_options_: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not _pony.is_entity_class(cls):
            return  # a plain class combining mixins: the entity made from it gets them
        for mixin in _mixins_to_apply(cls):
            attributes = mixin._ponykit_attributes_(cls)
            for name, attribute in attributes.items():
                _check_free(cls, mixin, name)
                setattr(cls, name, attribute)
            mixin._ponykit_setup_(cls)

    @classmethod
    def _ponykit_attributes_(cls, entity: Any) -> dict[str, Any]:
        """The attributes (Pony ``Required``/``Optional`` ...) this mixin adds to ``entity``, by name."""
        return {}

    @classmethod
    def _ponykit_setup_(cls, entity: Any) -> None:
        """Register this mixin's hooks on ``entity`` (called once its attributes are in place)."""


def _mixins_to_apply(entity: Any) -> list[type[EntityMixin]]:
    """The ponykit mixins in the entity's bases that no entity base of it has already got."""
    inherited: set[type] = set()
    for base in entity.__mro__[1:]:
        if _pony.is_entity_class(base):
            inherited.update(k for k in base.__mro__ if isinstance(k, type) and issubclass(k, EntityMixin))
    found = []
    for klass in entity.__mro__:
        if (
            isinstance(klass, type)
            and issubclass(klass, EntityMixin)
            and klass is not EntityMixin
            and not _pony.is_entity_class(klass)
            and "_ponykit_attributes_" in vars(klass)
            and klass not in inherited
        ):
            found.append(klass)
    found.reverse()  # the mixin listed last is the furthest base: apply bases first, as Python reads them
    return found


def _check_free(entity: Any, mixin: type[EntityMixin], name: str) -> None:
    """A clear error when the class (or an entity base) already declares an attribute the mixin adds."""
    declared = name in vars(entity) or any(
        _pony.is_entity_class(base) and name in vars(base) for base in entity.__mro__[1:]
    )
    if not declared:
        return
    options = ", ".join(f"{o} = '...'" for o in mixin._ponykit_options_)
    how = f"give the mixin another name with {options} in the class body" if options else "rename yours"
    raise ConfigurationError(
        f"{entity.__name__}.{name} is declared by the class and is also added by the {mixin.__name__} "
        f"mixin; remove your declaration (the mixin adds it), or {how}"
    )
