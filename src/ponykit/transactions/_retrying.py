"""``retrying()``: the retry loop for a block that cannot be a function, one ``with attempt:`` per run."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType

from pony.orm import Database

from .. import _pony
from ..errors import TransactionStateError
from ._isolation import Isolation
from ._resolve import resolve_db
from ._run import Backoff, Block, Retry, transaction

__all__ = ["Attempt", "retrying"]


class Attempt:
    """One run of a :func:`retrying` loop: ``with attempt:`` runs the block in a transaction."""

    def __init__(self, loop: retrying, number: int) -> None:
        self.number = number
        self._loop = loop
        self._block: Block | None = None

    def __enter__(self) -> Attempt:
        block = Block(self._loop.db, self._loop.mode, self.number)
        block.enter()
        self._block = block
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        block = self._block
        assert block is not None, "Attempt.__exit__ without __enter__"
        try:
            block.exit(exc_type, exc, tb)
        except BaseException as error:  # noqa: BLE001 - classified: transient ones are retried
            return self._loop._failed(self.number, error)
        if exc is not None:
            return self._loop._failed(self.number, exc)
        self._loop._done = True
        return False


class retrying:
    """Retry a block that cannot be a function: ``for attempt in retrying(retry=5): with attempt: ...``.

    Each ``with attempt:`` runs the block in a transaction with the options of :class:`transaction`;
    a transient failure is swallowed, waited on and the loop goes on with the next attempt; success ends
    the loop; an ambiguous commit, a fatal error or running out of retries raises as ``transaction``
    does. ``attempt.number`` is 1 for the first run. Must be the outermost transaction.
    """

    def __init__(
        self,
        *,
        retry: int = 3,
        backoff: Backoff | None = None,
        isolation: Isolation | None = None,
        read_only: bool = False,
        deferrable: bool = False,
        timeout: float | None = None,
        db: Database | None = None,
    ) -> None:
        options = transaction(
            retry=retry,
            backoff=backoff,
            isolation=isolation,
            read_only=read_only,
            deferrable=deferrable,
            timeout=timeout,
            db=db,
        )
        self.retry = options.retry
        self.backoff = options.backoff
        self.mode = options.mode
        self._db = db
        self.db: Database
        self._done = False
        self._loop: Retry | None = None

    def __iter__(self) -> Iterator[Attempt]:
        self.db = resolve_db(self._db, "retrying()", "retrying(db=db)")
        if _pony.in_db_session():
            raise TransactionStateError(
                "retrying() inside an open db_session or transaction: a retry would run again only part of "
                "the enclosing transaction. Loop around the outermost transaction instead"
            )
        self._loop = Retry(self.retry, self.backoff, self.db)
        number = 1
        while not self._done:
            attempt = Attempt(self, number)
            yield attempt
            if attempt._block is None:
                raise TransactionStateError(
                    "a retrying() attempt was not entered: "
                    "write `for attempt in retrying(...): with attempt: ...`"
                )
            number += 1

    def _failed(self, number: int, exc: BaseException) -> bool:
        assert self._loop is not None
        decision = self._loop.failed(number, exc)
        if decision is None:
            return True  # swallow: the loop runs the next attempt
        if decision is exc:
            return False  # propagate the original exception
        raise decision from decision.__cause__
