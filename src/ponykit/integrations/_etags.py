"""``If-Match`` / ``ETag`` for :class:`~ponykit.mixins.Versioned` objects: conditional writes over HTTP.

The client reads an object and keeps its ``ETag`` (``'"Order:42:3"'``, :attr:`Versioned.etag`); it sends
it back as ``If-Match`` with the change. :func:`check_if_match` raises
:class:`~ponykit.errors.VersionConflict` when the object is no longer at that version, which
``install(app)`` answers ``412 Precondition Failed`` (the request carried ``If-Match``); the database
repeats the check at the flush (``AND version = ...``), so a change committed in between is refused too
(Pony's ``OptimisticCheckError``, also a 412 then). :func:`set_etag` puts the object's current ETag,
after the flush that counted its version up, on the response.
"""

from __future__ import annotations

from typing import Any

from pony.orm import flush

from ..errors import OptionError, VersionConflict
from ..mixins import Versioned

__all__ = ["check_if_match", "if_match_tags", "set_etag"]


def _versioned(obj: Any, caller: str) -> None:
    if not isinstance(obj, Versioned):
        raise OptionError(
            f"{caller}() takes an object of a Versioned entity (class X(db.Entity, "
            f"ponykit.mixins.Versioned)), got {type(obj).__name__}: add the mixin to give it an ETag"
        )


def if_match_tags(value: str) -> list[str]:
    """The entity tags of an ``If-Match`` header value (``"*"`` stays ``"*"``), in order."""
    # ponykit's tags hold no comma inside the quotes (key parts are percent-encoded), so a split is exact.
    return [tag.strip() for tag in value.split(",") if tag.strip()]


def check_if_match(request: Any, obj: Any) -> bool:
    """Check the request's ``If-Match`` header against ``obj`` (a Versioned object) before changing it.

    No header: returns False (an unconditional request; require the header yourself if your API must).
    ``*`` or a tag equal to ``obj.etag`` (``W/`` prefix allowed, as ``expect_version`` allows it): returns
    True. Otherwise raises :class:`~ponykit.errors.VersionConflict` (a 412 answer with ``install(app)``).
    """
    _versioned(obj, "check_if_match")
    value = request.headers.get("if-match")
    if value is None:
        return False
    tags = if_match_tags(value)
    if "*" in tags:
        return True
    conflict: VersionConflict | None = None
    for tag in tags:
        try:
            obj.expect_version(tag)
        except VersionConflict as exc:
            conflict = exc
        else:
            return True
    if conflict is None:  # an empty header: no tag can match
        obj.expect_version('""')
    assert conflict is not None
    raise conflict


def set_etag(response: Any, obj: Any) -> str:
    """Put ``obj``'s current ETag on ``response`` (``ETag`` header) and return it.

    Flushes first: an update counts the version up when it is flushed, so the tag names the version the
    commit stores.
    """
    _versioned(obj, "set_etag")
    flush()
    tag: str = obj.etag
    response.headers["ETag"] = tag
    return tag
