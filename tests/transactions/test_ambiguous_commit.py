"""A connection lost while COMMIT is in flight: never run again. Lost before COMMIT: retried, applied once.

The fault is real. A small TCP proxy on loopback sits between Pony and the server and forwards bytes both
ways; once armed, it watches the client's stream for the COMMIT message (PostgreSQL: the simple-query
message ``Q`` holding ``COMMIT``; MariaDB: ``COM_QUERY COMMIT``), forwards it to the server, and then
closes both sockets before the answer can come back. The server does commit (it reads COMMIT before it
sees the connection go), so the client is left not knowing what the server knows: the transaction is
applied. A blind retry would apply it twice; that is what plain Pony's ``@db_session(retry=3)`` does
(peers-2.md P5), and what ``@transaction(retry=5)`` refuses to do: it raises AmbiguousCommitError after
one run.

A connection killed between two statements of the transaction (``pg_terminate_backend`` / ``KILL
CONNECTION`` from the admin connection) is the opposite case: the server rolled everything back, so the
transaction runs again and commits once.

SQLite is left out: an embedded database has no connection to lose.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from pony.orm import Database, Required, db_session, flush

import ponykit as pk

pytestmark = pytest.mark.backends("postgres", "mysql")

JOIN_TIMEOUT = 10.0
# The bytes a client sends for COMMIT (psycopg2: a simple query; PyMySQL's commit(): COM_QUERY, sequence 0).
COMMIT_MESSAGES = {
    "postgres": b"Q\x00\x00\x00\x0bCOMMIT\x00",
    "mysql": b"\x07\x00\x00\x00\x03COMMIT",
}


class CommitDropper:
    """A TCP proxy 127.0.0.1:<port> -> the server that, once armed, cuts a connection right after its COMMIT.

    ``drops`` counts the connections cut. Everything else is forwarded untouched, so a connection made
    through the proxy behaves like a direct one.
    """

    def __init__(self, upstream: tuple[str, int], commit_message: bytes) -> None:
        self.upstream = upstream
        self.message = commit_message
        self.drops = 0
        self._armed = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._spawn(self._accept)

    def arm(self) -> None:
        """Cut the next connection that sends COMMIT (once)."""
        with self._lock:
            self._armed = True

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, server]
            self._spawn(self._client_to_server, client, server)
            self._spawn(self._server_to_client, server, client)

    def _client_to_server(self, client: socket.socket, server: socket.socket) -> None:
        tail = b""  # the end of the previous chunk: a message may straddle two reads
        while True:
            try:
                chunk = client.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            seen = tail + chunk
            at = seen.find(self.message)
            with self._lock:
                cut = at >= 0 and self._armed
                if cut:
                    self._armed = False
                    self.drops += 1
            if cut:
                end = at + len(self.message) - len(tail)
                server.sendall(chunk[:end])  # the server gets COMMIT, the client never gets the answer
                break
            try:
                server.sendall(chunk)
            except OSError:
                break
            tail = seen[-len(self.message) :]
        _close(client, server)

    def _server_to_client(self, server: socket.socket, client: socket.socket) -> None:
        while True:
            try:
                chunk = server.recv(65536)
                if not chunk:
                    break
                client.sendall(chunk)
            except OSError:
                break
        _close(client, server)

    def close(self) -> None:
        _close(
            self._listener
        )  # shutdown() wakes the accept() of the listening thread; close() alone does not
        with self._lock:
            sockets = list(self._sockets)
        _close(*sockets)
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT)
        assert not any(t.is_alive() for t in self._threads), "a proxy thread did not stop"


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):  # already closed, or never connected
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def make_schema(db: Database, *, attach: bool = True, create: bool = True) -> Any:
    class Payment(db.Entity):
        note = Required(str)
        amount = Required(int)

    if attach:
        pk.attach(db)
    db.generate_mapping(create_tables=create)
    return Payment


def through(url: str, port: int, backend_name: str) -> str:
    """``url`` with its port replaced by the proxy's (and no TLS, so the proxy can read the messages)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
    query = parts.query
    if backend_name == "postgres":
        query = "&".join(filter(None, [query, "sslmode=disable", "gssencmode=disable"]))
    return urlunsplit(parts._replace(netloc=netloc, query=query))


