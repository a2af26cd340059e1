"""``python -m ponykit outbox relay app.models:db --to URL``: run outbox relays until SIGTERM or Ctrl-C.

The module named by the target is imported first: it binds, attaches (``outbox=True``) and maps the
Database as the application does at start-up. ``--to`` takes a publisher URL (see
:func:`~ponykit.outbox.publisher_from_url`; ``amqp://``, ``redis://``, ``celery+redis://``...).
``--relays N`` runs N relays in this process (threads, each with its own broker connection): rows of one
key still go out in order, never two at once. To use more cores, start the command several times:
relays share the work through the database.

SIGTERM (``docker stop``, systemd, Kubernetes) and SIGINT (Ctrl-C) stop the relays after the batch in
flight is confirmed and marked sent; the exit status is 0 after SIGTERM and 130 after SIGINT. Progress goes
to stderr: a line when the relays start, one every ``--progress-interval`` seconds while messages flow
(count, rate), and a summary at the end. Passwords in URLs are shown as ``***``.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from pony.orm import Database

from ._message import Message, Publisher
from ._publishers import publisher_from_url

__all__ = ["add_parser", "run"]

EXIT_INTERRUPTED = 130  # the shell's status for a process ended by SIGINT


class _Counting:
    """A publisher wrapper counting the messages the broker confirmed (for the progress lines)."""

    def __init__(self, inner: Publisher, counter: Callable[[int], None]) -> None:
        self.inner = inner
        self.name = inner.name
        self._counter = counter

    def publish(self, messages: Sequence[Message]) -> None:
        self.inner.publish(messages)
        self._counter(len(messages))

    def close(self) -> None:
        self.inner.close()


def add_parser(commands: Any) -> None:
    """Add ``outbox relay`` to the ``python -m ponykit`` sub-commands."""
    outbox = commands.add_parser("outbox", help="the transactional outbox: run relays")
    actions = outbox.add_subparsers(dest="outbox_command", required=True)
    relay = actions.add_parser("relay", help="publish committed outbox rows to a broker until SIGTERM/SIGINT")
    relay.add_argument("target", help="module:db (the module binds, attaches with outbox=True and maps)")
    relay.add_argument(
        "--to", required=True, metavar="URL", help="the broker: amqp://, redis://, celery+...://"
    )
    relay.add_argument("--batch-size", type=int, default=500, help="rows per published batch (default 500)")
    relay.add_argument(
        "--poll-interval", type=float, default=1.0, help="seconds between polls when idle (default 1)"
    )
    relay.add_argument(
        "--max-attempts",
        type=int,
        default=10,
        help="failed tries after which a message the broker rejects is set aside as dead, its key blocked "
        "(default 10; 0: never)",
    )
    relay.add_argument("--relays", type=int, default=1, help="relays (threads) in this process (default 1)")
    relay.add_argument(
        "--progress-interval", type=float, default=10.0, help="seconds between progress lines (default 10)"
    )


def _load_db(target: str) -> Database:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"target must be module:name (for example myapp.models:db), got {target!r}")
    sys.path.insert(0, ".")
    module = importlib.import_module(module_name)
    db = getattr(module, attr, None)
    if not isinstance(db, Database):
        raise SystemExit(f"{target} is not a pony.orm.Database (got {type(db).__name__})")
    return db


def _say(message: str) -> None:
    print(f"ponykit outbox relay: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run ``outbox relay`` as parsed by :func:`add_parser`; return the exit status."""
    from ._relay import Relay  # the relay (and its database code) only when the command runs

    if args.relays < 1 or args.batch_size < 1:
        raise SystemExit("--relays and --batch-size must be at least 1")
    db = _load_db(args.target)
    stop = threading.Event()
    got: list[int] = []
    lock = threading.Lock()
    sent = [0]

    def count(n: int) -> None:
        with lock:
            sent[0] += n

    def on_signal(signum: int, frame: FrameType | None) -> None:
        got.append(signum)
        stop.set()

    relays = []
    publishers = [_Counting(publisher_from_url(args.to), count) for _ in range(args.relays)]
    for i, publisher in enumerate(publishers):
        name = f"relay-{i + 1}" if args.relays > 1 else None
        relays.append(
            Relay(
                db,
                publisher,
                batch_size=args.batch_size,
                poll_interval=args.poll_interval,
                name=name,
                max_attempts=args.max_attempts or None,
            )
        )
    failures: list[BaseException] = []

    def work(relay: Any) -> None:
        try:
            relay.run(stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread, which then stops all
            failures.append(exc)
            stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    threads = [
        threading.Thread(target=work, args=(r,), name=f"ponykit-relay-{i}") for i, r in enumerate(relays)
    ]
    start = last = time.monotonic()
    shown = 0
    _say(f"{args.relays} relay(s) publishing from {args.target} to {publishers[0].name}")
    try:
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            # Short joins: the main thread must come back to Python for the signal handlers to run.
            time.sleep(0.2)
            now = time.monotonic()
            if now - last >= args.progress_interval and sent[0] != shown:
                rate = (sent[0] - shown) / (now - last)
                shown, last = sent[0], now
                _say(f"{shown:,} messages published ({rate:,.0f}/s)")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        stop.set()
        for thread in threads:
            thread.join()
        for publisher in publishers:
            publisher.close()
    elapsed = max(time.monotonic() - start, 1e-9)
    _say(f"stopped: {sent[0]:,} messages published in {elapsed:,.1f}s")
    if failures:
        exc = failures[0]
        _say(f"failed: {type(exc).__name__}: {exc}")
        return 1
    return EXIT_INTERRUPTED if signal.SIGINT in got else 0
