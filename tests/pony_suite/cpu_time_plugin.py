"""pytest plugin: write the CPU time the test process used to ``PONYKIT_PONY_SUITE_CPU`` at the end.

Loaded by ``tests/pony_suite/run.py`` into both runs of Pony's suite (plain and attached). On a shared
machine wall-clock times swing with the other jobs; the CPU time of the test process itself (the database
servers' work is not in it) is what ponykit's client-side overhead changes, so the runner compares that.
"""

from __future__ import annotations

import os
import time

import pytest

__all__ = ["pytest_unconfigure"]


def pytest_unconfigure(config: pytest.Config) -> None:
    """Record ``time.process_time()`` (user + system CPU seconds of this process)."""
    target = os.environ.get("PONYKIT_PONY_SUITE_CPU")
    if target:
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(f"{time.process_time():.3f}\n")
