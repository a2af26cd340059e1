"""profile(): what it records on every backend, what it finds, and its HTML report in a real browser."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pony.orm import Database, DatabaseError, LongStr, Optional, Required, Set, db_session, select

import ponykit as pk
from ponykit.diagnostics import Profile, ProfiledStatement, profile
from ponykit.diagnostics._profile import _is_select
from ponykit.errors import ConfigurationError, OptionError
from ponykit.security import KeyRing

HERE = Path(__file__).name
REQUIRE = os.environ.get("PONYKIT_REQUIRE_BACKENDS", "") not in ("", "0")


@pytest.fixture
def m(db: Database) -> Any:
    class Author(db.Entity):
        name = Required(str)
        bio = Optional(LongStr)
        books = Set("Book")

    class Book(db.Entity):
        title = Required(str)
        author = Required(Author)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        for i in range(6):
            a = Author(name=f"a{i}", bio="b" * i)
            Book(title=f"t{i}", author=a)
    return Author, Book


def test_records_every_statement_of_every_thread(m: Any, db: Database) -> None:
    """Text, duration, start, thread, caller (this file), rowcount and error type, from every thread."""
    author, _ = m

    def worker() -> None:
        with db_session:
            list(author.select())

    with profile() as prof:
        with db_session:
            list(select(a for a in author if a.name == "a1"))
            author[1].name = "renamed"
        other = threading.Thread(target=worker, name="profile-worker")
        other.start()
        other.join()
        with pytest.raises(DatabaseError, match="no_such_table_here"), db_session:
            db.execute("SELECT * FROM no_such_table_here")
    statements = prof.statements
    assert {s.thread for s in statements} == {threading.current_thread().name, "profile-worker"}
    update = next(s for s in statements if s.operation == "UPDATE")
    assert update.rowcount == 1
    assert update.caller is not None and HERE in update.caller
    first = statements[0]
    assert first.operation == "SELECT" and first.caller is not None and HERE in first.caller
    assert all(s.duration_ms >= 0 and s.start_ms >= 0 for s in statements)
    mine = [s.start_ms for s in statements if s.thread == first.thread]
    assert mine == sorted(mine)
    failed = [s for s in statements if s.error]
    assert len(failed) == 1 and "no_such_table_here" in failed[0].sql
    assert prof.total_ms == pytest.approx(sum(s.duration_ms for s in statements))
    assert prof.wall_ms >= max(s.start_ms for s in statements)
    count = len(statements)
    with db_session:
        list(author.select())  # after the block: the listener is gone
    assert len(prof.statements) == count


def test_threads_current_and_one_database(m: Any, make_db: Any) -> None:
    """threads="current" leaves other threads out; db= leaves other Databases out."""
    author, _ = m
    other_db = make_db()

    class Note(other_db.Entity):
        text = Required(str)

    pk.attach(other_db)
    other_db.generate_mapping(create_tables=True)

    def worker() -> None:
        with db_session:
            list(author.select())

    with profile(threads="current") as mine, profile(author._database_) as one_db:
        with db_session:
            list(author.select())
            list(Note.select())
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    assert len(mine.statements) == 2
    assert {s.thread for s in mine.statements} == {threading.current_thread().name}
    assert len(one_db.statements) == 2
    assert all(s.db is author._database_ for s in one_db.statements)


def test_n_plus_one_group_and_duplicates_are_found(m: Any, db: Database) -> None:
    """A query per author is an N+1 group naming Author.books; the same SQL and parameters twice is a
    duplicate, the same SQL with other parameters is not."""
    author, book = m
    with profile() as prof, db_session:
        for a in author.select():
            list(select(b for b in book if b.author == a))
        db.select("SELECT id FROM book WHERE id = $x", {"x": 1})
        db.select("SELECT id FROM book WHERE id = $x", {"x": 1})
        db.select("SELECT id FROM book WHERE id = $x", {"x": 2})
    [finding] = prof.n_plus_one
    assert (finding.entity, finding.attribute, finding.count) == ("Author", "books", 6)
    assert "prefetch" in finding.hint
    assert len(prof.n_plus_one_statements(finding)) == 6
    [duplicate] = prof.duplicates
    assert duplicate.count == 2
    assert duplicate.statements == (8, 9)
    text = prof.summary()
    assert "N+1: 1 group(s)" in text and "Author.books" in text and "2x" in text


def test_prefetched_loop_has_no_n_plus_one(m: Any) -> None:
    """After prefetch the loop runs no repeated shape: no group, no duplicate."""
    author, _ = m
    with profile() as prof, db_session:
        for a in pk.prefetch(author.select(), "bio", "books"):
            _ = a.bio, len(a.books)
    assert prof.n_plus_one == []
    assert prof.duplicates == []


def test_slow_statements_and_plans(m: Any) -> None:
    """With explain_slow_ms=0 every statement is slow; a SELECT gets its plan, a write never does."""
    author, _ = m
    with profile(explain_slow_ms=0) as prof, db_session:
        list(author.select())
        author[2].name = "x"
    slow = prof.slow
    assert len(slow) == len(prof.statements) >= 2
    assert slow == sorted(slow, key=lambda s: s.duration_ms, reverse=True)
    write = next(s for s in slow if s.operation == "UPDATE")
    assert write.plan is None and write.plan_note == "no plan: only SELECT statements are explained"
    read = next(s for s in slow if s.operation == "SELECT")
    shapes = prof.slow_by_shape()
    assert sum(map(len, shapes)) == len(slow) and len(shapes) == len({s.sql for s in slow})
    page = prof.to_html()
    assert read.plan is not None and read.plan.render()
    assert '<pre class="plan">' in page
    with profile() as quiet, db_session:
        list(author.select())
    assert quiet.slow == []


def test_only_selects_are_explained() -> None:
    """EXPLAIN is for statements that cannot write; a WITH that writes or an EXPLAIN is not one."""
    assert _is_select("  select 1")
    assert _is_select("WITH t AS (SELECT 1) SELECT * FROM t")
    assert not _is_select("WITH t AS (SELECT 1) UPDATE x SET n = n + 1")
    assert not _is_select("UPDATE x SET n = n + 1")
    assert not _is_select("EXPLAIN SELECT 1")


@pytest.mark.backends("sqlite")
def test_options_are_checked(db: Database) -> None:
    """Bad options and an unattached Database are refused with a message saying what to pass."""
    with pytest.raises(OptionError, match="threads"), profile(threads="some"):  # type: ignore[arg-type]
        pass
    with pytest.raises(OptionError, match="explain_slow_ms"), profile(explain_slow_ms=-1):
        pass
    with pytest.raises(OptionError, match="n_plus_one_threshold"), profile(n_plus_one_threshold=1):
        pass
    with pytest.raises(ConfigurationError, match="attach"), profile(db):
        pass


def test_report_is_written_at_exit_even_when_the_block_raises(m: Any, tmp_path: Path) -> None:
    """path= writes the report when the block ends, also on an exception (which still propagates)."""
    author, _ = m
    target = tmp_path / "failed.html"
    with pytest.raises(RuntimeError, match="boom"), profile(path=target), db_session:
        list(author.select())
        raise RuntimeError("boom")
    page = target.read_text(encoding="utf-8")
    assert 'id="s1"' in page and 'id="s2"' not in page


def test_report_loads_nothing_from_the_network(m: Any, tmp_path: Path) -> None:
    """Every src/href of the page points inside it; the CSP forbids loading anything."""
    author, _ = m
    with profile(explain_slow_ms=0) as prof, db_session:
        for a in author.select():
            _ = a.bio
    page = prof.write_html(tmp_path / "report.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"\bsrc\s*=", page, re.IGNORECASE)
    links = re.findall(r"\bhref\s*=\s*[\"']?([^\"'\s>]*)", page, re.IGNORECASE)
    assert links and all(link.startswith("#s") for link in links)
    assert "@import" not in page and "url(" not in page
    assert "default-src 'none'" in page


class _Page(HTMLParser):
    """The tags and text of a page, to check what the browser will see."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def count(self, tag: str) -> int:
        return sum(1 for name, _ in self.tags if name == tag)


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


