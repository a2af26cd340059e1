"""The package's shape: every module imports on its own, the layering contracts hold, modules stay small.

These tests guard the layout of ``src/ponykit`` (docs/internals.md, "Layout") on a machine that runs only
pytest. The same file is a report on the shape of any copy of the package::

    python tests/test_layout.py --report [SRC]     # SRC: a folder holding ponykit/ (default: ./src)

prints the import depth (the longest chain of ponykit-internal imports), the import cycles and the 15
longest functions.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "ponykit"

# The private top-level modules the layout allows (design.md): the shared layers below the subsystems.
# _kit.py arrives with the attach branch, so it may be missing.
ALLOWED_PRIVATE_TOP_LEVEL = {"_kit", "_sql", "_codegen", "_pony"}

MAX_MODULE_LINES = 500
# Modules over the limit today, each with the size it may not grow past. Shrink an entry when its module
# shrinks, and delete it once the module is split; never add one for a new module.
# Modules allowed past MAX_MODULE_LINES, each with its allowance and why (none today).
OVERSIZED_MODULES: dict[str, int] = {}


def _subprocess_env() -> dict[str, str]:
    """The environment for a child interpreter: this checkout's src first, whatever is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    return env


def module_names(package_dir: Path = PACKAGE) -> list[str]:
    """Every module of the package under ``package_dir``, dotted (``ponykit.query.cache``), sorted."""
    names = []
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


# ---------------------------------------------------------------------------------------------------------
# Tests

# Run in a fresh interpreter for each module: import it, then check that every ponykit module the import
# loaded is complete (each name of its __all__ is there). A cycle shows as an ImportError ("partially
# initialized module") or an AttributeError, in the import or in the check.
_IMPORT_ONE = """
import importlib, sys
importlib.import_module(sys.argv[1])
for name, module in sorted(sys.modules.items()):
    if name.split(".")[0] == "ponykit" and module is not None:
        missing = [n for n in getattr(module, "__all__", ()) if not hasattr(module, n)]
        if missing:
            raise SystemExit(f"{name} is incomplete after importing {sys.argv[1]}: no {missing}")
"""


def _import_alone(name: str) -> str | None:
    """None when ``name`` imports cleanly in a fresh interpreter, else what went wrong."""
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_ONE, name],
        capture_output=True,
        text=True,
        env=_subprocess_env(),
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    if result.returncode == 0:
        return None
    tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-6:])
    return f"{name} (exit {result.returncode}):\n{tail}"


def test_every_module_imports_on_its_own_in_a_fresh_interpreter() -> None:
    """Each module of src/ponykit is imported first, alone, in a new interpreter (about 0.4 s each; run
    four at a time): import order never matters, and no cycle leaves a module half-initialized."""
    names = module_names()
    assert "ponykit.kit" in names and "ponykit._pony" in names
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [failure for failure in pool.map(_import_alone, names) if failure]
    assert not failures, "modules that do not import on their own:\n\n" + "\n\n".join(failures)


def test_no_private_module_at_the_top_level_but_the_shared_layers() -> None:
    """Only _kit, _sql, _codegen and _pony are private at the top level: a subsystem's private modules
    live inside its package (bulk/_batch.py, not _bulk_batch.py)."""
    private = {path.stem for path in PACKAGE.glob("_*.py") if path.name not in ("__init__.py", "__main__.py")}
    private |= {path.name for path in PACKAGE.glob("_*/") if (path / "__init__.py").exists()}
    unexpected = sorted(private - ALLOWED_PRIVATE_TOP_LEVEL)
    assert not unexpected, (
        f"private top-level modules {unexpected}: move each into the package of the subsystem that uses it "
        f"(only {sorted(ALLOWED_PRIVATE_TOP_LEVEL)} are shared layers)"
    )
    assert {"_sql", "_codegen", "_pony"} <= private  # _kit may not be there yet


def test_the_import_contracts_hold() -> None:
    """``lint-imports`` keeps every contract of pyproject.toml's [tool.importlinter] (the layers, Pony's
    internals behind _pony, the independent subsystems). CI runs it as its own step too."""
    assert importlib.util.find_spec("importlinter") is not None, (
        "import-linter is not installed: pip install -e '.[dev]' (or pip install import-linter)"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--no-cache",
            "--config",
            str(ROOT / "pyproject.toml"),
        ],
        capture_output=True,
        text=True,
        env=_subprocess_env(),
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"lint-imports failed:\n{result.stdout}\n{result.stderr}"
    assert "0 broken" in result.stdout


