"""Row-level security DDL and checks: ``enable_rls``, ``setting_equals`` and ``check_rls`` (PostgreSQL).

``enable_rls(Entity, using=...)`` writes the statements that turn RLS on for an entity's table and create
its policy; ``setting_equals`` writes a policy condition in the ``(select current_setting(...))`` form,
which PostgreSQL evaluates once per statement (an InitPlan) instead of once per row. ``check_rls(db)``
reports tables whose RLS is off or not forced, and a connecting role that would bypass RLS anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pony.orm import Database

from .. import _pony
from ..errors import ConfigurationError, OptionError
from .rls import normalize_setting_name, rls_housekeeping

__all__ = ["RLSProblem", "RLSReport", "SettingEquals", "check_rls", "enable_rls", "setting_equals"]

_COMMANDS = ("ALL", "SELECT", "INSERT", "UPDATE", "DELETE")
# A SQL type name for a cast: words, digits, spaces, brackets and a precision ("numeric(10, 2)").
_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_ ]*(\([0-9, ]+\))?(\[\])?")


@dataclass(frozen=True)
class SettingEquals:
    """A policy condition ``column = (select nullif(current_setting(setting, true), '')::type)``.

    Made by :func:`setting_equals`; rendered by :func:`enable_rls` for an entity (the attribute's column
    comes from Pony's mapping). An unset or empty setting makes the condition NULL: no row matches.
    """

    attribute: str
    setting: str
    type: str | None = None

    def sql(self, entity: Any) -> str:
        """The condition for ``entity``'s table."""
        db = _pony.database_of(entity)
        try:
            columns = _pony.attr_columns(entity, self.attribute)
        except AttributeError:
            raise OptionError(
                f"setting_equals({self.attribute!r}, ...): entity {entity.__name__} has no attribute "
                f"{self.attribute!r}; give the name of the attribute holding the tenant (or user) key"
            ) from None
        if len(columns) != 1:
            raise OptionError(
                f"setting_equals({self.attribute!r}, ...): {entity.__name__}.{self.attribute} is stored "
                f"in {len(columns)} columns; give a one-column attribute, or write the condition as SQL"
            )
        value = f"nullif(current_setting({_literal(self.setting)}, true), '')"
        if self.type is not None:
            value += f"::{self.type}"
        return f"{_pony.quote_name(db, columns[0])} = (select {value})"


def setting_equals(attribute: str, setting: str, *, type: str | None = None) -> SettingEquals:
    """A policy condition: the attribute's column equals the setting (``"tenant_id"``: ``app.tenant_id``).

    ``type`` casts the setting's text (``"integer"``, ``"uuid"``, ``"bigint"``); without it the column is
    compared with text. ``enable_rls(Order, using=setting_equals("tenant", "tenant_id",
    type="integer"))`` gives ``"tenant" = (select nullif(current_setting('app.tenant_id', true),
    '')::integer)``.
    """
    if not isinstance(attribute, str) or not attribute:
        raise OptionError(f"setting_equals() takes an attribute name first, got {attribute!r}")
    name = normalize_setting_name(setting)
    if type is not None and (not isinstance(type, str) or not _TYPE.fullmatch(type.strip())):
        raise OptionError(
            f"setting_equals(type=...) takes a SQL type name such as 'integer', 'bigint' or 'uuid', got "
            f"{type!r}"
        )
    return SettingEquals(attribute, name, None if type is None else type.strip())


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _condition(entity: Any, value: str | SettingEquals | None, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, SettingEquals):
        return value.sql(entity)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise OptionError(
        f"enable_rls({entity.__name__}, {what}=...) takes SQL text or setting_equals(...), got "
        f"{type(value).__name__}"
    )


def enable_rls(
    entity: Any,
    *,
    using: str | SettingEquals | None,
    check: str | SettingEquals | None = None,
    force: bool = True,
    policy_name: str | None = None,
    command: str = "ALL",
    role: str | None = None,
    apply: bool = False,
) -> list[str]:
    """The DDL that puts ``entity``'s table under row-level security with one policy (PostgreSQL).

    Returns the statements: ``ALTER TABLE ... ENABLE ROW LEVEL SECURITY``, ``... FORCE ROW LEVEL
    SECURITY`` (with ``force``: the table's owner is bound by the policy too), ``DROP POLICY IF EXISTS``
    and ``CREATE POLICY name ON table [AS PERMISSIVE] FOR command [TO role] USING (using) WITH CHECK
    (check)``. ``using`` filters the rows a statement sees (and may update or delete), ``check`` the rows
    it may write (PostgreSQL uses ``using`` when it is omitted). Both are SQL text or
    :func:`setting_equals`. ``command`` is ALL, SELECT, INSERT, UPDATE or DELETE; ``policy_name``
    defaults to ``<table>_<command>_rls``. With ``apply=True`` the statements also run in the current
    ``db_session`` (as the Database's role, which must own the table). Migrations do not exist yet: put
    the statements in your schema scripts.
    """
    if not _pony.is_entity_class(entity):
        raise OptionError(f"enable_rls() takes an entity class first, got {type(entity).__name__}")
    db = _pony.database_of(entity)
    if db.provider is not None and _pony.dialect(db) != "postgres":
        raise ConfigurationError(
            f"enable_rls({entity.__name__}): row-level security needs PostgreSQL, and the "
            f"{_pony.describe_database(db)} is not one; on other databases use ponykit.security policies"
        )
    command = command.upper() if isinstance(command, str) else command
    if command not in _COMMANDS:
        raise OptionError(f"enable_rls(command=...) takes one of {', '.join(_COMMANDS)}, got {command!r}")
    using_sql = _condition(entity, using, "using")
    check_sql = _condition(entity, check, "check")
    if command == "INSERT" and using_sql is not None:
        raise OptionError(
            f"enable_rls({entity.__name__}, command='INSERT'): an INSERT policy has no USING condition; "
            "pass using=None and check=..."
        )
    if command in ("SELECT", "DELETE") and check_sql is not None:
        raise OptionError(
            f"enable_rls({entity.__name__}, command={command!r}): a {command} policy has no WITH CHECK "
            "condition; leave check out"
        )
    if using_sql is None and check_sql is None:
        raise OptionError(f"enable_rls({entity.__name__}): give using=... (and/or check=...)")
    table_name = _pony.entity_table(entity)
    table = _pony.quote_name(db, table_name)
    plain = _pony.table_key(table_name)
    name = policy_name or f"{plain}_{command.lower()}_rls"[:63]
    policy = _pony.quote_name(db, name)
    statements = [f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"]
    if force:
        statements.append(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    create = f"CREATE POLICY {policy} ON {table} FOR {command}"
    if role is not None:
        create += f" TO {_pony.quote_name(db, role)}"
    if using_sql is not None:
        create += f" USING ({using_sql})"
    if check_sql is not None:
        create += f" WITH CHECK ({check_sql})"
    statements += [f"DROP POLICY IF EXISTS {policy} ON {table}", create]
    if apply:
        if not _pony.in_db_session():
            raise ConfigurationError(
                f"enable_rls({entity.__name__}, apply=True) runs its statements in the current db_session: "
                "call it inside `with db_session:` (or take the returned SQL to your schema scripts)"
            )
        with rls_housekeeping():
            for sql in statements:
                _pony.execute_in_session(db, sql, None)
    return statements


# ---------------------------------------------------------------------------------------------------------
# check_rls


@dataclass(frozen=True)
class RLSProblem:
    """One finding of :func:`check_rls`: ``kind`` (``"rls_disabled"``, ``"rls_not_forced"``,
    ``"no_policy"``, ``"missing_table"``, ``"role_owns_table"``, ``"role_is_superuser"``,
    ``"role_bypasses_rls"``), the ``table`` it is about (None for the role's own attributes) and a
    ``detail`` saying why it matters and what to do."""

    kind: str
    table: str | None
    detail: str

    def __str__(self) -> str:
        where = f"{self.table}: " if self.table else ""
        return f"{where}{self.kind}: {self.detail}"


@dataclass(frozen=True)
class RLSReport:
    """What :func:`check_rls` found for a Database: ``role`` (the connecting role), ``tables`` (checked,
    by name) and ``problems`` (empty when every table is protected and the role cannot bypass RLS)."""

    role: str
    tables: tuple[str, ...]
    problems: list[RLSProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there is no problem."""
        return not self.problems

    def __str__(self) -> str:
        head = f"row-level security for role {self.role!r} on {len(self.tables)} table(s): "
        if self.ok:
            return head + "ok"
        return head + f"{len(self.problems)} problem(s)\n" + "\n".join(f"- {p}" for p in self.problems)


_TABLE_SQL = (
    "SELECT c.relrowsecurity, c.relforcerowsecurity, pg_has_role(current_user, c.relowner, 'USAGE'), "
    "(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) "
    "FROM pg_class c WHERE c.oid = to_regclass(%s)"
)


def check_rls(db: Database, *, entities: Iterable[Any] | None = None) -> RLSReport:
    """Check the row-level security of ``db``'s entity tables for the role ``db`` connects as.

    ``entities`` limits the check to the tables of these entities (tables shared by every tenant need no
    RLS); by default every entity's table is checked.

    Reports tables with RLS disabled, enabled but not forced (the owner bypasses it), or without a
    policy (nobody sees a row); and a connecting role that owns a table (or inherits from its owner),
    is a superuser or has BYPASSRLS: such a role is not bound by any policy. Runs on a side connection
    with the Database's connection arguments (no db_session needed). PostgreSQL only.
    """
    if _pony.dialect(db) != "postgres":
        raise ConfigurationError(
            f"check_rls(): row-level security needs PostgreSQL, and the {_pony.describe_database(db)} is "
            "not one"
        )
    if not _pony.is_mapped(db):
        raise ConfigurationError("check_rls(db) reads the mapping: call db.generate_mapping() first")
    tables: dict[str, Any] = {}
    chosen = list(_pony.entities_of(db).values()) if entities is None else list(entities)
    for entity in chosen:
        if not _pony.is_entity_class(entity) or _pony.database_of(entity) is not db:
            raise OptionError(f"check_rls(entities=...) takes entity classes of {db!r}, got {entity!r}")
        table_name = _pony.entity_table(entity)
        tables.setdefault(_pony.table_key(table_name), table_name)
    problems: list[RLSProblem] = []
    con = _pony.open_side_connection(db)
    try:
        cursor = con.cursor()
        cursor.execute(
            "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        role, superuser, bypass = cursor.fetchone()
        if superuser:
            problems.append(
                RLSProblem(
                    "role_is_superuser",
                    None,
                    f"role {role!r} is a superuser: it bypasses every policy; "
                    "connect the application as a role without SUPERUSER",
                )
            )
        if bypass:
            problems.append(
                RLSProblem(
                    "role_bypasses_rls",
                    None,
                    f"role {role!r} has BYPASSRLS: no policy applies to it; "
                    f"ALTER ROLE {role} NOBYPASSRLS, or connect as another role",
                )
            )
        for key, table_name in sorted(tables.items()):
            cursor.execute(_TABLE_SQL, (_pony.quote_name(db, table_name),))
            row = cursor.fetchone()
            problems += _table_problems(key, role, row)
    finally:
        con.close()
    return RLSReport(role=str(role), tables=tuple(sorted(tables)), problems=problems)


def _table_problems(table: str, role: str, row: Any) -> list[RLSProblem]:
    if row is None:
        return [RLSProblem("missing_table", table, "the table does not exist (or is not on the search_path)")]
    enabled, forced, owner, policies = row
    found = []
    if not enabled:
        found.append(
            RLSProblem(
                "rls_disabled",
                table,
                "row-level security is off: every role with SELECT sees every row; run enable_rls(...)",
            )
        )
    elif not forced:
        found.append(
            RLSProblem(
                "rls_not_forced",
                table,
                "row-level security is not forced: the table's owner bypasses "
                "it; ALTER TABLE ... FORCE ROW LEVEL SECURITY (enable_rls(force=True))",
            )
        )
    if enabled and not policies:
        found.append(RLSProblem("no_policy", table, "RLS is on but no policy exists: no row is visible"))
    if owner:
        found.append(
            RLSProblem(
                "role_owns_table",
                table,
                f"role {role!r} owns the table (or is a member of its owner): "
                "unless RLS is forced it is not bound by the policies, and it can turn them off; "
                "connect the application as a role that does not own the tables",
            )
        )
    return found