@pytest.mark.backends("sqlite")
def test_sql_with_a_script_tag_is_escaped(m: Any, db: Database) -> None:
    """A <script> in a SQL literal shows as text: the page keeps its one script and tags."""
    with profile() as prof, db_session:
        db.select("SELECT '<script>alert(\"x\")</script><img src=x onerror=alert(1)>' AS x")
    page = prof.to_html()
    parsed = _parse(page)
    assert parsed.count("script") == 1
    assert parsed.count("img") == 0
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert any('<script>alert("x")</script>' in cell for cell in parsed.cells)


_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


@given(sql=_TEXT, thread=_TEXT, caller=_TEXT, value=_TEXT)
@settings(max_examples=60)
def test_any_text_is_escaped(sql: str, thread: str, caller: str, value: str) -> None:
    """Whatever the SQL, a parameter, the thread name or the file name holds, the page's structure is the
    report's own and the text comes back unchanged."""
    prof = Profile(explain_slow_ms=None, n_plus_one_threshold=5)
    database = Database()
    prof.statements.append(
        ProfiledStatement(f"SELECT {sql}", (value,), 0.0, 1.0, thread, f"{caller}:3", None, None, database)
    )
    prof._close()
    parsed = _parse(prof.to_html())
    assert parsed.count("script") == 1 and parsed.count("tr") == 2 and parsed.count("td") == 8
    cells = parsed.cells
    assert cells[4] == thread
    assert cells[6] == f"SELECT {sql}"
    assert cells[7] == repr((value,))


