"""The one SQL dialect helper: quoting, placeholders, IN lists, VALUES rows, per backend.

Used by bulk writes, keyset pagination, rotation and the encrypted lookups.

Only quoted identifiers are ever put into the SQL text; values are always bound parameters (or, for
COPY, the rows of its data stream). The statement shapes were chosen by measurement
(``benchmarks/test_bulk.py``, ``docs/performance.md``):

* INSERT: ``COPY ... FROM STDIN`` on PostgreSQL (``ponykit.bulk._copy``; 4x faster than any
  parameterised INSERT there), where it stores exactly what INSERT would, else one multi-row ``VALUES``
  statement per chunk of the parameter limit (``executemany`` there is one round trip per row); the
  same multi-row ``VALUES`` on SQLite (faster than ``executemany`` there); ``executemany`` on MariaDB
  (PyMySQL rewrites it into multi-row statements). With ``RETURNING`` every backend uses multi-row
  ``VALUES`` statements, except where PostgreSQL's COPY takes keys from the sequence first.
* UPDATE: ``executemany`` on SQLite; ``UPDATE ... FROM (VALUES ...)`` on PostgreSQL (typed by casts in
  the first row); ``UPDATE ... JOIN (SELECT ... UNION ALL SELECT ...)`` on MariaDB.
* UPSERT: ``ON CONFLICT (...) DO UPDATE`` on SQLite and PostgreSQL, ``ON DUPLICATE KEY UPDATE`` on
  MariaDB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pony.orm import Database

from . import _pony
from .errors import UnsupportedDatabase

__all__ = ["ClassFilter", "Dialect", "Exprs", "dialect_of", "escape_dollars"]

# (discriminator column, number of discriminator values): restricts a statement to one class's rows.
ClassFilter = tuple[str, int] | None
#: Extra ``SET`` clauses: ``(column, template)``, ``{col}`` in the template being the stored column.
Exprs = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Dialect:
    """The SQL dialect facts the bulk statements need for one Database."""

    name: str  # sqlite, postgres, mysql
    placeholder: str
    max_params: int
    db: Database

    def q(self, name: str | tuple[str, ...]) -> str:
        """Quote an identifier (or a ``(schema, table)`` pair)."""
        return _pony.quote_name(self.db, name)

    def row(self, n: int) -> str:
        """``(?, ?, ?)`` for n values."""
        return "(" + ", ".join([self.placeholder] * n) + ")"

    # -- INSERT -----------------------------------------------------------------------------------

    def insert(self, table: str | tuple[str, ...], columns: Sequence[str], nrows: int) -> str:
        """``INSERT INTO t (cols) VALUES (...), (...)`` with ``nrows`` rows (at least 1)."""
        cols = ", ".join(self.q(c) for c in columns)
        if not columns:
            if self.name == "mysql":
                return f"INSERT INTO {self.q(table)} () VALUES " + ", ".join(["()"] * nrows)
            if nrows == 1:
                return f"INSERT INTO {self.q(table)} DEFAULT VALUES"
            raise AssertionError(
                "multi-row INSERT of rows without columns"
            )  # callers insert such rows one by one
        values = ", ".join([self.row(len(columns))] * nrows)
        return f"INSERT INTO {self.q(table)} ({cols}) VALUES {values}"

    def copy_from_stdin(self, table: str | tuple[str, ...], columns: Sequence[str]) -> str:
        """``COPY t (cols) FROM STDIN`` (PostgreSQL; text format: tab-separated, ``\\N`` for NULL)."""
        return f"COPY {self.q(table)} ({', '.join(self.q(c) for c in columns)}) FROM STDIN"

    def copy_target_sql(self) -> str:
        """How a table takes COPY: one row ``(like_insert, has_user_triggers, key_sequence)``.

        COPY runs triggers and constraints like INSERT but never rewrite rules: only plain and
        partitioned tables without rules take it like INSERT. ``key_sequence`` is the sequence whose
        ``nextval`` is the default of the key column, if it is exactly that (a ``SERIAL``), else NULL.
        Parameters: the quoted table name, the key column name twice (or NULL), the quoted table name.
        """
        p = self.placeholder
        return (
            "SELECT c.relkind IN ('r', 'p') AND NOT c.relhasrules, "
            "EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal), "
            f"(SELECT s.seq::text FROM (SELECT pg_get_serial_sequence({p}, {p})::regclass AS seq) s "
            f"JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = {p} "
            "JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum "
            "WHERE pg_get_expr(d.adbin, d.adrelid) "
            "= 'nextval(' || quote_literal(s.seq::text) || '::regclass)') "
            f"FROM pg_class c WHERE c.oid = to_regclass({p})"
        )

    def next_values_sql(self) -> str:
        """``n`` values of a sequence in one array (parameters: its name, n)."""
        p = self.placeholder
        return f"SELECT ARRAY(SELECT nextval({p}) FROM generate_series(1, {p}))"

    def returning(self, columns: Sequence[str]) -> str:
        """`` RETURNING a, b``."""
        return " RETURNING " + ", ".join(self.q(c) for c in columns)

    # -- UPDATE -----------------------------------------------------------------------------------

    def update_one(
        self,
        table: str | tuple[str, ...],
        set_cols: Sequence[str],
        pk_cols: Sequence[str],
        class_filter: ClassFilter = None,
        guard_cols: Sequence[str] = (),
        exprs: Exprs = (),
    ) -> str:
        """``UPDATE t SET a = ?, b = ? WHERE pk = ?`` for ``executemany`` (then the class filter's values).

        ``guard_cols``: compare-and-swap, the row is updated only if these columns still hold the values
        bound after the key (``AND g = ?``). ``exprs``: more ``SET`` clauses computed from the stored row
        (see :meth:`set_exprs`).
        """
        sets = ", ".join(f"{self.q(c)} = {self.placeholder}" for c in set_cols) + self.set_exprs(exprs)
        where = " AND ".join(f"{self.q(c)} = {self.placeholder}" for c in (*pk_cols, *guard_cols))
        return f"UPDATE {self.q(table)} SET {sets} WHERE {where}{self.class_in(class_filter)}"

    def set_exprs(self, exprs: Exprs, table: str | tuple[str, ...] | None = None) -> str:
        """``, c = <expr>`` for each ``(column, template)`` of ``exprs``; ``{col}`` in the template is the
        column as the row holds it before the update (``"{col} + 1"`` counts a version up), qualified by
        ``table`` when given (a multi-table UPDATE or an upsert's conflicting row)."""
        parts = []
        for column, template in exprs:
            current = self.q(column) if table is None else f"{self.q(table)}.{self.q(column)}"
            parts.append(f", {self.q(column)} = {template.format(col=current)}")
        return "".join(parts)

    def class_in(self, class_filter: ClassFilter, prefix: str = "") -> str:
        """`` AND disc IN (?, ?)``: rows of one class of a single-table hierarchy (empty without a filter)."""
        if class_filter is None:
            return ""
        column, count = class_filter
        return f" AND {prefix}{self.q(column)} IN (" + ", ".join([self.placeholder] * count) + ")"

    def update_many(
        self,
        table: str | tuple[str, ...],
        set_cols: Sequence[str],
        pk_cols: Sequence[str],
        nrows: int,
        sql_types: dict[str, str],
        class_filter: ClassFilter = None,
        guard_cols: Sequence[str] = (),
        exprs: Exprs = (),
    ) -> str:
        """One UPDATE of ``nrows`` rows; each row binds its primary-key columns, then the set columns;
        the class filter's values come last. ``guard_cols`` (compare-and-swap): each row binds, between
        its key and its set values, the values these columns must still hold for the row to be updated.
        ``exprs``: more ``SET`` clauses computed from the stored row (see :meth:`set_exprs`)."""
        if guard_cols:
            return self._guarded_update_many(
                table, set_cols, pk_cols, nrows, sql_types, guard_cols, class_filter, exprs
            )
        cols = [*pk_cols, *set_cols]
        names = [f"c{i}" for i in range(len(cols))]
        pairs = list(zip(cols, names, strict=True))
        t = self.q(table)
        if self.name == "postgres":
            # VALUES columns are typed from the first row: cast it, the other rows follow.
            first = "(" + ", ".join(f"CAST({self.placeholder} AS {sql_types[c]})" for c in cols) + ")"
            rest = [self.row(len(cols))] * (nrows - 1)
            values = ", ".join([first, *rest])
            sets = ", ".join(f"{self.q(c)} = v.{n}" for c, n in pairs if c in set_cols)
            sets += self.set_exprs(exprs, table)
            on = " AND ".join(f"{t}.{self.q(c)} = v.{n}" for c, n in pairs if c in pk_cols)
            on += self.class_in(class_filter, f"{t}.")
            return f"UPDATE {t} SET {sets} FROM (VALUES {values}) AS v ({', '.join(names)}) WHERE {on}"
        if self.name == "mysql":
            first = "SELECT " + ", ".join(f"{self.placeholder} AS {n}" for n in names)
            rest = ["SELECT " + ", ".join([self.placeholder] * len(cols))] * (nrows - 1)
            derived = " UNION ALL ".join([first, *rest])
            on = " AND ".join(f"{t}.{self.q(c)} = v.{n}" for c, n in pairs if c in pk_cols)
            sets = ", ".join(f"{t}.{self.q(c)} = v.{n}" for c, n in pairs if c in set_cols)
            sets += self._mysql_exprs(exprs, table)
            on += self.class_in(class_filter, f"{t}.")
            return f"UPDATE {t} JOIN ({derived}) AS v ON {on} SET {sets}"
        # SQLite >= 3.33: UPDATE ... FROM
        values = ", ".join([self.row(len(cols))] * nrows)
        sets = ", ".join(f"{self.q(c)} = v.{n}" for c, n in pairs if c in set_cols)
        sets += self.set_exprs(exprs, table)
        on = " AND ".join(f"{t}.{self.q(c)} = v.{n}" for c, n in pairs if c in pk_cols)
        on += self.class_in(class_filter, f"{t}.")
        select = "SELECT " + ", ".join(f"column{i + 1} AS {n}" for i, n in enumerate(names))
        return f"UPDATE {t} SET {sets} FROM ({select} FROM (VALUES {values})) AS v WHERE {on}"

    def _guarded_update_many(
        self,
        table: str | tuple[str, ...],
        set_cols: Sequence[str],
        pk_cols: Sequence[str],
        nrows: int,
        sql_types: dict[str, str],
        guard_cols: Sequence[str],
        class_filter: ClassFilter = None,
        exprs: Exprs = (),
    ) -> str:
        # update_many with guards: the same statement shapes, with value names by role (a guarded column
        # is usually also a set column, so names cannot be found by column).
        roles = [("k", c) for c in pk_cols] + [("g", c) for c in guard_cols] + [("s", c) for c in set_cols]
        names = [f"c{i}" for i in range(len(roles))]
        named = [(r, c, n) for (r, c), n in zip(roles, names, strict=True)]
        t = self.q(table)
        on = " AND ".join(f"{t}.{self.q(c)} = v.{n}" for r, c, n in named if r != "s")
        on += self.class_in(class_filter, f"{t}.")
        if self.name == "mysql":
            sets = ", ".join(f"{t}.{self.q(c)} = v.{n}" for r, c, n in named if r == "s")
            sets += self._mysql_exprs(exprs, table)
            first = "SELECT " + ", ".join(f"{self.placeholder} AS {n}" for n in names)
            rest = ["SELECT " + ", ".join([self.placeholder] * len(names))] * (nrows - 1)
            return f"UPDATE {t} JOIN ({' UNION ALL '.join([first, *rest])}) AS v ON {on} SET {sets}"
        sets = ", ".join(f"{self.q(c)} = v.{n}" for r, c, n in named if r == "s")
        sets += self.set_exprs(exprs, table)
        if self.name == "postgres":
            first = "(" + ", ".join(f"CAST({self.placeholder} AS {sql_types[c]})" for _, c in roles) + ")"
            values = ", ".join([first, *[self.row(len(names))] * (nrows - 1)])
            return f"UPDATE {t} SET {sets} FROM (VALUES {values}) AS v ({', '.join(names)}) WHERE {on}"
        values = ", ".join([self.row(len(names))] * nrows)
        select = "SELECT " + ", ".join(f"column{i + 1} AS {n}" for i, n in enumerate(names))
        return f"UPDATE {t} SET {sets} FROM ({select} FROM (VALUES {values})) AS v WHERE {on}"

    def _mysql_exprs(self, exprs: Exprs, table: str | tuple[str, ...]) -> str:
        # A multi-table UPDATE assigns left to right: the expressions read columns the SET list has not
        # changed yet only if no set column feeds them (a version counter reads only itself).
        t = self.q(table)
        return "".join(f", {t}.{self.q(c)} = {tpl.format(col=f'{t}.{self.q(c)}')}" for c, tpl in exprs)

    # -- UPSERT -----------------------------------------------------------------------------------

    def upsert(
        self,
        table: str | tuple[str, ...],
        columns: Sequence[str],
        nrows: int,
        conflict_cols: Sequence[str],
        update_cols: Sequence[str],
        exprs: Exprs = (),
    ) -> str:
        """A multi-row INSERT that updates ``update_cols`` of rows whose ``conflict_cols`` already exist
        (and sets ``exprs``, computed from the existing row, see :meth:`set_exprs`, when it updates)."""
        insert = self.insert(table, columns, nrows)
        if self.name == "mysql":
            if update_cols:
                # The expressions first: MariaDB assigns left to right, and "{col}" means the old value.
                sets = "".join(f"{self.q(c)} = {tpl.format(col=self.q(c))}, " for c, tpl in exprs)
                sets += ", ".join(f"{self.q(c)} = VALUES({self.q(c)})" for c in update_cols)
            else:  # keep the existing row as it is
                c = self.q(conflict_cols[0])
                sets = f"{c} = {c}"
            return f"{insert} ON DUPLICATE KEY UPDATE {sets}"
        target = ", ".join(self.q(c) for c in conflict_cols)
        if not update_cols:
            return f"{insert} ON CONFLICT ({target}) DO NOTHING"
        sets = ", ".join(f"{self.q(c)} = excluded.{self.q(c)}" for c in update_cols)
        sets += self.set_exprs(exprs, table)
        return f"{insert} ON CONFLICT ({target}) DO UPDATE SET {sets}"

    # -- SELECT / DELETE by key --------------------------------------------------------------------

    def key_in(self, columns: Sequence[str], nrows: int, prefix: str = "") -> str:
        """``k IN (?, ?)`` or ``(k1, k2) IN ((?, ?), (?, ?))`` for ``nrows`` keys."""
        if len(columns) == 1:
            return f"{prefix}{self.q(columns[0])} IN (" + ", ".join([self.placeholder] * nrows) + ")"
        cols = "(" + ", ".join(f"{prefix}{self.q(c)}" for c in columns) + ")"
        return f"{cols} IN (" + ", ".join([self.row(len(columns))] * nrows) + ")"

    def count_keys(self, table: str | tuple[str, ...], columns: Sequence[str], nrows: int) -> str:
        """How many rows of ``table`` have one of ``nrows`` given keys."""
        return f"SELECT COUNT(*) FROM {self.q(table)} WHERE {self.key_in(columns, nrows)}"

    def delete_keys(
        self,
        table: str | tuple[str, ...],
        columns: Sequence[str],
        nrows: int,
        class_filter: ClassFilter = None,
    ) -> str:
        """``DELETE FROM t WHERE key IN (...)`` (then the class filter's values)."""
        return f"DELETE FROM {self.q(table)} WHERE {self.key_in(columns, nrows)}{self.class_in(class_filter)}"

    def delete_links(
        self,
        link_table: str | tuple[str, ...],
        link_columns: Sequence[str],
        table: str | tuple[str, ...],
        pk_cols: Sequence[str],
        nrows: int,
        class_filter: ClassFilter,
    ) -> str:
        """Delete the link rows of ``nrows`` keys that are rows of the filtered class."""
        if class_filter is None:
            return self.delete_keys(link_table, link_columns, nrows)
        cols = ", ".join(self.q(c) for c in link_columns)
        target = f"({cols})" if len(link_columns) > 1 else cols
        select = (
            f"SELECT {', '.join(self.q(c) for c in pk_cols)} FROM {self.q(table)} "
            f"WHERE {self.key_in(pk_cols, nrows)}{self.class_in(class_filter)}"
        )
        return f"DELETE FROM {self.q(link_table)} WHERE {target} IN ({select})"

    def select_keys_of(self, sql: str, columns: Sequence[str]) -> str:
        """The key columns of the rows a query selects (the query becomes a derived table)."""
        cols = ", ".join(f"q.{self.q(c)}" for c in columns)
        return f"SELECT {cols} FROM ({sql}) q"

    def select_by_keys(
        self, table: str | tuple[str, ...], columns: Sequence[str], key_cols: Sequence[str], nrows: int
    ) -> str:
        """``SELECT cols FROM t WHERE key IN (...)``: ``columns`` of the rows with one of ``nrows`` keys."""
        cols = ", ".join(self.q(c) for c in columns)
        return f"SELECT {cols} FROM {self.q(table)} WHERE {self.key_in(key_cols, nrows)}"


def dialect_of(db: Database) -> Dialect:
    """The :class:`Dialect` of a bound Database (SQLite, PostgreSQL or MySQL/MariaDB)."""
    name = _pony.dialect(db)
    if name == "cockroach":
        name = "postgres"
    if name not in ("sqlite", "postgres", "mysql"):
        raise UnsupportedDatabase(
            f"ponykit bulk writes support SQLite, PostgreSQL and MySQL/MariaDB, not {name}: use Pony's own "
            "writes (Entity(...), obj.set(...), obj.delete()) on this database"
        )
    return Dialect(
        name=name, placeholder=_pony.positional_placeholder(db), max_params=_pony.max_params(db), db=db
    )


def escape_dollars(sql: str) -> str:
    """``sql`` with every ``$`` doubled, for text that goes through Pony's raw-SQL parser.

    Pony's ``raw_sql()`` (and ``db.select``/``db.execute``) evaluate ``$name`` and ``$(expr)`` as Python
    and turn ``$$`` back into one ``$``: an identifier (table, column, alias) put into such text
    must be escaped so that a ``$`` in it is never run as code.
    """
    return sql.replace("$", "$$")
