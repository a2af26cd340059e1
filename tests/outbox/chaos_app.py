"""The application of the outbox chaos test (tests/outbox/test_chaos.py): its models, its plan, its producer.

Two roles, both configured by environment variables so that separate processes can run them:

* **an app module** the relay CLI imports: ``python -m ponykit outbox relay chaos_app:db --to URL`` binds
  ``db`` to ``PONYKIT_CHAOS_DB``, attaches the outbox and maps, as an application's models module does;
* **the producer**: ``python chaos_app.py START`` runs the steps of the plan from index ``START`` on.
  Each step is one business transaction per approach, each writing a ``ChaosOrder`` row and sending one
  event for it in its own way, to its own topic:

  - ``outbox``: :func:`ponykit.outbox.publish` in the transaction (the relay sends it later);
  - ``in_tx``: the publisher called inside the transaction, before COMMIT (the "naive ``delay()``");
  - ``on_commit``: the publisher called from :func:`ponykit.on_commit` after COMMIT (at most once).

  30% of the steps roll back (all three transactions). At a few committed steps the producer kills itself
  with SIGKILL right after the last COMMIT of the step (an on_commit hook registered before the send), as
  a crashed web worker would die: the test restarts it after that step. It prints each finished step.

Variables: ``PONYKIT_CHAOS_DB`` (database URL), ``PONYKIT_CHAOS_BROKER`` (publisher URL, for the naive
approaches), ``PONYKIT_CHAOS_PREFIX`` (topics are ``PREFIX.APPROACH``), ``PONYKIT_CHAOS_SEED``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import uuid
from dataclasses import dataclass
from typing import Any

from pony.orm import Database, PrimaryKey, Required, db_session

import ponykit as pk

__all__ = ["KEYS", "ROLLED_BACK", "TRANSACTIONS", "Step", "build", "plan", "produce"]

TRANSACTIONS = 1_000  # the figures the issue asks for: 1,000 business transactions ...
ROLLED_BACK = 300  # ... 30% of them rolled back
KEYS = ("alpha", "bravo", "charlie", "delta", "echo")  # events of one key must arrive in order
PRODUCER_KILLS = 6  # the producer dies right after a COMMIT this many times per run
APPROACHES = ("outbox", "in_tx", "on_commit")


@dataclass(frozen=True)
class Step:
    """One business transaction of the plan: its index, its key, its per-key sequence number."""

    n: int
    key: str
    seq: int
    rollback: bool
    kill_after_commit: bool


def plan(seed: int) -> list[Step]:
    """The seeded plan every approach runs: the same keys, rollbacks and producer crashes."""
    rng = random.Random(seed)
    rolled_back = set(rng.sample(range(TRANSACTIONS), ROLLED_BACK))
    committed = [n for n in range(TRANSACTIONS) if n not in rolled_back]
    # Crashes spread over the run (not in the first or last few transactions), one per slice.
    slices = [
        committed[len(committed) * i // PRODUCER_KILLS : len(committed) * (i + 1) // PRODUCER_KILLS]
        for i in range(PRODUCER_KILLS)
    ]
    kills = {rng.choice(s[5:-5]) for s in slices}
    counters = dict.fromkeys(KEYS, 0)
    steps = []
    for n in range(TRANSACTIONS):
        key = rng.choice(KEYS)
        counters[key] += 1
        steps.append(Step(n, key, counters[key], n in rolled_back, n in kills))
    return steps


def build(url: str, *, create_tables: bool) -> Database:
    """A Database with the chaos models, bound to ``url``, attached with the outbox and the inbox, mapped."""
    database = Database()

    class ChaosOrder(database.Entity):  # the business row of one transaction
        approach = Required(str, 20)
        n = Required(int)
        key = Required(str, 20)
        seq = Required(int)
        PrimaryKey(approach, n)

    class ChaosEffect(database.Entity):  # a consumer's side effect: one per applied delivery
        approach = Required(str, 20)
        n = Required(int)
        message_id = Required(str, 64)

    pk.bind_url(database, url)
    pk.attach(database, outbox=True, inbox=True)
    database.generate_mapping(create_tables=create_tables, check_tables=False)
    return database


class _Rollback(Exception):
    """Raised to roll a planned transaction back."""


def produce(database: Database, start: int, *, topics: dict[str, str], seed: int, publisher: Any) -> None:
    """Run the plan's steps from ``start`` on, each as one transaction per approach (see the docstring)."""
    from ponykit.outbox import Message, publish

    order = database.entities["ChaosOrder"]

    def send(step: Step, topic: str) -> None:
        body = json.dumps({"n": step.n, "key": step.key, "seq": step.seq}).encode()
        publisher.publish([Message(id=str(uuid.uuid4()), topic=topic, payload=body, key=step.key)])

    def send_after_commit(step: Step) -> None:
        try:
            send(step, topics["on_commit"])
        except Exception as exc:  # what an on_commit hook does with a broker that is down: log, go on
            print(f"on_commit send of {step.n} failed: {type(exc).__name__}", file=sys.stderr)

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    for step in plan(seed)[start:]:
        for approach in APPROACHES:  # on_commit last: the crash comes right after its COMMIT
            try:
                with db_session:
                    order(approach=approach, n=step.n, key=step.key, seq=step.seq)
                    if approach == "outbox":
                        payload = {"n": step.n, "key": step.key, "seq": step.seq}
                        publish(topics["outbox"], payload, key=step.key, db=database)
                    elif approach == "in_tx":
                        send(
                            step, topics["in_tx"]
                        )  # before COMMIT: a broker that is down fails the transaction
                    else:
                        if step.kill_after_commit:
                            pk.on_commit(die, db=database)  # registered first: runs right after COMMIT
                        pk.on_commit(lambda step=step: send_after_commit(step), db=database)
                    if step.rollback:
                        raise _Rollback
            except _Rollback:
                pass
            except Exception as exc:  # in_tx with the broker down: the business transaction failed
                print(f"{approach} transaction {step.n} failed: {exc}", file=sys.stderr)
        print(step.n, flush=True)


def _from_environment() -> Database | None:
    url = os.environ.get("PONYKIT_CHAOS_DB")
    return build(url, create_tables=False) if url else None


db = _from_environment()  # what ``python -m ponykit outbox relay chaos_app:db`` imports


if __name__ == "__main__":
    from ponykit.outbox._publishers import publisher_from_url

    assert db is not None, "set PONYKIT_CHAOS_DB"
    prefix = os.environ["PONYKIT_CHAOS_PREFIX"]
    produce(
        db,
        int(sys.argv[1]),
        topics={approach: f"{prefix}.{approach}" for approach in APPROACHES},
        seed=int(os.environ["PONYKIT_CHAOS_SEED"]),
        publisher=publisher_from_url(os.environ["PONYKIT_CHAOS_BROKER"]),
    )
