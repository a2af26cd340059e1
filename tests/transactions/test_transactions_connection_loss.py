"""A connection killed in the middle of a transaction: the transaction fails whole, as a transaction should.

Every test kills the session's own, real connection from a separate admin connection
(``pg_terminate_backend(pid)`` on PostgreSQL, ``KILL CONNECTION id`` on MariaDB) at a chosen point: after
the first writing statement of a bulk call (a statement listener fires it), or between two flushes. Plain
Pony 0.7.20 reconnects and carries on in a new transaction, so the writes before the kill vanish while
the later ones commit and ``on_commit`` runs; with ponykit attached the call raises ConnectionLostError,
nothing commits, ``on_rollback`` runs, and the thread's next session works on a new connection. A loss
before anything was written still reconnects transparently, as in Pony.

SQLite is left out: an embedded database has no connection to lose (Pony's SQLite provider never
reconnects).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import CommitException, Database, Required, commit, db_session, flush, rollback

import ponykit as pk
from ponykit.transactions import _statements
from ponykit.transactions._statements import is_write_statement as _is_write_statement

pytestmark = pytest.mark.backends("postgres", "mysql")

ROWS = 1500
BATCH = 500
WRITES = ("copy", "insert", "update", "delete")


def make_schema(db: Database) -> Any:
    class Item(db.Entity):
        name = Required(str, unique=True)
        v = Required(int)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return Item


class Killer:
    """Kills the session's real connection from the admin connection, now or after the n-th write."""

    def __init__(self, backend_name: str, admin: Any, db: Database) -> None:
        self.backend = backend_name
        self.admin = admin
        self.db = db
        self.conn_id: Any = None
        self.after: int | None = None
        self.seen = 0
        self.kills = 0
        pk.get_kit(db).add_execute_listener(self._listener)

    def arm(self, after: int = 1) -> None:
        """Kill the session's connection right after its ``after``-th writing statement succeeded."""
        self.conn_id = self.own_id()
        self.after, self.seen = after, 0

    def own_id(self) -> Any:
        sql = "SELECT pg_backend_pid()" if self.backend == "postgres" else "SELECT CONNECTION_ID()"
        return self.db.select(sql)[0]

    def kill(self, conn_id: Any = None) -> None:
        """Kill the connection and wait until the server has let it go (a sync, not a timing assertion)."""
        target = self.conn_id if conn_id is None else conn_id
        conn = self.admin.connection(self.backend)
        with conn.cursor() as cur:
            if self.backend == "postgres":
                cur.execute("SELECT pg_terminate_backend(%s)", (target,))
                gone = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
            else:
                cur.execute(f"KILL CONNECTION {int(target)}")
                gone = "SELECT count(*) FROM information_schema.processlist WHERE id = %s"
            for _ in range(2000):
                cur.execute(gone, (target,))
                if cur.fetchone()[0] == 0:
                    break
                cur.execute("SELECT pg_sleep(0.005)" if self.backend == "postgres" else "DO SLEEP(0.005)")
            else:
                pytest.fail(f"the {self.backend} server kept connection {target} alive after the kill")
        self.kills += 1

    def _listener(self, db: Any, sql: str, arguments: Any, seconds: float, error: Any) -> None:
        if self.after is None or error is not None or not sql.lstrip().lower().startswith(WRITES):
            return
        self.seen += 1
        if self.seen == self.after:
            self.after = None
            self.kill()


@pytest.fixture
def setup(backend: Any, db: Database, _admin: Any) -> tuple[Database, Any, Killer]:
    item = make_schema(db)
    return db, item, Killer(backend.name, _admin, db)


def rows(start: int = 0, v: int = 0) -> Iterator[dict[str, Any]]:
    return ({"name": f"n{i}", "v": v} for i in range(start, start + ROWS))


def seed(item: Any) -> None:
    with db_session:
        pk.bulk_insert(item, rows(), batch_size=ROWS)


def state(item: Any) -> tuple[int, int]:
    """(rows, sum of v) as a fresh session sees them; also proves the next session works."""
    with db_session:
        return item.select().count(), sum(o.v for o in item.select())


def recorder(db: Database) -> tuple[list[str], Callable[[], None]]:
    log: list[str] = []

    def register() -> None:
        pk.on_commit(lambda: log.append("commit"), db=db)
        pk.on_rollback(lambda: log.append("rollback"), db=db)

    pk.get_kit(db).subscribe(lambda event: log.append(f"event {sorted(event.writes)}"))
    return log, register


