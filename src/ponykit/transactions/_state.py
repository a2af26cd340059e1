"""What ponykit keeps for the open transaction of a session: :class:`TxState`, on Pony's session cache.

Data only: the provider wrappers that fill it are in ``_hooks``, the public functions that read it in
``ponykit.transactions``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import _pony
from ._isolation import Mode

__all__ = ["TX_IDS", "Callback", "TxState", "tx_state"]

_STATE_ATTR = "_ponykit_tx_"
TX_IDS = itertools.count(1)  # next() on a count is atomic under the GIL: ids are unique process-wide


@dataclass
class Callback:
    fn: Callable[[], Any]
    reraise: bool


@dataclass
class TxState:
    """What ponykit tracks for the open transaction of one session cache."""

    on_commit: list[Callback] = field(default_factory=list)
    on_rollback: list[Callback] = field(default_factory=list)
    writes: dict[str, set[Any] | None] = field(default_factory=dict)
    rolled_back: bool = False
    # Statements run since the transaction began that wrote (or locked) something: a connection lost
    # after one of them loses work, one lost before any of them loses nothing.
    write_statements: int = 0
    # A read ran that may have written through a function it called: not a write for a lost connection
    # (nothing says it wrote), but the commit pins readers as after a write (ponykit.binding).
    unsure_reads: bool = False
    # Names the transaction in logs and spans; a new one after each commit or rollback in the session.
    txid: int = field(default_factory=lambda: next(TX_IDS))
    # Set by transaction(): applied at the start of every database transaction of the session.
    mode: Mode | None = None
    # Statements that put the connection's settings back before it returns to the pool.
    restore: list[str] = field(default_factory=list)
    # Work done just before COMMIT, in the transaction (the audit trail of ponykit.mixins): ``journal``
    # collects what the transaction's writes report, each ``before_commit`` step (added once) turns it
    # into statements. A step that raises fails the commit (Pony rolls back). Rollback clears both; a
    # rolled-back savepoint (or bulk call) drops the journal entries added inside it.
    journal: list[Any] = field(default_factory=list)
    before_commit: list[Callable[[TxState], None]] = field(default_factory=list)

    def has_written(self) -> bool:
        return bool(self.write_statements or self.writes)

    def record(self, entity: Any, pk: Any) -> None:
        for cls in _pony.entity_lineage(entity):
            keys = self.writes.setdefault(cls.__name__, set())
            if keys is not None:
                if pk is None:
                    self.writes[cls.__name__] = None
                else:
                    keys.add(pk)

    def record_many(self, entity: Any, pks: Iterable[Any]) -> None:
        # One lineage walk for many keys: bulk writes report 100,000s of keys per call.
        pks = pks if isinstance(pks, (list, tuple, set, frozenset)) else list(pks)
        if None in pks:
            self.record(entity, None)
            return
        for cls in _pony.entity_lineage(entity):
            keys = self.writes.setdefault(cls.__name__, set())
            if keys is not None:
                keys.update(pks)

    def take_writes(self) -> dict[str, frozenset[Any] | None]:
        writes = {name: (None if keys is None else frozenset(keys)) for name, keys in self.writes.items()}
        self.writes.clear()
        return writes


def tx_state(cache: Any, create: bool = False) -> TxState | None:
    """The transaction state kept on a session cache (made when ``create``); None without a cache."""
    if cache is None:
        return None
    state: TxState | None = cache.__dict__.get(_STATE_ATTR)
    if state is None and create:
        state = TxState()
        setattr(cache, _STATE_ATTR, state)
    return state
