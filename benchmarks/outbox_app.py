"""The application module the outbox benchmark's relay processes import: ``benchmarks.outbox_app:db``.

``python -m ponykit outbox relay benchmarks.outbox_app:db --to URL`` imports it. It binds to
``PONYKIT_BENCH_OUTBOX_DB`` (the benchmark's database URL), attaches with ``outbox=True`` and maps,
as an application module does.
"""

from __future__ import annotations

import os

from pony import orm

import ponykit

__all__ = ["db"]

db = orm.Database()
ponykit.bind_url(db, os.environ["PONYKIT_BENCH_OUTBOX_DB"])
ponykit.attach(db, outbox=True)
db.generate_mapping(create_tables=True)
