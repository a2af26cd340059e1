"""``python -m ponykit``: command-line tools.

``python -m ponykit rotate-keys myapp.models:db [--entity User] [--attr email] [--batch-size 1000]``
imports ``myapp.models`` (which must bind, attach with its key ring, and map the Database, as the app
does at start-up), then re-encrypts every encrypted value not under the ring's primary key, with a
progress bar on stderr. The target may also name one entity: ``myapp.models:User``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from pony.orm import Database

from . import _pony
from .errors import PonykitError
from .security.rotation import RotationProgress, rotate_keys

__all__ = ["ProgressBar", "main"]


class ProgressBar:
    """A one-line text progress bar for :class:`RotationProgress` reports."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.start = time.monotonic()

    def __call__(self, report: RotationProgress) -> None:
        """Redraw the bar."""
        total = max(report.total, 1)
        filled = int(self.width * min(report.done, total) / total)
        rate = report.done / max(time.monotonic() - self.start, 1e-9)
        self.stream.write(
            f"\r{report.entity}.{report.attribute} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"{report.done}/{report.total} ({rate:,.0f} values/s)"
        )
        self.stream.flush()

    def finish(self) -> None:
        """End the line."""
        self.stream.write("\n")
        self.stream.flush()


def _load(target: str) -> Any:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"target must be module:name (for example myapp.models:db), got {target!r}")
    sys.path.insert(0, ".")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"module {module_name} has no attribute {attr!r}") from None


def _entities(obj: Any, names: Sequence[str]) -> list[Any]:
    if isinstance(obj, Database):
        entities = _pony.entities_of(obj)
        if names:
            missing = [n for n in names if n not in entities]
            if missing:
                raise SystemExit(f"no entity named {missing[0]!r} (entities: {', '.join(sorted(entities))})")
            return [entities[n] for n in names]
        return [e for e in entities.values() if _has_encrypted(e)]
    return [obj]


def _has_encrypted(entity: Any) -> bool:
    for name in _pony.entity_info(entity).column_attrs:
        if hasattr(_pony.attribute_converter(_pony.entity_attribute(entity, name)), "reencrypt"):
            return True
    return False


def _rotate(args: argparse.Namespace) -> int:
    target = _load(args.target)
    attrs = args.attr or None
    total = 0
    for entity in _entities(target, args.entity or []):
        bar = ProgressBar(sys.stderr)
        done = rotate_keys(entity, attrs, batch_size=args.batch_size, progress=bar)
        if done:
            bar.finish()
        total += done
        print(f"{entity.__name__}: {done} values re-encrypted")
    print(f"done: {total} values re-encrypted")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ponykit`` and of the ``ponykit`` console script."""
    parser = argparse.ArgumentParser(prog="ponykit", description="ponykit command-line tools")
    commands = parser.add_subparsers(dest="command", required=True)
    rotate = commands.add_parser(
        "rotate-keys", help="re-encrypt encrypted attributes under the key ring's primary key"
    )
    rotate.add_argument("target", help="module:db or module:Entity (the module binds, attaches and maps)")
    rotate.add_argument("--entity", action="append", help="only this entity (repeatable)")
    rotate.add_argument("--attr", action="append", help="only this attribute (repeatable)")
    rotate.add_argument("--batch-size", type=int, default=1000, help="rows per committed batch")
    args = parser.parse_args(argv)
    try:
        return _rotate(args)
    except PonykitError as exc:
        print(f"ponykit: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