_KEY = base64.urlsafe_b64encode(bytes(range(32))).decode()


def test_sensitive_and_encrypted_values_never_reach_the_report(db: Database, tmp_path: Path) -> None:
    """Values of sensitive() and encrypted attributes appear nowhere in the statements, summary or page."""

    class Patient(db.Entity):
        __sensitive__ = ("ssn",)
        name = Required(str)
        ssn = Required(str)
        note = Optional(pk.types.EncryptedStr)

    pk.attach(db, keys=KeyRing({"k1": _KEY}))
    db.generate_mapping(create_tables=True)
    alphabet = st.characters(min_codepoint=0x30, max_codepoint=0x7A)
    secrets = st.text(alphabet, min_size=8, max_size=20)

    @given(ssn=secrets, note=secrets)
    @settings(max_examples=10)
    def check(ssn: str, note: str) -> None:
        ssn, note = f"SSN{ssn}", f"NOTE{note}"
        with profile(explain_slow_ms=0) as prof:
            with db_session:
                Patient(name="n", ssn=ssn, note=note)
            with db_session:
                found = Patient.get(ssn=ssn)
                assert found is not None and found.note == note
                found.ssn = ssn + "x"
        page = prof.to_html()
        recorded = repr([(s.sql, s.params) for s in prof.statements]) + prof.summary() + page
        for secret in (ssn, note, ssn + "x"):
            assert secret not in recorded

    check()


# ------------------------------------------------------------------------------------------------------
# The report in a real headless browser (Debian's chromium)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "chromium is not installed (apt-get install -y chromium): the report's browser test needs it"
        if REQUIRE:
            pytest.fail(f"{reason}; PONYKIT_REQUIRE_BACKENDS is set, so this is an error", pytrace=False)
        pytest.skip(reason)
    return found


def test_missing_chromium_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without chromium the browser test is skipped with a reason, unless CI requires every check."""
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(sys.modules[__name__], "REQUIRE", False)
    with pytest.raises(pytest.skip.Exception, match="chromium is not installed"):
        _chromium()
    monkeypatch.setattr(sys.modules[__name__], "REQUIRE", True)
    with pytest.raises(pytest.fail.Exception, match="PONYKIT_REQUIRE_BACKENDS is set"):
        _chromium()


def _load(page: Path, fragment: str, profile_dir: Path) -> tuple[str, list[str]]:
    """The DOM chromium built for ``page`` after its scripts ran, and the console lines it logged."""
    command = [
        _chromium(),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--user-data-dir={profile_dir}",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        page.resolve().as_uri() + fragment,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"chromium exited with {done.returncode}:\n{done.stderr[-3000:]}"
    # Every console message (console.log/error, uncaught exceptions, blocked loads) is an INFO:CONSOLE line.
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return done.stdout, console


class _Rows(HTMLParser):
    """The statement table of a dumped DOM: its attributes and each row's (number, duration)."""

    def __init__(self) -> None:
        super().__init__()
        self.table: dict[str, str | None] = {}
        self.rows: list[list[float]] = []
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table" and found.get("id") == "statements-table":
            self.table = found
        elif tag == "tbody" and self.table and not self.rows:
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append([])
        elif tag == "td" and self._in_body and found.get("data-v") is not None:
            self.rows[-1].append(float(found["data-v"] or 0))

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False


@pytest.mark.backends("sqlite")
def test_report_in_a_headless_browser(m: Any, db: Database, tmp_path: Path) -> None:
    """Debian's chromium loads the report without a console message, shows every statement, and the
    sort script ran: the table is marked ready and sorted by the duration the URL asks for."""
    author, book = m
    with profile(explain_slow_ms=0, path=tmp_path / "report.html") as prof, db_session:
        for a in author.select():
            list(select(b for b in book if b.author == a))
        db.select("SELECT '<script>alert(1)</script>' AS x")
        db.select("SELECT '<script>alert(1)</script>' AS x")
    assert prof.n_plus_one and prof.duplicates
    dom, console = _load(tmp_path / "report.html", "#sort=duration-desc", tmp_path / "chromium")
    assert console == [], "the report logged to the browser console:\n" + "\n".join(console)
    rows = _Rows()
    rows.feed(dom)
    assert rows.table.get("data-sortable") == "ready"
    assert rows.table.get("data-sorted-by") == "duration-desc"
    assert sorted(int(r[0]) for r in rows.rows) == list(range(1, len(prof.statements) + 1))
    durations = [r[2] for r in rows.rows]
    assert durations == sorted(durations, reverse=True)
    assert "Author.books" in dom and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
