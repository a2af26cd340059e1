"""Migration files and ``schema.lock.json``: write them, load a directory of them, read and write the lock.

A migration file (``0003_a1b2c3_add_nickname.py``) is plain Python: a docstring (the message and a summary
of the operations), the imports its declarations use, ``revision``, ``down_revision`` (str, a tuple for a
merge, None for the first), ``schema_hash`` (of the snapshot after it) and ``operations``. Files are
imported by path under a private module name that is never put in ``sys.modules``, so two directories (or
two loads of one) never share modules.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ponykit.errors import MigrationError, MigrationStateError
from ponykit.migrate._graph import Graph, Migration, replay
from ponykit.migrate._render import Source, literal

__all__ = [
    "LOCK_NAME",
    "load",
    "read_lock",
    "render_migration",
    "replay",
    "slugify",
    "snapshot_hash",
    "write_lock",
    "write_migration",
]

LOCK_NAME = "schema.lock.json"
_FILE = re.compile(r"^(\d{4})_([0-9a-f]{6})_[A-Za-z0-9_]*\.py$")


def snapshot_hash(snap: dict[str, Any]) -> str:
    """``"sha256:<hex>"`` of the compact canonical JSON of ``snap`` (the one of ``_snapshot``)."""
    try:
        from ponykit.migrate._snapshot import (  # type: ignore[import-not-found,unused-ignore]
            snapshot_hash as canonical,
        )
    except ImportError:  # before the snapshot module exists: the same definition (spec)
        text = json.dumps(snap, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    return str(canonical(snap))


def slugify(message: str) -> str:
    """A file-name slug of a message: lowercase words joined by ``_``, at most 40 characters."""
    words = re.findall(r"[a-z0-9]+", message.lower())
    slug = "_".join(words)[:40].strip("_")
    return slug or "migration"


def _docstring(message: str, operations: Sequence[Any]) -> str:
    lines = [message.strip() or "(no message)", ""]
    lines += [f"- {o.describe()}" for o in operations] or ["(no operations)"]
    text = "\n".join(lines).replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    return f'"""{text}\n"""'


def render_migration(
    operations: Sequence[Any],
    message: str,
    revision: str,
    parents: Sequence[str],
    schema_hash: str,
) -> str:
    """The text of a migration file."""
    src = Source()
    bodies = [o.source(src) for o in operations]
    ops_text = "".join("    " + body.replace("\n", "\n    ") + ",\n" for body in bodies)
    down: Any = None if not parents else (parents[0] if len(parents) == 1 else tuple(parents))
    parts = [_docstring(message, operations), ""]
    for block in src.import_blocks():
        parts += [*block, ""]
    parts += [
        f"revision = {literal(revision)}",
        f"down_revision = {literal(down)}",
        f"schema_hash = {literal(schema_hash)}",
        "",
        "operations = [\n" + ops_text + "]" if bodies else "operations: list[op.Operation] = []",
        "",
    ]
    return "\n".join(parts)


def _numbers(directory: Path) -> list[int]:
    return [int(m.group(1)) for p in directory.glob("*.py") if (m := _FILE.match(p.name))]


def write_migration(
    directory: str | Path,
    operations: Iterable[Any],
    message: str,
    parents: Sequence[str] | str | None = None,
    *,
    snapshot: dict[str, Any] | None = None,
) -> Path:
    """Write a new migration file after ``parents`` and return its path.

    ``parents``: a revision, several (a merge), ``()`` for a first migration, or None for the directory's
    single head (none: a first migration; several: an error, a merge names its parents).
    ``snapshot``: the snapshot after the migration (default: the parents' replay with the operations
    applied), whose hash becomes ``schema_hash``.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    if parents is None:
        heads = load(folder).heads
        if len(heads) > 1:
            raise MigrationStateError(
                f"{folder}: several heads ({', '.join(heads)}); write a merge migration with "
                "parents=(...) (make --merge) first"
            )
        parents = heads
    parent_list = [parents] if isinstance(parents, str) else list(parents)
    ops = list(operations)
    if snapshot is None:
        snapshot = _snapshot_after(folder, parent_list, ops)
    number = max(_numbers(folder), default=0) + 1
    revision = f"{number:04d}_{secrets.token_hex(3)}"
    path = folder / f"{revision}_{slugify(message)}.py"
    text = render_migration(ops, message, revision, parent_list, snapshot_hash(snapshot))
    path.write_text(text, encoding="utf-8")
    return path


