"""hello: which ponykit and Pony are running"""

from __future__ import annotations

import platform
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pony

import ponykit


def run(workdir: Path, say: Callable[[str], None]) -> None:
    say(f"ponykit {ponykit.__version__} on Pony {pony.__version__}")
    say(f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")
    say(f"working in a temporary directory: {workdir}")
