"""An in-process publisher that records what it was given: for tests, examples and dry runs."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..errors import PublishError
from ._message import Message

__all__ = ["InMemoryPublisher"]


class InMemoryPublisher:
    """Record published messages in :attr:`messages`, in order (thread-safe).

    ``fail_next(n)`` makes the next ``n`` calls of :meth:`publish` raise
    :class:`~ponykit.errors.PublishError` without recording anything, as an unreachable broker does,
    so that a test can watch the relay keep the messages pending and retry.
    """

    name = "memory://"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[Message] = []
        self._failures = 0
        self.calls = 0

    def __repr__(self) -> str:
        return f"InMemoryPublisher({len(self._messages)} messages)"

    @property
    def messages(self) -> list[Message]:
        """A copy of the messages published so far, in publication order."""
        with self._lock:
            return list(self._messages)

    def fail_next(self, count: int = 1) -> None:
        """Make the next ``count`` calls of :meth:`publish` fail."""
        with self._lock:
            self._failures += count

    def clear(self) -> None:
        """Forget the recorded messages."""
        with self._lock:
            self._messages.clear()

    def publish(self, messages: Sequence[Message]) -> None:
        """Record ``messages`` (or fail, after :meth:`fail_next`)."""
        with self._lock:
            self.calls += 1
            if self._failures:
                self._failures -= 1
                raise PublishError(
                    f"{self.name}: failing on purpose (fail_next) with {len(messages)} messages"
                )
            self._messages.extend(messages)

    def close(self) -> None:
        """Nothing to release."""