@pytest.fixture
def admin(_admin: Any) -> Any:
    """conftest's admin connections (one per server), to kill and watch the test's connections."""
    return _admin


@pytest.fixture
def payment(db: Database) -> Any:
    """The entity on the test's Database, created directly on the server (no proxy)."""
    return make_schema(db)


@pytest.fixture
def proxy(backend: Any) -> Iterator[CommitDropper]:
    parts = urlsplit(backend.url)
    assert parts.hostname is not None and parts.port is not None
    dropper = CommitDropper((parts.hostname, parts.port), COMMIT_MESSAGES[backend.name])
    yield dropper
    dropper.close()


@pytest.fixture
def proxied(backend: Any, proxy: CommitDropper, payment: Any) -> Iterator[Any]:
    """A second Database on the same schema, connected through the proxy; yields ``(db, Payment)``."""
    database = Database()
    pk.bind_url(database, through(backend.url, proxy.port, backend.name))
    yield database, make_schema(database, create=False)
    database.disconnect()
    pk.kit.forget(database)


def own_connection_id(db: Database, backend_name: str) -> int:
    sql = "SELECT pg_backend_pid()" if backend_name == "postgres" else "SELECT CONNECTION_ID()"
    return int(db.select(sql)[0])


def wait_until_gone(admin: Any, backend_name: str, conn_id: int, *, kill: bool = False) -> None:
    """(Kill and) wait until the server has let connection ``conn_id`` go: it has then run all it got."""
    conn = admin.connection(backend_name)
    with conn.cursor() as cur:
        if backend_name == "postgres":
            if kill:
                cur.execute("SELECT pg_terminate_backend(%s)", (conn_id,))
            alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
        else:
            if kill:
                cur.execute(f"KILL CONNECTION {int(conn_id)}")
            alive = "SELECT count(*) FROM information_schema.processlist WHERE id = %s"
        deadline = time.monotonic() + JOIN_TIMEOUT
        while time.monotonic() < deadline:
            cur.execute(alive, (conn_id,))
            if cur.fetchone()[0] == 0:
                return
            time.sleep(0.005)  # polling the server: there is no event to wait on
    pytest.fail(f"the {backend_name} server kept connection {conn_id} after {JOIN_TIMEOUT:.0f} s")


def stored(payment: Any) -> list[tuple[str, int]]:
    with db_session:
        return sorted((p.note, p.amount) for p in payment.select())


def driver_error(exc: BaseException | None) -> BaseException | None:
    """The driver's own exception behind ``exc`` (through Pony's ``original_exc`` wrappers), or None."""
    while exc is not None and type(exc).__module__.split(".")[0] not in ("psycopg2", "pymysql"):
        exc = getattr(exc, "original_exc", None)
    return exc


def test_connection_lost_during_commit_is_never_run_again(
    backend: Any, payment: Any, proxied: Any, proxy: CommitDropper, admin: Any, request: pytest.FixtureRequest
) -> None:
    """COMMIT reaches the server, the answer never comes back: AmbiguousCommitError after exactly one run.

    The server did apply the transaction (read directly afterwards), which is why it must not run again.
    """
    pdb, ppayment = proxied
    runs: list[int] = []
    log: list[str] = []

    @pk.transaction(retry=5, db=pdb)
    def pay() -> None:
        runs.append(own_connection_id(pdb, backend.name))
        ppayment(note="order-1", amount=100)
        pk.on_commit(lambda: log.append("commit"), db=pdb)

    proxy.arm()
    with pytest.raises(pk.AmbiguousCommitError) as info:
        pay()
    assert len(runs) == 1  # 0 re-runs despite retry=5
    assert proxy.drops == 1
    error = info.value
    assert error.attempt == 1
    assert pk.classify_error(error) == "ambiguous"
    assert "100" not in str(error) and "order-1" not in str(error)  # no values in the message
    assert log == []  # the commit was never confirmed
    wait_until_gone(admin, backend.name, runs[0])
    assert stored(payment) == [("order-1", 100)]  # applied once; a re-run would have applied it twice
    with db_session:  # the Database works again on a new connection through the proxy
        assert pdb.select("SELECT 1") == [1]


