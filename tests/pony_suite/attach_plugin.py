"""pytest plugin for running Pony's own test suite with ``ponykit.attach()`` on every Database it binds.

Test tooling, not library code: ``tests/pony_suite/run.py`` loads it with ``-p attach_plugin`` into a
run of ``pony.orm.tests``. Pony's suite creates its Databases in many ways (``Database("sqlite",
":memory:")``, ``Database()`` then the suite's ``setup_database``, its ``TestDatabase`` with a fake
provider), and every one of them goes through ``Database._bind``. Wrapping that one method, in this test
process only, attaches each Database right after it is bound and before anything maps it: the point
where an application calls ``attach()``. ponykit itself never patches Pony classes; this harness does, so
that Pony's suite runs unchanged.

At the end it writes how many Databases were bound and attached to ``PONYKIT_PONY_SUITE_STATS`` (if set),
so the runner can check the attachment really happened.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from pony.orm import core

import ponykit

__all__ = ["pytest_configure", "pytest_unconfigure"]

_counts = {"bound": 0, "attached": 0}
_original_bind: Any = None


def _bind_and_attach(self: Any, *args: Any, **kwargs: Any) -> None:
    _original_bind(self, *args, **kwargs)
    _counts["bound"] += 1
    # No try/except: if attach() refused a Database Pony's suite uses, the test must fail and show it.
    ponykit.attach(self)
    _counts["attached"] += 1


def pytest_configure(config: pytest.Config) -> None:
    """Install the wrapper before Pony's test modules are imported (some bind at import time)."""
    global _original_bind
    if _original_bind is None:
        _original_bind = core.Database._bind
        core.Database._bind = _bind_and_attach


def pytest_unconfigure(config: pytest.Config) -> None:
    """Restore Pony's method and report the counts."""
    global _original_bind
    if _original_bind is not None:
        core.Database._bind = _original_bind
        _original_bind = None
    target = os.environ.get("PONYKIT_PONY_SUITE_STATS")
    if target:
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(f"bound={_counts['bound']}\nattached={_counts['attached']}\n")
