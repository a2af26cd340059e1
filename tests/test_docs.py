"""Every ```python block of README.md and docs/*.md runs, so the documentation cannot drift from the code.

One test per block, with the id ``<file>:<line>`` (the line of the opening fence). The blocks of one file
run in order and share one namespace and one temporary working directory; selecting a single block runs
the blocks before it first. A block whose first line is ``# doctest: skip`` is not collected. Blocks run on
SQLite only: documentation examples bind ``sqlite://:memory:`` or ``sqlite:///app.db``-style URLs.
"""

from __future__ import annotations

import contextlib
import gc
import linecache
import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP_MARK = "# doctest: skip"
_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s{]*)[^`]*$")


@dataclass(frozen=True)
class Block:
    path: Path  # the Markdown file
    rel: str  # its path relative to the repository root, e.g. "docs/bulk.md"
    line: int  # 1-based line of the opening fence
    code: str  # the block's source, dedented

    @property
    def id(self) -> str:
        return f"{self.rel}:{self.line}"


def doc_files() -> list[Path]:
    """README.md and docs/*.md, those that exist, in a stable order."""
    files = [ROOT / "README.md"] if (ROOT / "README.md").is_file() else []
    docs = ROOT / "docs"
    if docs.is_dir():
        files += sorted(p for p in docs.glob("*.md") if p.is_file())
    return files


def python_blocks(path: Path) -> list[Block]:
    """The fenced ``python`` blocks of one Markdown file, in order (``# doctest: skip`` ones included)."""
    rel = path.relative_to(ROOT).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _OPEN.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence, info = len(match["indent"]), match["fence"], match["info"].lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            stripped = lines[i].strip()
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                break
            text = lines[i]
            # Remove the fence's indentation (blocks inside list items are indented).
            body.append(text[indent:] if text[:indent].strip() == "" else text.lstrip())
            i += 1
        i += 1  # past the closing fence (or the end of the file for an unclosed block)
        if info in ("python", "py", "python3"):
            blocks.append(Block(path, rel, start + 1, "\n".join(body) + "\n"))
    return blocks


def _collect() -> list[Block]:
    blocks = []
    for path in doc_files():
        blocks += [b for b in python_blocks(path) if not b.code.lstrip("\n").startswith(SKIP_MARK)]
    return blocks


BLOCKS = _collect()


@dataclass
class _FileRun:
    """The shared state of one Markdown file's blocks: namespace, working directory, progress."""

    workdir: Path
    namespace: dict[str, Any] = field(default_factory=dict)
    done: int = 0  # how many of the file's blocks have run
    failed: str | None = None  # id of the first block that failed


@pytest.fixture(scope="module")
def doc_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, _FileRun]]:
    runs: dict[str, _FileRun] = {}
    yield runs
    for run in runs.values():
        _close_databases(run.namespace)
        sys.modules.pop(run.namespace.get("__name__", ""), None)
        run.namespace.clear()
    gc.collect()


def _close_databases(namespace: dict[str, Any]) -> None:
    try:
        from pony.orm import Database
    except ImportError:  # pragma: no cover
        return
    for value in list(namespace.values()):
        if isinstance(value, Database):
            with contextlib.suppress(Exception):
                value.disconnect()


def _execute(block: Block, run: _FileRun) -> None:
    # Compile under a file name inside the working directory (so that Pony resolves relative SQLite file
    # names there, never in the repository) and pad with blank lines so that tracebacks show the line of
    # the Markdown file; register the text with linecache so that tracebacks show the source too.
    filename = str(run.workdir / block.path.name)
    source = "\n" * block.line + block.code
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    # dont_inherit: the blocks run as readers would run them, without this module's `from __future__ import
    # annotations` (which would leave Pydantic models in the docs with unresolvable string annotations).
    exec(compile(source, filename, "exec", dont_inherit=True), run.namespace)


if BLOCKS:

    @pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
    def test_doc_block(
        block: Block,
        doc_runs: dict[str, _FileRun],
        tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        run = doc_runs.get(block.rel)
        if run is None:
            workdir = tmp_path_factory.mktemp("doc-" + re.sub(r"\W+", "-", block.rel))
            run = doc_runs[block.rel] = _FileRun(workdir)
            # A real module in sys.modules: libraries look their callers' modules up there (Pydantic
            # does, parametrizing a generic model such as Page[ProductOut]).
            module = types.ModuleType("ponykit_doc_" + re.sub(r"\W+", "_", block.rel))
            sys.modules[module.__name__] = module
            run.namespace = module.__dict__
        monkeypatch.chdir(run.workdir)
        siblings = [b for b in BLOCKS if b.rel == block.rel]
        index = siblings.index(block)
        while run.done < index:  # blocks before this one that have not run (e.g. with -k)
            earlier = siblings[run.done]
            if run.failed is None:
                try:
                    _execute(earlier, run)
                except Exception as exc:
                    run.failed = earlier.id
                    pytest.fail(f"earlier block {earlier.id} failed: {exc!r}", pytrace=False)
            run.done += 1
        if run.failed is not None:
            pytest.fail(f"not run: earlier block {run.failed} of the same file failed", pytrace=False)
        run.done = index + 1
        try:
            _execute(block, run)
        except BaseException:
            run.failed = block.id
            raise