def test_ambiguous_commit_from_a_with_block(
    backend: Any, payment: Any, proxied: Any, proxy: CommitDropper, request: pytest.FixtureRequest
) -> None:
    """``with transaction():`` (no retry) raises the same AmbiguousCommitError when its COMMIT is cut."""
    pdb, ppayment = proxied
    proxy.arm()
    with pytest.raises(pk.AmbiguousCommitError) as info, pk.transaction(db=pdb):
        ppayment(note="order-2", amount=5)
    assert info.value.attempt == 1
    assert proxy.drops == 1


def test_ambiguous_commit_error_is_caused_by_the_driver_error(
    backend: Any, payment: Any, proxied: Any, proxy: CommitDropper, request: pytest.FixtureRequest
) -> None:
    """``__cause__`` is the driver's error of the COMMIT (psycopg2/PyMySQL "connection lost"), as documented.

    Pony rolls back after a failed COMMIT and, on a broken connection, that rollback fails too
    ("connection already closed"): the COMMIT's own error is the one that says what happened.
    """
    pdb, ppayment = proxied

    @pk.transaction(retry=1, db=pdb)
    def pay() -> None:
        ppayment(note="order-4", amount=5)

    proxy.arm()
    with pytest.raises(pk.AmbiguousCommitError) as info:
        pay()
    cause = driver_error(info.value.__cause__)
    assert cause is not None, repr(info.value.__cause__)
    lost = {"postgres": "server closed the connection", "mysql": "Lost connection"}[backend.name]
    assert lost in str(cause)


def test_plain_pony_retry_runs_an_ambiguous_commit_again(
    backend: Any, payment: Any, proxy: CommitDropper
) -> None:
    """Contrast: plain Pony (no ponykit) with ``@db_session(retry=3)`` retries the cut COMMIT and pays twice.

    Pony turns the lost COMMIT into CommitException, a TransactionError, which its retry loop catches.
    """
    database = Database()
    pk.bind_url(database, through(backend.url, proxy.port, backend.name))
    ppayment = make_schema(database, attach=False, create=False)
    runs: list[int] = []

    @db_session(retry=3)
    def pay() -> None:
        runs.append(1)
        ppayment(note="order-3", amount=100)

    proxy.arm()
    try:
        pay()  # no error: the second run committed through a new connection
    finally:
        database.disconnect()
    print(f"plain Pony on {backend.name}: the function ran {len(runs)} times")
    assert proxy.drops == 1
    assert len(runs) == 2  # one re-run of a COMMIT whose outcome was unknown
    # Both runs committed: the first one's COMMIT reached the server before the connection was cut.
    assert stored(payment) == [("order-3", 100), ("order-3", 100)]


def test_connection_killed_before_commit_is_retried_and_applied_once(
    backend: Any, db: Database, payment: Any, admin: Any
) -> None:
    """Killed between two statements of attempt 1: transient, run again, both rows committed once."""
    runs: list[int] = []
    log: list[str] = []

    @pk.transaction(retry=3, db=db)
    def pay() -> None:
        runs.append(own_connection_id(db, backend.name))
        payment(note="first", amount=1)
        flush()
        pk.on_commit(lambda: log.append(f"commit {len(runs)}"), db=db)
        pk.on_rollback(lambda: log.append(f"rollback {len(runs)}"), db=db)
        if len(runs) == 1:
            wait_until_gone(admin, backend.name, runs[0], kill=True)
        payment(note="second", amount=2)
        flush()

    pay()
    assert len(runs) == 2
    assert runs[0] != runs[1]  # the retry ran on a new connection
    assert stored(payment) == [("first", 1), ("second", 2)]
    assert log == ["rollback 1", "commit 2"]
