"""``python examples/showcase.py`` runs every step to the end, from any working directory."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
SHOWCASE = ROOT / "examples" / "showcase.py"


def _showcase_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ponykit_showcase_under_test", SHOWCASE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_showcase_runs_every_step(tmp_path: Path) -> None:
    showcase = _showcase_module()
    steps = showcase.step_files()
    assert steps, "examples/showcase_steps holds no sNN_*.py steps"
    headings = []
    for path in steps:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert doc, f"{path.name} has no module docstring (its first line is the step's title)"
        headings.append(showcase.heading(path, doc))

    env = dict(os.environ)
    # From a plain checkout too: the showcase finds src/ itself when ponykit is not installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    env.pop("PYTHONSTARTUP", None)
    proc = subprocess.run(
        [sys.executable, str(SHOWCASE)],
        cwd=tmp_path,  # "from anywhere": not the repository root
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"showcase exited with {proc.returncode}:\n{output}"
    for heading in headings:
        assert heading.startswith("== ")
        assert heading in proc.stdout, f"missing step heading {heading!r} in:\n{output}"
    positions = [proc.stdout.index(h) for h in headings]
    assert positions == sorted(positions), "steps ran out of order"
    assert "showcase passed" in proc.stdout
    assert list(tmp_path.iterdir()) == [], "the showcase left files in the working directory"
