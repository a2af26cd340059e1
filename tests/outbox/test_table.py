"""The outbox tables as the database has them: the indexes the relay's queries need really exist."""

from __future__ import annotations

from collections.abc import Callable

from pony.orm import Database, db_session

from ponykit import _pony

from ._helpers import make_outbox_db


def _indexes(db: Database, table: str) -> set[tuple[str, ...]]:
    """The column lists of the table's indexes, read back from the database's catalog."""
    name = _pony.dialect(db)
    found: dict[str, list[str]] = {}
    with db_session:
        if name == "sqlite":
            for row in db.execute(f"PRAGMA index_list('{table}')").fetchall():
                index = row[1]
                cols = db.execute(f"PRAGMA index_info('{index}')").fetchall()
                found[index] = [c[2] for c in sorted(cols)]
        elif name == "postgres":
            rows = db.execute(
                "SELECT i.relname, a.attname FROM pg_index x "
                "JOIN pg_class t ON t.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid "
                "JOIN pg_namespace n ON n.oid = t.relnamespace "
                "JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, pos) ON true "
                "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum "
                f"WHERE t.relname = '{table}' AND n.nspname = current_schema() ORDER BY i.relname, k.pos"
            ).fetchall()
            for index, column in rows:
                found.setdefault(index, []).append(column)
        else:
            rows = db.execute(
                "SELECT index_name, column_name FROM information_schema.statistics "
                f"WHERE table_schema = DATABASE() AND table_name = '{table}' "
                "ORDER BY index_name, seq_in_index"
            ).fetchall()
            for index, column in rows:
                found.setdefault(index, []).append(column)
    return {tuple(cols) for cols in found.values()}


def test_the_outbox_indexes_exist_in_the_database(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    indexes = _indexes(db, "ponykit_outbox")
    assert ("sent_at", "seq") in indexes  # pending rows in seq order, pruning
    assert ("aggregateid", "sent_at", "seq") in indexes  # a key's pending rows in seq order
    assert ("id",) in indexes  # unique message id
    assert ("dead_at",) in indexes  # SQLite's relay looks up keys with a dead row every batch
    assert ("seq",) in indexes or _pony.dialect(db) == "sqlite"  # SQLite: the rowid is the primary key


def test_the_key_table_index_exists_in_the_database(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    indexes = _indexes(db, "ponykit_outbox_key")
    assert ("pending", "turn") in indexes  # relays claim WHERE pending = 1 ORDER BY turn
