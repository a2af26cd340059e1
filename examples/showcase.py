"""The ponykit showcase: a tour of what ponykit adds to Pony, on embedded SQLite, with no set-up.

    python examples/showcase.py

Runs every step in ``examples/showcase_steps/`` (modules named ``sNN_*.py``, in order). Each step's module
docstring starts with its title, and the module defines ``run(workdir, say)``: ``workdir`` is a temporary
directory shared by all steps (and the current directory while they run), ``say`` prints a line of
narration. The temporary directory is removed at the end. Exit status 0 when every step passed; on the
first failing step its traceback is printed and the exit status is 1.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
STEPS_DIR = HERE / "showcase_steps"
STEP_NAME = re.compile(r"s(\d\d)_\w+\.py")


def step_files(directory: Path = STEPS_DIR) -> list[Path]:
    """The step modules, sorted by file name."""
    return sorted(p for p in directory.iterdir() if p.is_file() and STEP_NAME.fullmatch(p.name))


def heading(path: Path, doc: str | None) -> str:
    """``== 01 setup: URL binding and attach ==`` from ``s01_*.py`` and the first docstring line."""
    match = STEP_NAME.fullmatch(path.name)
    number = match.group(1) if match else "??"
    lines = (doc or "").strip().splitlines()
    title = lines[0].strip() if lines else path.stem.split("_", 1)[-1].replace("_", " ")
    # The docstring may carry the number itself ("01 setup: ..."); it is shown once. So is a final period.
    title = re.sub(rf"^(?:s?{number}\b[\s.:-]*)", "", title).rstrip(".").strip() or path.stem
    return f"== {number} {title} =="


def _ensure_importable() -> None:
    """Make ``ponykit`` and the steps package importable from a plain checkout, from any directory."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    try:
        importlib.import_module("ponykit")
    except ImportError:
        src = HERE.parent / "src"
        if (src / "ponykit").is_dir():
            sys.path.insert(0, str(src))


def _say(text: str) -> None:
    for line in str(text).splitlines() or [""]:
        print(f"   {line}", flush=True)


def run_step(path: Path, workdir: Path, say: Callable[[str], None]) -> None:
    """Import one step module and call its ``run(workdir, say)``."""
    module: ModuleType = importlib.import_module(f"showcase_steps.{path.stem}")
    print(heading(path, module.__doc__), flush=True)
    run = getattr(module, "run", None)
    if not callable(run):
        raise TypeError(f"{path.name} defines no run(workdir, say) function")
    run(workdir, say)


def main() -> int:
    _ensure_importable()
    steps = step_files()
    if not steps:
        print(f"showcase: no steps found in {STEPS_DIR}", file=sys.stderr)
        return 1
    started = time.perf_counter()
    previous_cwd = os.getcwd()
    workdir = Path(tempfile.mkdtemp(prefix="ponykit-showcase-"))
    failed: str | None = None
    try:
        os.chdir(workdir)
        for path in steps:
            try:
                run_step(path, workdir, _say)
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                failed = path.name
                print(f"!! step {path.name} FAILED:", flush=True)
                traceback.print_exc(file=sys.stdout)
                sys.stdout.flush()
                break
            print(flush=True)
    finally:
        os.chdir(previous_cwd)
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    if failed is not None:
        print(f"showcase FAILED at {failed} ({elapsed:.1f} s)", flush=True)
        return 1
    print(f"showcase passed: {len(steps)} steps in {elapsed:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
