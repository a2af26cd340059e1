"""Which Database a transaction function means when it is not told: the one attached Database in use."""

from __future__ import annotations

from pony.orm import Database

from .. import _pony
from .._kit import attached_databases, find_kit, get_kit
from ..errors import ConfigurationError

__all__ = ["resolve_db"]


def resolve_db(db: Database | None, call: str, explicit: str) -> Database:
    """``db`` (checked to be attached), or the one attached Database in use in this session (or attached
    at all). ``call`` names the function in messages (``"savepoint()"``), ``explicit`` shows how to pass
    the Database (``"savepoint(db)"``)."""
    if db is not None:
        get_kit(db)  # not attached: ConfigurationError saying how to attach it
        return db
    in_use = [d for d in _pony.session_databases() if find_kit(d) is not None]
    candidates = in_use or attached_databases()
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ConfigurationError(
            f"{call} needs an attached Database: call ponykit.attach(db) when setting the database up"
        )
    raise ConfigurationError(
        f"{call} cannot tell which Database is meant ({len(candidates)} attached databases are in use); "
        f"pass it explicitly: {explicit}"
    )
