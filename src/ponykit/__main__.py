"""``python -m ponykit``: command-line tools.

``python -m ponykit rotate-keys myapp.models:db [--entity User] [--attr email] [--batch-size 10000]``
imports ``myapp.models`` (which must bind, attach with its key ring, and map the Database, as the app
does at start-up), then re-encrypts every encrypted value not under the ring's primary key. The target
may also name one entity: ``myapp.models:User``.

Progress goes to stderr: a bar redrawn in place on a terminal, otherwise (a log file, a CI job) one line
every ``--progress-interval`` seconds (default 10) and one when each attribute is done. A second run over
the same column waits for the first (``--no-wait``: exit with status 75 instead). Ctrl-C stops after the
last committed batch and exits with status 130, saying how many values were rotated; running the command
again resumes.

``python -m ponykit migrate make|upgrade|downgrade|status|check|sql|init myapp.models:db`` runs schema
migrations (see :mod:`ponykit.migrate._cli`).

``python -m ponykit outbox relay myapp.models:db --to amqp://...`` runs outbox relays until SIGTERM or
Ctrl-C (see :mod:`ponykit.outbox._cli`).
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
from .migrate import _cli as migrate_cli
from .outbox import _cli as outbox_cli
from .security.rotation import RotationInProgress, RotationProgress, rotate_with_reports

__all__ = ["ProgressBar", "ProgressLines", "main"]

EXIT_INTERRUPTED = 130  # the shell's status for a process ended by SIGINT
EXIT_LOCKED = 75  # EX_TEMPFAIL: try again later


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


class ProgressLines:
    """Progress for a stream that is not a terminal: one line per ``interval`` seconds at most."""

    def __init__(self, stream: TextIO, interval: float = 10.0) -> None:
        self.stream = stream
        self.interval = interval
        self.start = self.last = time.monotonic()
        self.report: RotationProgress | None = None
        self.shown: RotationProgress | None = None

    def _line(self, report: RotationProgress) -> None:
        rate = report.done / max(time.monotonic() - self.start, 1e-9)
        self.stream.write(
            f"{report.entity}.{report.attribute}: {report.done}/{report.total} values ({rate:,.0f}/s)\n"
        )
        self.stream.flush()
        self.shown = report

    def __call__(self, report: RotationProgress) -> None:
        """Print a line if ``interval`` seconds passed since the last one, or the attribute changed."""
        previous, self.report = self.report, report
        now = time.monotonic()
        if previous is not None and previous.attribute != report.attribute and previous is not self.shown:
            self._line(previous)  # the last figure of the attribute just finished
        if now - self.last >= self.interval:
            self.last = now
            self._line(report)

    def finish(self) -> None:
        """The last figure, if not printed yet."""
        if self.report is not None and self.report is not self.shown:
            self._line(self.report)


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


def _rotate(args: argparse.Namespace, state: dict[str, int]) -> int:
    target = _load(args.target)
    attrs = args.attr or None
    tty = sys.stderr.isatty()
    for entity in _entities(target, args.entity or []):
        bar: ProgressBar | ProgressLines = (
            ProgressBar(sys.stderr) if tty else ProgressLines(sys.stderr, args.progress_interval)
        )

        def report(progress: RotationProgress, bar: Any = bar, before: int = state["done"]) -> None:
            state["done"] = before + progress.done  # committed: the progress call follows the commit
            bar(progress)

        def waiting(message: str) -> None:
            print(f"ponykit: {message}", file=sys.stderr, flush=True)

        # Reports that name the attribute, which the display shows (progress(done, total) does not).
        done = rotate_with_reports(
            entity, attrs, batch_size=args.batch_size, report=report, wait=not args.no_wait, on_wait=waiting
        )
        if done:
            bar.finish()
        print(f"{entity.__name__}: {done} values re-encrypted", flush=True)
    print(f"done: {state['done']} values re-encrypted", flush=True)
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
    rotate.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="rows per committed batch (default 10000, as rotate_keys)",
    )
    rotate.add_argument(
        "--progress-interval",
        type=float,
        default=10.0,
        help="seconds between progress lines when stderr is not a terminal (default 10)",
    )
    rotate.add_argument(
        "--no-wait", action="store_true", help="exit (status 75) if another run is rotating the same column"
    )
    outbox_cli.add_parser(commands)
    migrate_cli.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "migrate":
        return migrate_cli.run(args)
    if args.command == "outbox":
        try:
            return outbox_cli.run(args)
        except PonykitError as exc:
            print(f"ponykit: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    state = {"done": 0}
    try:
        return _rotate(args, state)
    except KeyboardInterrupt:
        print(
            f"\nponykit: interrupted: {state['done']} values were re-encrypted and committed before the "
            "interruption; run the same command again to rotate the rest",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_INTERRUPTED
    except RotationInProgress as exc:
        print(f"ponykit: {exc}", file=sys.stderr, flush=True)
        return EXIT_LOCKED
    except PonykitError as exc:
        print(f"ponykit: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
