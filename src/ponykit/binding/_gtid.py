"""MariaDB GTID positions: what a MariaDB primary's pin holds, compared the way replication applies them.

A MariaDB position (``@@gtid_binlog_pos`` on the primary, ``@@gtid_slave_pos`` on a replica) is a list of
``domain-server-seq`` triples, one per replication domain: ``"0-1-42"`` or ``"0-1-42,1-3-7"``. A replica
has applied a pin when, for every domain of the pin, its own sequence number in that domain is at least
the pin's (``MASTER_GTID_WAIT`` waits for the same). Two positions of one replication stream are then
ordered by *covering*, which the rich comparisons of :class:`Gtid` implement, so the health bookkeeping
written for PostgreSQL's WAL integers (``>=``, ``>``, ``<=``) works unchanged on them. An int compares as
the empty position (the "nothing replayed yet" start, ``-1``).
"""

from __future__ import annotations

import re
from typing import Union

__all__ = ["Gtid", "Position", "parse_gtid"]

_TRIPLE_RE = re.compile(r"(\d{1,10})-(\d{1,10})-(\d{1,20})")
_MAX_DOMAINS = 64
_MAX_U32 = 2**32 - 1
_MAX_U64 = 2**64 - 1


class Gtid:
    """A MariaDB GTID position: ``{domain: (server_id, seq_no)}``, immutable and hashable."""

    __slots__ = ("_seq", "triples")

    def __init__(self, triples: tuple[tuple[int, int, int], ...] = ()) -> None:
        seen: dict[int, tuple[int, int]] = {}
        for domain, server, seq in triples:
            if not (0 <= domain <= _MAX_U32 and 0 <= server <= _MAX_U32 and 0 <= seq <= _MAX_U64):
                raise ValueError(f"not a MariaDB GTID: {domain}-{server}-{seq} is out of range")
            if domain in seen:
                raise ValueError(f"not a MariaDB GTID position: domain {domain} appears twice")
            seen[domain] = (server, seq)
        if len(seen) > _MAX_DOMAINS:
            raise ValueError(f"a MariaDB GTID position of more than {_MAX_DOMAINS} domains")
        self.triples = tuple(sorted((d, s, n) for d, (s, n) in seen.items()))
        self._seq = {d: n for d, _s, n in self.triples}

    def covers(self, other: Position) -> bool:
        """True if a server at this position has applied everything up to ``other`` (in every domain of
        ``other``, this sequence number is at least ``other``'s)."""
        if isinstance(other, int):
            return True  # the empty position
        seq = self._seq
        return all(d in seq and seq[d] >= n for d, n in other._seq.items())

    def merged(self, other: Gtid) -> Gtid:
        """The position covering both (per domain, the higher sequence number)."""
        best = {d: (s, n) for d, s, n in self.triples}
        for d, s, n in other.triples:
            if d not in best or n > best[d][1]:
                best[d] = (s, n)
        return Gtid(tuple((d, s, n) for d, (s, n) in best.items()))

    def __ge__(self, other: Position) -> bool:
        return self.covers(other)

    def __le__(self, other: Position) -> bool:
        return _covers(other, self)

    def __gt__(self, other: Position) -> bool:
        return self.covers(other) and not _covers(other, self)

    def __lt__(self, other: Position) -> bool:
        return _covers(other, self) and not self.covers(other)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, int):
            return not self.triples
        return isinstance(other, Gtid) and self.triples == other.triples

    def __hash__(self) -> int:
        return hash(self.triples)

    def __str__(self) -> str:
        return ",".join(f"{d}-{s}-{n}" for d, s, n in self.triples)

    def __repr__(self) -> str:
        return f"Gtid({str(self)!r})"


def _covers(a: Position, b: Position) -> bool:
    if isinstance(a, Gtid):
        return a.covers(b)
    return isinstance(b, int) or not b.triples  # the empty position covers only the empty position


Position = Union[int, Gtid]  # noqa: UP007 - a runtime alias (PostgreSQL WAL integer, or a MariaDB GTID)


def parse_gtid(text: str | None) -> Gtid:
    """``"0-1-42,1-3-7"`` (a MariaDB GTID position; empty or None: nothing) -> :class:`Gtid`."""
    if not text:
        return Gtid()
    triples = []
    for part in text.replace("\n", "").split(","):
        match = _TRIPLE_RE.fullmatch(part.strip())
        if match is None:
            raise ValueError(f"not a MariaDB GTID position: {text[:60]!r}")
        triples.append((int(match.group(1)), int(match.group(2)), int(match.group(3))))
    return Gtid(tuple(triples))
