"""Schema migrations for Pony: a snapshot of the declared models, autodetected entity-level operations in
versioned migration files, and per-backend DDL planned from Pony's own mapping (issue #16).

``make`` writes the next migration from the models; ``upgrade``/``downgrade`` apply them under a lock,
journaled in the ``ponykit_migration`` table; ``status`` lists them; ``check`` compares models, files,
lock and database for CI; ``sql`` prints the DDL offline; ``historical`` gives the entities as of a
revision; ``init`` starts a history (``from_db=True``: baseline an existing database). The same commands
run as ``python -m ponykit migrate ...``.
"""

from __future__ import annotations

from . import op
from ._check import CheckReport, check
from ._historical import historical
from ._make import init, make
from ._runner import downgrade, upgrade
from ._sqlgen import sql
from ._status import Status, status

__all__ = [
    "CheckReport",
    "Status",
    "check",
    "downgrade",
    "historical",
    "init",
    "make",
    "op",
    "sql",
    "status",
    "upgrade",
]
