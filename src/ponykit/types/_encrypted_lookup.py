"""Lookups of searchable encrypted attributes: the lookup index, :func:`match`, raw-SQL patterns.

A searchable envelope starts with ``v1:<key id>:<blind index>:``. Lookups compare that header, and the
index ponykit creates with the table covers only the first :data:`LOOKUP_PREFIX_CHARS` characters of the
stored text, in the shape each backend's index serves (see ``_pony.lookup_condition_parts``).
"""

from __future__ import annotations

from typing import Any

from .. import _pony
from .._kit import find_kit
from .._sql import escape_dollars
from ..errors import ConfigurationError, UnsupportedComparison
from ..security.envelope import BLIND_INDEX_HEX, VERSION

__all__ = ["LOOKUP_PREFIX_CHARS", "lookup_index_ddl", "lookup_patterns_for", "match"]

# The longest header of a searchable envelope, "v1:<key id, <= 32>:<blind index>:": lookups compare only
# these first characters, and the index covers only them. A fixed-length prefix, not the whole envelope:
# PostgreSQL's btree refuses entries over ~2.7 KB, MariaDB cannot index a LONGTEXT without a length.
LOOKUP_PREFIX_CHARS = len(VERSION) + 1 + 32 + 1 + BLIND_INDEX_HEX + 1

# How each backend writes a lookup so that its index serves it (see _pony.lookup_condition_parts).
_LOOKUP_SHAPES = {
    "postgres": "prefix-range-c",
    "cockroach": "prefix-like",
    "mysql": "like",
    "sqlite": "prefix-range",
}


def _lookup_shape(db: Any) -> str:
    return _LOOKUP_SHAPES.get(_pony.dialect(db), "like")


def _index_sql(db: Any, index: str, table: Any, column: str) -> str:
    """The ``CREATE INDEX`` statement of a searchable attribute's lookup index on this backend."""
    dialect = _pony.dialect(db)
    q_index, q_table, q_col = (_pony.quote_name(db, n) for n in (index, table, column))
    n = LOOKUP_PREFIX_CHARS
    if dialect == "postgres":
        # COLLATE "C": the lookup's range compares in binary order whatever the database's collation, and
        # PostgreSQL plans and runs it faster than LIKE 'prefix%' with text_pattern_ops (measured).
        return f'CREATE INDEX {q_index} ON {q_table} ((substr({q_col}, 1, {n}) COLLATE "C"))'
    if dialect == "cockroach":
        # text_pattern_ops: LIKE 'prefix%' uses the index whatever the database's collation.
        return f"CREATE INDEX {q_index} ON {q_table} ((substr({q_col}, 1, {n})) text_pattern_ops)"
    if dialect == "mysql":
        return f"CREATE INDEX {q_index} ON {q_table} ({q_col}({n}))"
    return f"CREATE INDEX {q_index} ON {q_table} (substr({q_col}, 1, {n}))"


def _render_index(db: Any) -> Any:
    def render(converter: Any, index: str, table: Any, column: str) -> str | None:
        if not getattr(converter, "searchable", False) or not hasattr(converter, "ponykit_lookup_functions"):
            return None
        return _index_sql(db, index, table, column)

    return render


# ---------------------------------------------------------------------------------------------------------
# Generator-query helper


def match(attr: Any, value: Any, *, alias: str | None = None) -> Any:
    """A condition for generator queries: the searchable encrypted ``attr`` equals ``value``.

    ``select(u for u in User if pk.types.match(User.email, "a@b.c"))``. Pony evaluates the call once,
    outside the query, and inserts the SQL it returns; ``alias`` is the generator's variable name
    (default: the entity's uppercase letters lowercased, ``User`` -> ``u``, which is also what
    ``User.select()`` uses). Raises UnsupportedComparison for attributes that are not searchable.
    """
    entity = _pony.attribute_entity(attr)
    db = _pony.database_of(entity)
    kit = find_kit(db)
    if kit is None or not _pony.is_mapped(db):
        raise ConfigurationError(f"match({_pony.attr_label(attr)}, ...): the Database is not mapped yet")
    converter = _pony.attribute_converter(attr)
    lookup = getattr(converter, "ponykit_lookup_functions", None)
    if lookup is None:
        raise UnsupportedComparison(
            f"match() is for encrypted attributes; compare {_pony.attr_label(attr)} directly"
        )
    functions = lookup()
    plain = converter.validate(value, None)
    if alias is None:
        alias = _pony.default_alias(entity)
    # Escaped: Pony's raw-SQL parser would evaluate a "$" in the alias or column name as Python.
    column = escape_dollars(
        f"{_pony.quote_name(db, _pony.sql_alias(alias))}.{_pony.quote_name(db, _pony.attr_column(attr))}"
    )
    # The same index-friendly shape as Entity.get(attr=value) (see _pony.lookup_condition_parts).
    values: dict[str, str] = {}
    conditions = []
    shape = _lookup_shape(db)
    for i, f in enumerate(functions):
        pattern = f(plain)
        if shape == "like":
            conditions.append(f"{column} LIKE $p{i}")
            values[f"p{i}"] = pattern
            continue
        prefix = f"substr({column}, 1, {LOOKUP_PREFIX_CHARS})"
        if shape == "prefix-range-c":
            prefix = f'({prefix} COLLATE "C")'
        if shape == "prefix-like":
            conditions.append(f"{prefix} LIKE $p{i}")
            values[f"p{i}"] = pattern
        else:
            conditions.append(f"({prefix} >= $lo{i} AND {prefix} < $hi{i})")
            values[f"lo{i}"], values[f"hi{i}"] = _pony.pattern_bounds(pattern)
    return _pony.raw_sql_condition(f"({' OR '.join(conditions)})", values)


def lookup_index_ddl(attr: Any) -> str:
    """The ``CREATE INDEX`` statement of the searchable encrypted ``attr``'s lookup index (mapped Database).

    ``generate_mapping(create_tables=True)`` creates it with the table, and adds it to an existing table
    that lacks it; with ``create_tables=False`` run this statement yourself (once) on tables created by a
    ponykit version before the index existed. ``index="name"`` in the declaration names it.
    """
    converter = _pony.attribute_converter(attr)
    if not getattr(converter, "searchable", False):
        raise ConfigurationError(
            f"{_pony.attr_label(attr)} is not a searchable encrypted attribute: it has no lookup index"
        )
    sql = _pony.index_create_command(attr)
    if sql is None:
        raise ConfigurationError(
            f"{_pony.attr_label(attr)} was declared with index=False: it has no lookup index"
        )
    return sql


def lookup_patterns_for(attr: Any, value: Any) -> list[str]:
    """The ``LIKE`` patterns matching ``value`` in the searchable encrypted ``attr`` (for raw SQL)."""
    converter = _pony.attribute_converter(attr)
    plain = converter.validate(value, None)
    return [f(plain) for f in converter.ponykit_lookup_functions()]