def add_insert_rule(db: Database) -> None:
    # A rewrite rule makes PostgreSQL's COPY unlike INSERT, so bulk_insert takes its INSERT path.
    with db_session:
        db.execute("CREATE RULE item_also AS ON INSERT TO item DO ALSO NOTIFY item_inserted")


def bulk_call(kind: str, item: Any) -> Callable[[], Any]:
    calls: dict[str, Callable[[], Any]] = {
        "insert": lambda: pk.bulk_insert(item, rows(ROWS), batch_size=BATCH),
        "insert_return_ids": lambda: pk.bulk_insert(item, rows(ROWS), batch_size=BATCH, return_ids=True),
        "update": lambda: pk.bulk_update(
            item, ({"id": i + 1, "v": 7} for i in range(ROWS)), fields=["v"], batch_size=BATCH
        ),
        "upsert": lambda: pk.bulk_upsert(item, rows(ROWS // 2, v=7), conflict="name", batch_size=BATCH),
        "delete": lambda: pk.bulk_delete(item, list(range(1, ROWS + 1)), batch_size=BATCH),
    }
    return calls[kind]


KINDS = ["insert", "insert_return_ids", "update", "upsert", "delete"]


@pytest.mark.parametrize("kind", KINDS)
def test_bulk_call_killed_after_first_batch_commits_nothing(
    setup: tuple[Database, Any, Killer], kind: str
) -> None:
    """Killed after batch 1 of 3: ConnectionLostError, 0 rows changed, on_rollback only, no commit event.

    On PostgreSQL inserts take the COPY path here; on MariaDB they are INSERTs.
    """
    _killed_after_first_batch(setup, kind)


@pytest.mark.backends("postgres")
@pytest.mark.parametrize("kind", ["insert", "insert_return_ids"])
def test_bulk_insert_path_killed_after_first_batch_commits_nothing(
    setup: tuple[Database, Any, Killer], kind: str
) -> None:
    """As above on PostgreSQL's INSERT path: a rule on the table turns COPY into INSERT statements."""
    add_insert_rule(setup[0])
    _killed_after_first_batch(setup, kind)


def _killed_after_first_batch(setup: tuple[Database, Any, Killer], kind: str) -> None:
    db, item, killer = setup
    seed(item)
    before = state(item)
    log, register = recorder(db)
    with pytest.raises(pk.ConnectionLostError) as info, db_session:
        item.select().count()  # the session has read (on MariaDB: inside its transaction) before
        register()
        killer.arm()
        bulk_call(kind, item)()
    assert killer.kills == 1
    assert state(item) == before
    assert log == ["rollback"]
    assert info.value.statements >= 1
    # bulk_delete reports its keys after its last statement: the loss comes before, with the count only.
    assert info.value.entities == (() if kind == "delete" else ("Item",))
    with db_session:  # the thread's next session writes and commits normally
        bulk_call(kind, item)()
        register()
    assert log == ["rollback", "event ['Item']", "commit"]


def test_orm_flush_after_kill_commits_nothing(setup: tuple[Database, Any, Killer]) -> None:
    """``Item(); flush(); <kill>; Item(); flush()``: plain Pony commits only the second object."""
    db, item, killer = setup
    log, register = recorder(db)
    with pytest.raises(pk.ConnectionLostError), db_session:
        register()
        item(name="first", v=1)
        flush()
        killer.conn_id = killer.own_id()
        killer.kill()
        item(name="second", v=2)
        flush()
    assert state(item) == (0, 0)
    assert log == ["rollback"]


def test_raw_write_after_kill_commits_nothing(setup: tuple[Database, Any, Killer]) -> None:
    """A write through ``db.execute`` counts as a write: the next statement after the kill raises."""
    db, item, killer = setup
    log, register = recorder(db)
    with pytest.raises(pk.ConnectionLostError), db_session:
        register()
        db.execute("INSERT INTO item (name, v) VALUES ('raw', 1)")
        killer.conn_id = killer.own_id()
        killer.kill()
        db.execute("INSERT INTO item (name, v) VALUES ('raw2', 2)")
    assert state(item) == (0, 0)
    assert log == ["rollback"]


def test_read_only_session_reconnects_transparently(setup: tuple[Database, Any, Killer]) -> None:
    """Nothing written yet: Pony's reconnect is kept, reads and the first write go to a new connection."""
    db, item, killer = setup
    seed(item)
    log, register = recorder(db)
    with db_session:
        register()
        assert item.select().count() == ROWS
        first = killer.own_id()
        killer.conn_id = first
        killer.kill()
        assert item.select().count() == ROWS  # reconnected
        assert killer.own_id() != first
        item(name="after", v=5)  # the transaction's first write, on the new connection
    assert state(item) == (ROWS + 1, 5)
    assert log == ["event ['Item']", "commit"]


def test_loss_after_mid_session_commit_reconnects(setup: tuple[Database, Any, Killer]) -> None:
    """A commit() ends the transaction that wrote: a loss after it loses nothing and reconnects."""
    _db, item, killer = setup
    with db_session:
        item(name="a", v=1)
        commit()
        killer.conn_id = killer.own_id()
        killer.kill()
        item(name="b", v=2)
    assert state(item) == (2, 3)


def test_caller_that_catches_cannot_commit_on_a_new_connection(setup: tuple[Database, Any, Killer]) -> None:
    """Catching the error and carrying on: every statement raises, the session end raises and rolls back."""
    db, item, killer = setup
    log, register = recorder(db)
    with pytest.raises(pk.ConnectionLostError), db_session:
        register()
        killer.arm()
        with pytest.raises(pk.ConnectionLostError):
            pk.bulk_insert(item, rows(), batch_size=BATCH)
        with pytest.raises(pk.ConnectionLostError):
            item.select().count()
        with pytest.raises(pk.ConnectionLostError):
            db.execute("INSERT INTO item (name, v) VALUES ('late', 1)")
        item(name="late", v=1)
        with pytest.raises(pk.ConnectionLostError):
            flush()
        pk.on_commit(lambda: log.append("late commit"), db=db)
        # The unflushed object makes the session's final flush raise ConnectionLostError itself.
    assert state(item) == (0, 0)
    assert log == ["rollback"]


def test_commit_without_new_statements_raises(setup: tuple[Database, Any, Killer]) -> None:
    """Catching the error and committing at once: the commit refuses, nothing is kept."""
    db, item, killer = setup
    log, register = recorder(db)
    with db_session:
        register()
        killer.arm()
        with pytest.raises(pk.ConnectionLostError):
            pk.bulk_insert(item, rows(), batch_size=BATCH)
        with pytest.raises(CommitException) as info:
            commit()
        assert isinstance(info.value.exceptions[0][1], pk.ConnectionLostError)
        item(name="fresh", v=3)  # commit() rolled back: a new transaction on a new connection
    assert state(item) == (1, 3)
    assert log == ["rollback", "event ['Item']"]


def test_rollback_after_loss_starts_a_new_transaction(setup: tuple[Database, Any, Killer]) -> None:
    """rollback() after the error ends the lost transaction; the session goes on with a fresh one."""
    db, item, killer = setup
    log, register = recorder(db)
    with db_session:
        register()
        killer.arm()
        with pytest.raises(pk.ConnectionLostError):
            pk.bulk_insert(item, rows(), batch_size=BATCH)
        rollback()
        assert log == ["rollback"]
        register()
        pk.bulk_insert(item, rows(), batch_size=BATCH)
    assert state(item) == (ROWS, 0)
    assert log == ["rollback", "event ['Item']", "commit"]


def test_db_session_retry_runs_the_whole_transaction_again(setup: tuple[Database, Any, Killer]) -> None:
    """``@db_session(retry=N)``: the error is a Pony TransactionError, so the whole function runs again."""
    db, item, killer = setup
    log, register = recorder(db)
    attempts: list[int] = []

    @db_session(retry=2)
    def load() -> int:
        attempts.append(1)
        register()
        if len(attempts) == 1:
            killer.arm()
        return int(pk.bulk_insert(item, rows(), batch_size=BATCH))

    assert load() == ROWS
    assert len(attempts) == 2
    assert state(item) == (ROWS, 0)
    assert log == ["rollback", "event ['Item']", "commit"]


def test_db_session_retry_exhausted_raises_and_keeps_nothing(setup: tuple[Database, Any, Killer]) -> None:
    """Lost on every attempt: the last ConnectionLostError propagates and nothing was ever committed."""
    db, item, killer = setup
    log, register = recorder(db)

    @db_session(retry=1)
    def load() -> None:
        register()
        killer.arm()
        pk.bulk_insert(item, rows(), batch_size=BATCH)

    with pytest.raises(pk.ConnectionLostError):
        load()
    assert killer.kills == 2
    assert state(item) == (0, 0)
    assert log == ["rollback", "rollback"]


def test_error_names_the_lost_transaction_and_no_value(setup: tuple[Database, Any, Killer]) -> None:
    """The message names the database, the statement count and the entities; never a value."""
    _db, item, killer = setup
    secret = "SECRET-VALUE-0451"
    with pytest.raises(pk.ConnectionLostError) as info, db_session:
        item(name=secret, v=1)
        flush()
        killer.conn_id = killer.own_id()
        killer.kill()
        item(name=secret + "b", v=2)
        flush()
    text = str(info.value)
    assert secret not in text and secret not in repr(info.value)
    assert "Item" in text and "1 writing statement" in text
    assert info.value.database in text and ("postgres" in text or "mysql" in text)
    assert isinstance(info.value, pk.PonykitError)


# ---------------------------------------------------------------------------------------------------------
# Which statements count as writes (no database needed)

WRITE_HEADS = ("INSERT", "UPDATE", "DELETE", "COPY", "CREATE", "ALTER", "SET", "WITH", "REPLACE", "TRUNCATE")


@given(head=st.sampled_from(WRITE_HEADS), rest=st.text(max_size=60), pad=st.text(" \t\r\n(", max_size=4))
def test_statements_other_than_reads_count_as_writes(head: str, rest: str, pad: str) -> None:
    """Anything not starting with SELECT, SHOW or EXPLAIN is a write, whatever follows, in any case."""
    assert _is_write_statement(f"{pad}{head} {rest}")
    assert _is_write_statement(f"{pad}{head.lower()} {rest}")


LOCKS = ("FOR UPDATE", "for share", "FOR NO KEY UPDATE", "FOR KEY SHARE", "LOCK IN SHARE MODE")


@given(
    head=st.sampled_from(("SELECT", "select", "Show")),
    # no ";" (several statements) and no word INTO (SELECT ... INTO): both count as writes
    body=st.text(st.characters(codec="ascii", exclude_characters="fFlL;"), max_size=60).filter(
        lambda b: re.search(r"\binto\b", b, re.IGNORECASE) is None
    ),
    pad=st.text(" \t\r\n(", max_size=4),
    lock=st.sampled_from(LOCKS),
)
def test_plain_reads_do_not_count_and_locking_reads_do(head: str, body: str, pad: str, lock: str) -> None:
    """A SELECT/SHOW is a read; with a row-locking clause at its end it counts as a write (locks are lost)."""
    sql = f"{pad}{head} {body}"
    assert not _is_write_statement(sql)
    assert _is_write_statement(f"{sql} {lock}")
    assert _is_write_statement(f"{sql} {'x' * 5000} {lock} NOWAIT")


def test_explain_counts_as_a_write_only_when_it_runs_the_statement() -> None:
    assert not _is_write_statement("EXPLAIN SELECT * FROM item")
    assert _is_write_statement("EXPLAIN ANALYZE SELECT * FROM item")
    assert _is_write_statement("explain (analyze, buffers) select 1")


@given(
    head=st.sampled_from(("SELECT", "select", "Show", "EXPLAIN", "explain analyze", *WRITE_HEADS)),
    body=st.text(max_size=60),
    lock=st.sampled_from(("", *LOCKS)),
)
def test_write_classification_is_remembered_per_text(head: str, body: str, lock: str) -> None:
    """The per-statement hook remembers each short text's answer, and it is _is_write_statement's, the
    first time and from the memo; long texts (bulk statements) are answered without being kept."""
    sql = f"{head} {body} {lock}"
    expected = _is_write_statement(sql)
    assert _statements.is_write_statement_memo(sql) is expected
    assert _statements.WRITE_MEMO[sql] is expected
    assert _statements.is_write_statement_memo(sql) is expected
    long = f"{sql} {'x' * _statements.MEMO_MAX_CHARS} {lock}"
    assert _statements.is_write_statement_memo(long) is _is_write_statement(long)
    assert long not in _statements.WRITE_MEMO
