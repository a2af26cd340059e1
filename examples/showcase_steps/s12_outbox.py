"""12 transactional outbox: events sent for committed orders only, in order per key, effects applied once.

``publish()`` writes the event in the order's own transaction, so a rolled-back order sends nothing; a
relay sends committed events and marks them after the broker confirmed (here an in-process broker; in
production ``python -m ponykit outbox relay app.models:db --to amqp://...``); the consumer's
``inbox(db).once(message.id)`` makes a redelivered event harmless.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable

from pony.orm import Database, Required, db_session, flush

import ponykit as pk
from ponykit.outbox import InMemoryPublisher, Message, Relay, enqueue_on_commit, inbox, publish


def run(workdir: pathlib.Path, say: Callable[[str], None]) -> None:
    """Run the step in ``workdir``, narrating through ``say``."""
    db = Database()

    class Order(db.Entity):
        customer = Required(str, 40)
        total = Required(int)

    class Shipment(db.Entity):  # the consumer's side effect
        order_id = Required(int)

    pk.bind_url(db, f"sqlite:///{workdir / 'shop.db'}?create_db=1")
    pk.attach(db, outbox=True, inbox=True)
    db.generate_mapping(create_tables=True)

    for customer, total, pays in [("ann", 40, True), ("bob", 7, False), ("ann", 12, True), ("cid", 99, True)]:
        try:
            with db_session:
                order = Order(customer=customer, total=total)
                flush()
                publish("orders.placed", {"order": order.id, "total": total}, key=customer)
                if not pays:
                    raise RuntimeError("payment refused")
        except RuntimeError:
            say(f"{customer}'s order of {total} rolled back: its event rolled back with it")

    broker = InMemoryPublisher()  # records what it is sent; a real broker confirms instead
    relay = Relay(db, broker)
    say(f"the relay sent {relay.run_once()} events, each marked sent after the broker confirmed it")
    for message in broker.messages:
        say(f"  {message.topic} key={message.key}: {message.payload.decode()}")

    handled: list[str] = []

    def handle(message: Message) -> None:
        with db_session, inbox(db).once(message.id) as fresh:
            if fresh:
                Shipment(order_id=json.loads(message.payload)["order"])
            handled.append("applied" if fresh else "skipped")

    for message in [*broker.messages, broker.messages[0]]:  # the broker delivers the first one twice
        handle(message)
    with db_session:
        shipments = Shipment.select().count()
    say(
        f"the consumer saw {len(handled)} deliveries ({handled.count('skipped')} skipped by the inbox): "
        f"{shipments} shipments"
    )

    sent: list[str] = []

    def send_receipt(order_id: int) -> str:  # stands for a Celery task's .delay / an RQ enqueue
        sent.append(f"receipt for order {order_id}")
        return f"task-{len(sent)}"

    with db_session:  # for Celery/RQ/dramatiq users who accept at-most-once: sent after COMMIT only
        order = Order(customer="dee", total=5)
        flush()
        future = enqueue_on_commit(send_receipt, order.id)
        say(f"enqueue_on_commit inside the transaction: nothing sent yet ({len(sent)} sent)")
    say(f"after COMMIT it sent the task: {sent[0]}, id {future.result(timeout=5)}")
    db.disconnect()