def _snapshot_after(folder: Path, parents: list[str], ops: list[Any]) -> dict[str, Any]:
    graph = load(folder)
    if len(parents) > 1:
        # a merge starts where replay would start it
        probe = Migration("<new>", tuple(parents), folder / "<new>", None, "", None, "", ())  # type: ignore[arg-type]
        snap = Graph([*graph, probe]).snapshot("<new>")
    else:
        snap = replay(graph, parents[0] if parents else None)
    for operation in ops:
        snap = operation.forwards(snap)
    return snap


def _module_name(path: Path, data: bytes) -> str:
    return "ponykit_migration_" + hashlib.sha256(str(path.resolve()).encode() + data).hexdigest()[:16]


def _load_file(path: Path) -> Migration:
    data = path.read_bytes()
    spec = importlib.util.spec_from_file_location(_module_name(path, data), path)
    if spec is None or spec.loader is None:
        raise MigrationStateError(f"{path}: cannot be imported as a migration file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except MigrationError:
        raise
    except Exception as exc:
        raise MigrationStateError(f"{path.name}: importing it failed: {type(exc).__name__}: {exc}") from exc
    revision = getattr(module, "revision", None)
    if not isinstance(revision, str) or not revision:
        raise MigrationStateError(f"{path.name}: expected a str `revision`, found {revision!r}")
    down = getattr(module, "down_revision", None)
    if down is None:
        parents: tuple[str, ...] = ()
    elif isinstance(down, str):
        parents = (down,)
    elif isinstance(down, tuple | list) and all(isinstance(p, str) for p in down):
        parents = tuple(down)
    else:
        raise MigrationStateError(
            f"{path.name}: down_revision must be a str, a tuple of str or None: {down!r}"
        )
    operations = getattr(module, "operations", None)
    if not isinstance(operations, list | tuple):
        raise MigrationStateError(f"{path.name}: expected a list `operations`, found {operations!r}")
    return Migration(
        revision=revision,
        parents=parents,
        path=path,
        module=module,
        checksum=hashlib.sha256(data).hexdigest(),
        schema_hash=getattr(module, "schema_hash", None),
        message=(module.__doc__ or "").strip().split("\n", 1)[0],
        operations=tuple(operations),
    )


def load(directory: str | Path) -> Graph:
    """The migration files of ``directory`` (``NNNN_*.py``) as a :class:`Graph` (empty if none)."""
    folder = Path(directory)
    paths = sorted(p for p in folder.glob("[0-9][0-9][0-9][0-9]_*.py")) if folder.is_dir() else []
    return Graph([_load_file(p) for p in paths])


def _canonical(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_lock(directory: str | Path, head: str | None, snapshot: dict[str, Any]) -> Path:
    """Write ``schema.lock.json``: ``{"format": 1, "head", "hash", "snapshot"}`` as canonical JSON."""
    path = Path(directory) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"format": 1, "head": head, "hash": snapshot_hash(snapshot), "snapshot": snapshot}
    path.write_text(_canonical(document), encoding="utf-8")
    return path


def read_lock(directory: str | Path) -> dict[str, Any] | None:
    """The lock document of ``directory`` (None when there is none); raises if it is not consistent."""
    path = Path(directory) / LOCK_NAME
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise MigrationStateError(f"{path}: not valid JSON ({exc}); regenerate it with make") from exc
    if not isinstance(document, dict) or document.get("format") != 1 or "snapshot" not in document:
        raise MigrationStateError(f"{path}: expected {{'format': 1, 'head', 'hash', 'snapshot'}}")
    actual = snapshot_hash(document["snapshot"])
    if document.get("hash") != actual:
        raise MigrationStateError(
            f"{path}: hash {document.get('hash')} does not match its snapshot ({actual}); the file was "
            "edited by hand: restore it or regenerate it with make"
        )
    return dict(document)
