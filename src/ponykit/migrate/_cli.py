"""``python -m ponykit migrate make|upgrade|downgrade|status|check|sql|init app.models:db``.

The target module is imported as the application does at start-up; it may bind the Database itself, or
``--url`` binds it (``ponykit.bind_url``). A bound Database that is not mapped yet is mapped with
``generate_mapping(create_tables=False, check_tables=False)``: migrations create the tables, not Pony.
``--directory`` is relative to the current directory (default ``migrations``).

Progress and results go to stdout ("Applying 0002_ab12cd add nickname ... done in 0.12 s"); an error is
one line on stderr and exit status 1 (``check``: 0 in sync, 1-4 see :mod:`ponykit.migrate._check`).
Passwords never appear: URLs are shown redacted.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import sys
from typing import Any

from pony.orm import Database, DBException

from .. import _pony
from ..binding import bind_url, parse_url, redact_url
from ..errors import ConfigurationError, PonykitError

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    """Add ``migrate ...`` to the ``python -m ponykit`` sub-commands."""
    migrate = commands.add_parser(
        "migrate", help="schema migrations: make, upgrade, downgrade, status, check"
    )
    actions = migrate.add_subparsers(dest="migrate_command", required=True)

    def action(name: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=text)
        parser.add_argument("target", help="module:db (the module declares the entities; it may bind)")
        parser.add_argument("--url", help="bind the Database to this URL (when the module does not bind)")
        parser.add_argument(
            "--directory", default="migrations", help="migrations directory (default: ./migrations)"
        )
        return parser

    make = action("make", "write the next migration from the models")
    make.add_argument("-m", "--message", default="migration", help="what the migration does (file name slug)")
    make.add_argument(
        "--rename", action="append", default=[], metavar="A.b=c", help="Entity.attr=new or Entity=New"
    )
    make.add_argument("--backfill", action="append", default=[], metavar="A.b=LITERAL", help="value for rows")
    make.add_argument("--allow-drop", action="store_true", help="allow dropping entities and attributes")
    make.add_argument("--allow-lossy", action="store_true", help="allow type changes that may lose data")
    make.add_argument("--empty", action="store_true", help="write a migration even without changes")
    for name, text, default in (
        ("upgrade", "apply migrations", "head"),
        ("downgrade", "undo migrations", "-1"),
    ):
        parser = action(name, text)
        parser.add_argument(
            "--to", default=default, metavar="REV", help=f"target revision (default {default})"
        )
        parser.add_argument("--lock-timeout", type=float, default=60.0, help="seconds to wait for the lock")
        parser.add_argument(
            "--statement-lock-timeout",
            type=float,
            default=5.0,
            help="seconds a DDL statement waits for a table",
        )
    for name, text in (("status", "list applied, pending and partial revisions"), ("check", "CI check")):
        parser = action(name, text)
        parser.add_argument("--format", choices=("text", "json"), default="text")
        if name == "check":
            parser.add_argument("--no-db", action="store_true", help="models, files and lock only")
    sql = action("sql", "print the SQL of a range of revisions (offline)")
    sql.add_argument("--dialect", choices=_pony.DIALECTS, help="default: the bound Database's")
    sql.add_argument("--from", dest="from_rev", metavar="REV", help="start after this revision")
    sql.add_argument("--to", dest="to_rev", default="head", metavar="REV", help="up to this revision")
    init = action("init", "write the first migration (or baseline an existing database)")
    init.add_argument("--from-db", action="store_true", help="the tables exist: check and record as applied")


def _load(args: argparse.Namespace, need_db: bool) -> Database:
    module_name, sep, attr = args.target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(
            f"target must be module:db (for example myapp.models:db), got {args.target!r}"
        )
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise  # a missing import inside the user's module: its traceback helps
        raise ConfigurationError(f"no module named {module_name!r} (run it from the project root)") from None
    db = getattr(module, attr, None)
    if not isinstance(db, Database):
        raise ConfigurationError(f"{module_name}.{attr} is not a pony.orm.Database (got {type(db).__name__})")
    if args.url:
        if _pony.is_bound(db):
            raise ConfigurationError(f"{args.target} is already bound by its module: drop --url")
        bind_url(db, args.url)
    if need_db and not _pony.is_bound(db):
        raise ConfigurationError(f"{args.target} is not bound: pass --url or bind it in the module")
    if _pony.is_bound(db) and not _pony.is_mapped(db):
        db.generate_mapping(create_tables=False, check_tables=False)
    return db


def _pairs(items: list[str], what: str, literal: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigurationError(f"--{what} expects Entity.attr=VALUE, got {item!r}")
        if literal:
            try:
                result[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise ConfigurationError(
                    f"--{what} {item!r}: {value!r} is not a Python literal (quote strings: {key}='text')"
                ) from None
        else:
            result[key] = value
    return result


_line = {"open": False}  # a progress line waiting for its "done in ..." (closed with "failed" on error)


def _out(text: str) -> None:
    if text:
        sys.stdout.write(text)
        sys.stdout.flush()
        _line["open"] = not text.endswith("\n")


def _dispatch(args: argparse.Namespace) -> int:
    from . import check, downgrade, init, make, sql, status, upgrade

    command = args.migrate_command
    directory = args.directory
    if command == "make":
        db = _load(args, need_db=False)
        path = make(
            db,
            args.message,
            directory=directory,
            renames=_pairs(args.rename, "rename", literal=False),
            backfill=_pairs(args.backfill, "backfill", literal=True),
            allow_drop=args.allow_drop,
            allow_lossy=args.allow_lossy,
            empty=args.empty,
        )
        _out(f"wrote {path}\n" if path is not None else "no changes: the models equal schema.lock.json\n")
        return 0
    if command in ("upgrade", "downgrade"):
        db = _load(args, need_db=True)
        function = upgrade if command == "upgrade" else downgrade
        function(
            db,
            args.to,
            directory=directory,
            lock_timeout=args.lock_timeout,
            statement_lock_timeout=args.statement_lock_timeout,
            progress=_out,
        )
        return 0
    if command == "status":
        state = status(_load(args, need_db=True), directory=directory)
        if args.format == "json":
            _out(
                json.dumps(
                    {
                        "applied": state.applied,
                        "pending": state.pending,
                        "partial": state.partial,
                        "reverting": state.reverting,
                        "heads": state.heads,
                        "current": state.current,
                        "unknown": state.unknown,
                    }
                )
                + "\n"
            )
        else:
            _out("\n".join(state.lines()) + "\n")
        return 0
    if command == "check":
        report = check(_load(args, need_db=not args.no_db), directory=directory, against_db=not args.no_db)
        if args.format == "json":
            _out(json.dumps(report.to_dict()) + "\n")
        else:
            _out("in sync\n" if report.ok else "\n".join(report.problems) + "\n")
        return report.exit_code
    if command == "sql":
        db = _load(args, need_db=False)
        _out(sql(db, dialect=args.dialect, from_rev=args.from_rev, to_rev=args.to_rev, directory=directory))
        return 0
    path = init(_load(args, need_db=args.from_db), directory=directory, from_db=args.from_db)
    _out(f"wrote {path}" + (" (recorded as applied: baseline)\n" if args.from_db else "\n"))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``migrate`` command; PonykitError becomes one line on stderr and status 1."""
    try:
        return _dispatch(args)
    except (PonykitError, DBException) as exc:
        if _line["open"]:
            _out("failed\n")
        text = " ".join(str(exc).split())
        if getattr(args, "url", None):
            text = text.replace(args.url, redact_url(args.url))
            password = parse_url(args.url)[1].get("password")
            if password:
                text = text.replace(str(password), "***")
        print(f"ponykit: {type(exc).__name__}: {text}", file=sys.stderr, flush=True)
        return 1
