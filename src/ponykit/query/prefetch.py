"""Nested prefetch: load relations of many objects with one query per path segment.

``prefetch(authors, "books", "books.tags", "bio")`` loads every author's books in one query, every
book's tags (with the tag rows) in one more, and the lazy ``bio`` column in one more; afterwards
touching those relations runs no SQL. Queries are chunked by the backend's parameter limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import _pony
from ..errors import ConfigurationError, OptionError

__all__ = ["prefetch"]


def _tree(paths: tuple[str, ...]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in paths:
        if not isinstance(path, str) or not path or any(not part for part in path.split(".")):
            raise OptionError(
                f'prefetch() paths are dotted attribute names like "comments.author", got {path!r}'
            )
        node = tree
        for part in path.split("."):
            node = node.setdefault(part, {})
    return tree


def _attr_for(obj_class: Any, name: str, path: str) -> Any:
    attr = _pony.find_attribute(obj_class, name)
    if attr is None:
        known = ", ".join(a.name for a in _pony.entity_attributes(obj_class))
        raise OptionError(
            f"prefetch(): entity {obj_class.__name__} has no attribute {name!r} (path {path!r}); its "
            f"attributes are {known}; fix the path"
        )
    kind = _pony.relation_kind(attr)
    if kind is None:
        raise OptionError(
            f"prefetch(): {obj_class.__name__}.{name} (path {path!r}) is a plain column, already loaded with "
            "its object; prefetch relations (to-one, Set) or lazy attributes"
        )
    return attr


def _load_segment(objects: list[Any], name: str, path: str, follow: bool) -> list[Any]:
    """Load attribute ``name`` of ``objects``; return the objects the next segment starts from."""
    by_attr: dict[Any, list[Any]] = {}
    attr_of: dict[type, Any] = {}  # objects of one class share the attribute: look it up once
    for obj in objects:
        cls = type(obj)
        attr = attr_of.get(cls)
        if attr is None:
            attr = attr_of[cls] = _attr_for(cls, name, path)
        by_attr.setdefault(attr, []).append(obj)
    following: list[Any] = []
    seen: set[int] = set()

    def add(item: Any) -> None:
        if follow and item is not None and id(item) not in seen:
            seen.add(id(item))
            following.append(item)

    for attr, owners in by_attr.items():
        kind = _pony.relation_kind(attr)
        live = [o for o in owners if not _pony.is_deleted_or_new(o)]
        seeds = [o for o in live if _pony.is_seed(o)]
        if seeds and kind in ("to_one", "lazy"):
            # The objects themselves were never loaded: load their columns first.
            _pony.load_by_pk(_pony.root_entity(type(seeds[0])), seeds)
        if kind == "to_one":
            targets = [_pony.loaded_value(o, attr) for o in owners]
            missing = [
                t for t in targets if t is not None and t is not _pony.not_loaded() and _pony.is_seed(t)
            ]
            if missing:
                unique = list({id(t): t for t in missing}.values())
                _pony.load_by_pk(_pony.root_entity(_pony.attr_info(attr).py_type), unique)
            for target in targets:
                if target is not _pony.not_loaded():
                    add(target)
        elif kind == "lazy":
            missing = [o for o in live if _pony.loaded_value(o, attr) is _pony.not_loaded()]
            if missing:
                _pony.load_lazy(attr, missing)
        else:
            pending = [o for o in live if _pony.collection_items(o, attr) is None]
            if pending:
                if kind == "one_to_many":
                    _pony.load_one_to_many(attr, pending)
                else:
                    _pony.load_many_to_many(attr, pending)
            for owner in owners if follow else ():
                for item in sorted(_pony.collection_items(owner, attr) or (), key=_pony.raw_primary_key):
                    add(item)
    return following


def _walk(objects: list[Any], tree: dict[str, Any], prefix: str) -> None:
    for name, children in tree.items():
        path = f"{prefix}{name}"
        following = _load_segment(objects, name, path, follow=bool(children))
        if children:
            if any(_pony.relation_kind(_attr_for(type(o), name, path)) == "lazy" for o in objects[:1]):
                raise ConfigurationError(
                    f"prefetch(): {path!r} is a lazy column, not a relation; nothing follows it"
                )
            if following:
                _walk(following, children, path + ".")


def prefetch(query_or_objects: Any, *paths: str) -> list[Any]:
    """Load the relations named by dotted ``paths`` for all the objects at once; return the objects.

    ``query_or_objects`` is a Pony query over an entity (it is run) or an iterable of entity objects.
    Each path segment costs at most one query per chunk of objects (the backend's parameter limit):
    to-one relations, one-to-many and many-to-many ``Set`` attributes, and lazy attributes. Objects of
    a relation that the session already holds are not loaded again. Must run inside a ``db_session``.
    """
    tree = _tree(paths)
    if _pony.is_query(query_or_objects):
        if _pony.query_entity(query_or_objects) is None:
            raise ConfigurationError(
                "prefetch() needs a query that selects entities, like select(a for a in Author)"
            )
        # Built by ponykit's materializer, the same objects Pony's own fetch would give, faster.
        objects = _pony.fetch_entities(query_or_objects)
    elif isinstance(query_or_objects, Iterable):
        objects = list(query_or_objects)
    else:
        raise OptionError(
            "prefetch() takes a query or an iterable of entity objects, got "
            f"{type(query_or_objects).__name__}; pass select(...) or a list of objects"
        )
    bad = [o for o in objects if not _pony.is_entity_instance(o)]
    if bad:
        raise OptionError(f"prefetch() takes entity objects, got a {type(bad[0]).__name__}; pass the objects")
    if not objects or not tree:
        return objects
    dbs = {id(_pony.database_of(type(o))): _pony.database_of(type(o)) for o in objects}
    for db in dbs.values():
        # Pending changes must reach the database first, as Pony's own queries would flush them.
        db.flush()
    _walk(objects, tree, "")
    return objects
