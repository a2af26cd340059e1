"""``rotate_keys``: re-encrypt stored values under the key ring's primary key, in resumable batches.

Each batch selects (by SQL) up to ``batch_size`` rows whose envelope is not in its final form under the
primary key (``NOT LIKE 'v1:<primary>:%'``), decrypts them with whichever key of the ring they name,
re-encrypts them under the primary (with a fresh blind index for searchable attributes), writes them with
one ``executemany`` compare-and-swap ``UPDATE`` (``... WHERE pk = ? AND col = <old envelope>``, so a
concurrent write is never overwritten) and commits. An interrupted run leaves every committed batch done;
running it again continues with what is left. Lookups work throughout: searchable lookups match the blind
index of every key in the ring.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pony.orm import db_session

from .. import _pony
from ..errors import ConfigurationError
from ..kit import get_kit
from ..transactions import record_writes
from .envelope import primary_prefix_pattern
from .keys import KeyRing

__all__ = ["RotationProgress", "rotate_keys"]


@dataclass(frozen=True)
class RotationProgress:
    """Where a rotation is: ``done`` of ``total`` values re-encrypted (``total`` counted at the start)."""

    entity: str
    attribute: str
    done: int
    total: int


def _encrypted_attrs(entity: Any, names: Iterable[str] | None) -> list[Any]:
    if names is None:
        found = []
        for attr_name in _pony.entity_info(entity).column_attrs:
            attr = _pony.entity_attribute(entity, attr_name)
            if hasattr(_pony.attribute_converter(attr), "reencrypt"):
                found.append(attr)
        return found
    attrs = []
    for name in names:
        attr = _pony.entity_attribute(entity, name)
        if not hasattr(_pony.attribute_converter(attr), "reencrypt"):
            raise ConfigurationError(f"{entity.__name__}.{name} is not an encrypted attribute")
        attrs.append(attr)
    return attrs


def rotate_keys(
    entity: Any,
    attrs: Iterable[str] | None = None,
    *,
    batch_size: int = 1000,
    progress: Callable[[RotationProgress], None] | None = None,
) -> int:
    """Re-encrypt every value of ``entity``'s encrypted attributes that is not under the primary key.

    ``attrs`` names the attributes (default: every encrypted one). Each batch of ``batch_size`` rows is
    committed on its own, then ``progress(RotationProgress(...))`` is called; an exception from
    ``progress`` (or anything else) stops the run, and calling it again resumes. Must be called outside a
    ``db_session``. Returns how many values were re-encrypted. A value that does not decrypt raises
    DecryptionError (naming the entity, attribute and primary key) and stops the run.
    """
    if _pony.in_db_session():
        raise ConfigurationError("rotate_keys() commits every batch on its own: call it outside a db_session")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be a positive int, got {batch_size!r}")
    db = _pony.database_of(entity)
    keys = get_kit(db).keys
    if not isinstance(keys, KeyRing):
        raise ConfigurationError(f"{db!r} has no key ring: attach(db, keys=KeyRing(...)) first")
    info = _pony.entity_info(entity)
    targets = _encrypted_attrs(entity, attrs)
    quote = _quoter(db)
    table = quote(info.table)
    pk_cols = [quote(c) for c in info.pk_columns]
    mark = _pony.positional_placeholder(db)

    plans = []
    for attr in targets:
        converter = _pony.attribute_converter(attr)
        pattern = primary_prefix_pattern(keys, searchable=converter.searchable)
        col = quote(attr.column)
        where = f"{col} IS NOT NULL AND {col} NOT LIKE $pattern"
        plans.append((attr, converter, pattern, col, where))

    total = 0
    with db_session:
        for _attr, _conv, pattern, _col, where in plans:
            total += int(
                db.select(f"SELECT COUNT(*) FROM {table} WHERE {where}", {}, {"pattern": pattern})[0]
            )

    done = 0
    for attr, converter, pattern, col, where in plans:
        select_sql = (
            f"SELECT {', '.join(pk_cols)}, {col} FROM {table} WHERE {where} "
            f"ORDER BY {', '.join(pk_cols)} LIMIT {int(batch_size)}"
        )
        pk_where = " AND ".join(f"{c} = {mark}" for c in pk_cols)
        update_sql = f"UPDATE {table} SET {col} = {mark} WHERE {pk_where} AND {col} = {mark}"
        seen: set[Any] = set()
        while True:
            with db_session:
                rows = db.select(select_sql, {}, {"pattern": pattern})
                fresh = []
                for row in rows:
                    pk = tuple(row[: len(pk_cols)])
                    if pk not in seen:
                        fresh.append((pk, row[len(pk_cols)]))
                if not fresh:
                    break
                params = []
                for pk, stored in fresh:
                    seen.add(pk)
                    shown = pk[0] if len(pk) == 1 else pk
                    params.append((converter.reencrypt(stored, pk=shown), *pk, stored))
                cursor = _pony.raw_connection(db).cursor()
                cursor.executemany(update_sql, params)
                record_writes(db, entity, None if info.pk_is_composite else [p[0] for p, _ in fresh])
            done += len(fresh)
            if progress is not None:
                progress(RotationProgress(entity.__name__, attr.name, done, max(total, done)))
    return done


def _quoter(db: Any) -> Callable[[Any], str]:
    """``quote(name)`` for this Database's dialect."""
    return lambda name: _pony.quote_name(db, name)
