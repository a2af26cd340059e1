"""The runner of Pony's own suite (tests/pony_suite/run.py) reports every difference in outcome.

The full runs take minutes and need the servers; CI runs them (.ci/run). Here: the comparison itself.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

RUNNER = Path(__file__).parent / "pony_suite" / "run.py"


@pytest.fixture(scope="module")
def runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pony_suite_run", RUNNER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def _run(runner: ModuleType, **outcomes: str) -> object:
    counted = Counter({(test.replace("__", "::"), outcome): 1 for test, outcome in outcomes.items()})
    return runner.Run(counted, 1.0, 1.0, "bound=1 attached=1")


def test_same_outcomes_make_no_difference(runner: ModuleType) -> None:
    """Failing the same way in both modes is not a difference: only changes count."""
    plain = _run(runner, t__a="passed", t__b="failure", t__c="skipped")
    assert runner.compare("sqlite", plain, _run(runner, t__a="passed", t__b="failure", t__c="skipped")) == (
        [],
        [],
    )


def test_changed_missing_and_new_tests_are_differences(runner: ModuleType) -> None:
    """A test passing plain and failing attached, a test gone, a test only attached: all reported."""
    plain = _run(runner, t__a="passed", t__b="passed")
    attached = _run(runner, t__a="failure", t__c="passed")
    unexpected, intended = runner.compare("postgres", plain, attached)
    assert intended == []
    assert unexpected == [
        "t::a: plain ['passed'] -> attached ['failure']",
        "t::b: plain ['passed'] -> attached ['absent']",
        "t::c: plain ['absent'] -> attached ['passed']",
    ]


def test_intended_differences_are_listed_apart(runner: ModuleType, tmp_path: Path) -> None:
    """A test named in expected_differences.txt for the backend is reported as intended, not as a failure."""
    listing = tmp_path / "expected.txt"
    listing.write_text(
        "# comment\nmysql t::a  # item 1: reconnects\nall t::z  # everywhere\n", encoding="utf-8"
    )
    runner.EXPECTED = listing
    try:
        plain = _run(runner, t__a="passed", t__b="passed")
        attached = _run(runner, t__a="failure", t__b="failure")
        unexpected, intended = runner.compare("mysql", plain, attached)
        assert intended == ["t::a: plain ['passed'] -> attached ['failure']  (intended: item 1: reconnects)"]
        assert unexpected == ["t::b: plain ['passed'] -> attached ['failure']"]
        assert runner.compare("sqlite", plain, attached)[1] == []
    finally:
        runner.EXPECTED = RUNNER.parent / "expected_differences.txt"
