"""bulk_insert's collection values: many-to-many collections in rows (``{"title": ..., "tags": [1, 5]}``),
taken out of the rows before they are encoded and written as link rows once the rows' keys are known
(private to ponykit.bulk)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import _pony
from .._sql import Dialect
from ..errors import BulkWriteError, ConfigurationError
from ._batch import Row, Savepoint, cached_by_pk
from ._links import Objects, link_plan
from ._rows import RowPlan

__all__ = ["check_link_keys", "insert_links", "split_collections"]


def split_collections(
    plan: RowPlan, batch: list[Row], offset: int
) -> tuple[list[Row], dict[str, list[tuple[int, Any]]]]:
    """The batch without collection keys, and each many-to-many collection's ``(row position, item)``
    pairs. A one-to-many collection raises BulkWriteError (its rows hold the foreign key, not a link)."""
    names = plan.collections
    try:
        given = names.intersection(set().union(*batch))
    except TypeError:  # not every row is a dict: bulk_insert names the row
        return batch, {}
    if not given:
        return batch, {}
    links: dict[str, list[tuple[int, Any]]] = {name: [] for name in given}
    stripped: list[Row] = []
    for position, row in enumerate(batch):
        if not isinstance(row, dict) or names.isdisjoint(row):
            stripped.append(row)
            continue
        for name in names.intersection(row):
            if _pony.many_to_many(_pony.entity_attribute(plan.entity, name)) is None:
                raise _one_to_many_error(plan, name, offset + position)
        for name in names.intersection(row):
            items = row[name]
            if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
                items = [items]  # one object or key, as Pony's Set takes it
            links[name].extend((position, item) for item in items)
        stripped.append({k: v for k, v in row.items() if k not in names})
    return stripped, links


def insert_links(
    plan: RowPlan,
    dialect: Dialect,
    batch: list[Row],
    links: dict[str, list[tuple[int, Any]]],
    keys: list[Any] | None,
    offset: int,
    savepoint: Savepoint,
) -> None:
    """Write the link rows of the collection values of one inserted batch (input rows from ``offset``):
    ``links`` maps a collection to ``(row position, item)`` pairs; ``keys`` holds the inserted rows'
    keys in row order (None: the rows give them)."""
    db = dialect.db
    for name, items in links.items():
        link = link_plan(_pony.entity_attribute(plan.entity, name), "bulk_insert")
        if not items:
            continue
        if keys is None:  # rows that give their key: encoded as Pony binds it (the rows are valid)
            names = plan.pk_names
            given = [r[names[0]] if len(names) == 1 else tuple(r[n] for n in names) for r in batch]
            keys = link.owner.encode(given, range(offset, offset + len(batch)), link)
        offsets = [offset + position for position, _ in items]
        others = link.other.encode([item for _, item in items], offsets, link)
        owners = [keys[position] for position, _ in items]
        link.insert(dialect, link.link_values(owners, others), savepoint)
        encoded = list(zip(owners, others, strict=True))
        in_session = cached_by_pk(link.other.plan, db)
        loaded = _pony.loaded_collections(in_session, _pony.attr_info(link.link.attr).reverse_attr)
        objects: Objects = ({}, in_session, {}, loaded)
        link.after(db, list(link.touched(encoded, objects)), True, (set(keys), set(others)))


def _one_to_many_error(plan: RowPlan, name: str, index: int) -> BulkWriteError:
    info = _pony.attr_info(_pony.entity_attribute(plan.entity, name))
    back = info.reverse
    child = info.py_type.__name__
    fix = (
        f"insert the {child} rows with {back.name}= set to this row's key instead"
        if back is not None
        else "set the reference on the children instead"
    )
    return BulkWriteError(
        f"bulk_insert({plan.name}): row {index} has key {name!r}, a one-to-many collection: its members "
        f"are stored in their own reference ({child}.{back.name if back else '?'}), not in a link table, "
        f"so bulk_insert takes many-to-many collections only; {fix}",
        row_index=index,
        entity=plan.name,
        attribute=name,
    )


def check_link_keys(plan: RowPlan, dialect: Dialect, names: Iterable[str]) -> None:
    """Raise ConfigurationError if the generated keys of inserted rows, which their collection values
    (``names``) need, cannot be had: the server lacks ``INSERT ... RETURNING``."""
    db = dialect.db
    if _pony.supports_insert_returning(db):
        return
    version = ".".join(map(str, _pony.server_version(db))) or "unknown"
    raise ConfigurationError(
        f"bulk_insert({plan.name}) with collection values ({', '.join(sorted(names))}) needs the keys the "
        f"database generates for the new rows (INSERT ... RETURNING), which this {_pony.dialect(db)} server "
        f"(version {version}) lacks: it takes PostgreSQL, SQLite >= 3.35 or MariaDB >= 10.5. Give the "
        "keys in the rows, or insert the rows first and write the links with bulk_link."
    )