def test_no_dynamic_import_of_pony_internals_outside_the_door() -> None:
    """lint-imports sees import statements only: no module outside _pony/ reaches Pony's modules through
    importlib or __import__ either."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] == "_pony":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and node.args[0].value.startswith("pony.")
            ):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.args[0].value!r}")
    assert not offenders, "Pony's modules named outside ponykit/_pony:\n" + "\n".join(offenders)


def test_modules_stay_under_500_lines() -> None:
    """A module holds one thing (< ~500 lines); the few over it today may not grow."""
    sizes = {
        path.relative_to(PACKAGE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    too_long = {
        name: lines for name, lines in sizes.items() if lines > OVERSIZED_MODULES.get(name, MAX_MODULE_LINES)
    }
    print(
        "modules over", MAX_MODULE_LINES, "lines:", {n: s for n, s in sizes.items() if s > MAX_MODULE_LINES}
    )
    assert not too_long, (
        f"modules over {MAX_MODULE_LINES} lines (or past their allowance in OVERSIZED_MODULES): {too_long}; "
        "split each by what it holds"
    )
    stale = sorted(name for name in OVERSIZED_MODULES if name not in sizes)
    assert not stale, f"OVERSIZED_MODULES names modules that are gone: {stale}; delete their entries"


# ---------------------------------------------------------------------------------------------------------
# The report: import depth, cycles, longest functions (not a test)


@dataclass(frozen=True)
class Function:
    """One function or method: its qualified name, file and length in lines."""

    name: str
    file: str
    lines: int


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """The line numbers of ``if TYPE_CHECKING:`` blocks (their imports never run)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def import_graph(src: Path, *, runtime_only: bool) -> dict[str, set[str]]:
    """The ponykit-internal imports of each module of ``src/ponykit``: ``{importer: {imported, ...}}``.

    ``runtime_only`` keeps the imports that run when the module is imported (module level, outside
    ``if TYPE_CHECKING``); otherwise imports inside functions count too. ``from package import name``
    points at the submodule when ``name`` is one, else at the package.
    """
    package_dir = src / "ponykit"
    names = set(module_names(package_dir))
    graph: dict[str, set[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_lines(tree)
        nodes: Iterable[ast.AST] = tree.body if runtime_only else ast.walk(tree)
        targets: set[str] = set()
        for node in nodes:
            if getattr(node, "lineno", 0) in skip:
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node)
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    targets.add(candidate if candidate in names else base)
        graph[module] = {target for target in targets if target in names and target != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def longest_chain(graph: dict[str, set[str]]) -> list[str]:
    """The longest chain of imports ``a -> b -> c ...`` with no module twice (depth-first, memoised on the
    graph with each cycle's back edges dropped: exact when there is no cycle)."""
    memo: dict[str, list[str]] = {}
    visiting: set[str] = set()

    def chain(node: str) -> list[str]:
        if node in memo:
            return memo[node]
        visiting.add(node)
        best: list[str] = []
        for target in sorted(graph.get(node, ())):
            if target in visiting:
                continue  # a back edge: part of a cycle, reported separately
            candidate = chain(target)
            if len(candidate) > len(best):
                best = candidate
        visiting.discard(node)
        memo[node] = [node, *best]
        return memo[node]

    return max((chain(node) for node in sorted(graph)), key=len, default=[])


def longest_functions(src: Path, count: int = 15) -> list[Function]:
    """The ``count`` longest functions and methods of ``src/ponykit`` (nested ones on their own too)."""
    found: list[Function] = []

    def walk(node: ast.AST, prefix: str, file: str) -> Iterator[Function]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                yield Function(name, file, (child.end_lineno or child.lineno) - child.lineno + 1)
                yield from walk(child, f"{name}.", file)
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.", file)
            else:
                yield from walk(child, prefix, file)

    for path in sorted((src / "ponykit").rglob("*.py")):
        file = path.relative_to(src).as_posix()
        found.extend(walk(ast.parse(path.read_text(encoding="utf-8")), "", file))
    return sorted(found, key=lambda f: (-f.lines, f.file, f.name))[:count]


def report(src: Path) -> str:
    """The shape of the package under ``src``: import depth, cycles, longest functions (markdown)."""
    out = [f"# {src}", ""]
    for runtime_only, label in ((True, "imports run at import time"), (False, "all imports, lazy ones too")):
        graph = import_graph(src, runtime_only=runtime_only)
        chain = longest_chain(graph)
        found = cycles(graph)
        out.append(f"## {label}: {len(graph)} modules, {sum(map(len, graph.values()))} internal imports")
        out.append(f"- import depth: {len(chain)} modules: {' -> '.join(chain)}")
        out.append(f"- cycles: {len(found)}")
        out.extend(f"  - {' <-> '.join(component)}" for component in found)
        out.append("")
    out.append("## 15 longest functions")
    out.append("| lines | function | file |")
    out.append("|---:|---|---|")
    out.extend(f"| {f.lines} | `{f.name}` | {f.file} |" for f in longest_functions(src))
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--report":
        print(report(Path(sys.argv[2]) if len(sys.argv) > 2 else SRC))
    else:
        print(__doc__)
        raise SystemExit(2)
