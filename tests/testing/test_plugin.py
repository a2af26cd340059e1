"""The pytest plugin (ponykit.testing): fixtures for an in-memory Database and query assertions, and the
contract test classes users subclass (their example in docs/testing.md, run as a user would)."""

from __future__ import annotations

import os
import re
from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


def test_plugin_fixtures_work_in_a_user_test_suite(pytester: pytest.Pytester) -> None:
    """A user's test can declare entities on ponykit_db and assert query counts and N+1 with fixtures.

    The counting fixtures see statements run on other threads (the work behind a test client request).
    """
    pytester.makepyfile(
        """
        import pytest
        from pony.orm import Required, Optional, LongStr, db_session, select
        from ponykit.errors import QueryCountExceeded

        def test_counts(ponykit_db, count_queries, assert_max_queries, detect_n_plus_one):
            class Note(ponykit_db.Entity):
                text = Required(str)
                body = Optional(LongStr)
            ponykit_db.generate_mapping(create_tables=True)
            with db_session:
                for i in range(4):
                    Note(text=str(i), body="b")
            with db_session, count_queries() as counter:
                list(Note.select())
            assert counter.count == 1
            with db_session, pytest.raises(QueryCountExceeded):
                with assert_max_queries(0):
                    list(Note.select())
            with db_session, pytest.raises(AssertionError, match="Note.body"):
                with detect_n_plus_one(threshold=3):
                    for n in Note.select():
                        n.body

        def test_other_threads_count(ponykit_db, count_queries, assert_max_queries):
            import threading
            class Tag(ponykit_db.Entity):
                name = Required(str)
            ponykit_db.generate_mapping(create_tables=True)

            def work():
                with db_session:
                    list(Tag.select())
                    list(Tag.select(lambda t: t.name == "x"))

            with count_queries() as counter:
                worker = threading.Thread(target=work)
                worker.start()
                worker.join()
            assert counter.count == 2
            with pytest.raises(QueryCountExceeded, match="2 ran"), assert_max_queries(1):
                worker = threading.Thread(target=work)
                worker.start()
                worker.join()

        def test_fresh_database_each_time(ponykit_db):
            assert not ponykit_db.entities
        """
    )
    # Installed, the plugin loads through its pytest11 entry point; from a bare checkout it is named.
    installed = any(ep.name == "ponykit" for ep in entry_points(group="pytest11"))
    plugin_args = [] if installed else ["-p", "ponykit.testing"]
    result = pytester.runpytest(*plugin_args, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_plugin_import_is_cheap_and_has_no_autouse_fixtures() -> None:
    """Importing the plugin defines fixtures only; none is autouse."""
    import ponykit.testing as plugin

    for name in plugin.__all__:
        marker = getattr(getattr(plugin, name), "_fixture_function_marker", None) or getattr(
            getattr(plugin, name), "_pytestfixturefunction", None
        )
        assert marker is None or not getattr(marker, "autouse", False)


def test_the_contract_example_of_the_docs_passes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/testing.md's contract test module (a user's AttributeType and a MemoryCache) runs green under
    pytest, in its own process: every test of both contract classes runs, none is skipped."""
    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "testing.md").read_text(encoding="utf-8")
    example = next(
        block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "TestMoneyType" in block
    )
    pytester.makepyfile(test_contracts=example)
    # The child imports this checkout's ponykit (src/), whatever the current directory.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(root / "src"), os.environ.get("PYTHONPATH")]))
    )
    installed = any(ep.name == "ponykit" for ep in entry_points(group="pytest11"))
    plugin_args = [] if installed else ["-p", "ponykit.testing"]
    result = pytester.runpytest_subprocess(*plugin_args, "-p", "no:cacheprovider", "-p", "no:randomly")
    contract_tests = 7 + 11  # AttributeTypeContract's and CacheBackendContract's test_ methods
    result.assert_outcomes(passed=contract_tests)
