"""Run Pony's own test suite with and without ``ponykit.attach()`` and compare the outcomes.

    python tests/pony_suite/run.py                    # sqlite, postgres, mysql
    python tests/pony_suite/run.py sqlite --repeat 3  # one backend, best of 3 timings per mode

Pony ships its suite inside the installed package (``pony.orm.tests``). It picks its database from the
file named by the ``pony_test_db`` environment variable (a Python file defining ``settings = dict(...)``,
read by ``pony/orm/tests/__init__.py``), in-memory SQLite without it. For every backend this script writes
that file, runs the suite once plain and once with ``attach_plugin`` (which attaches ponykit to every
Database the suite binds), and compares the outcome of every test. Servers come from
``PONYKIT_TEST_POSTGRES`` / ``PONYKIT_TEST_MYSQL`` (as for ponykit's own tests); the suite runs in a
database of its own, ``ponykit_pony_suite``, created if missing, because it drops and recreates its tables.

Exit status: 0 when every backend gives the same outcomes with and without ponykit (apart from the
intended differences listed in ``expected_differences.txt`` beside this file), 1 when they differ, 2 when
a backend could not run. Durations and the overhead ratio (attached / plain) are printed per backend.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BACKENDS = ("sqlite", "postgres", "mysql")
URL_VARS = {"postgres": "PONYKIT_TEST_POSTGRES", "mysql": "PONYKIT_TEST_MYSQL"}
SUITE_DATABASE = "ponykit_pony_suite"
EXPECTED = HERE / "expected_differences.txt"

sys.path.insert(0, str(ROOT / "src"))


@dataclass
class Run:
    """One run of Pony's suite: outcomes per test, pytest's duration, wall and CPU time, attach counts."""

    outcomes: Counter[tuple[str, str]]
    suite_seconds: float
    wall_seconds: float
    stats: str
    cpu_seconds: float = 0.0

    def tally(self) -> Counter[str]:
        """How many tests passed, failed, errored and were skipped."""
        counts: Counter[str] = Counter()
        for (_test, outcome), n in self.outcomes.items():
            counts[outcome] += n
        return counts


def settings_for(backend: str, database: str = SUITE_DATABASE) -> str:
    """The ``pony_test_db`` file content for ``backend`` (creating the server-side ``database``)."""
    if backend == "sqlite":
        return 'settings = dict(provider="sqlite", filename=":memory:")\n'
    url = os.environ.get(URL_VARS[backend])
    if not url:
        raise SystemExit(f"{backend}: set {URL_VARS[backend]} to a server URL (see tests/conftest.py)")
    import ponykit

    _provider, kwargs = ponykit.parse_url(url)
    if backend == "postgres":
        import psycopg2

        admin = psycopg2.connect(**kwargs)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{database}"')
        admin.close()
        kwargs = {k: v for k, v in kwargs.items() if k not in ("dbname", "database", "options")}
        kwargs["database"] = database
    else:
        import pymysql

        server = {k: v for k, v in kwargs.items() if k != "db"}
        admin = pymysql.connect(autocommit=True, **server)
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4")
        admin.close()
        kwargs = {**server, "db": database}
    return f"settings = dict(provider={backend!r}, **{kwargs!r})\n"


@dataclass
class Started:
    """A run of the suite in progress."""

    process: subprocess.Popen[bytes]
    label: str
    junit: Path
    stats: Path
    started: float


def start_suite(backend: str, attached: bool, workdir: Path, settings_file: Path, tag: str = "") -> Started:
    """Start ``pony.orm.tests`` in a subprocess with the given ``pony_test_db`` settings."""
    label = f"{backend}-{'attached' if attached else 'plain'}{tag}"
    junit, stats = workdir / f"{label}.xml", workdir / f"{label}.stats"
    for stale in (junit, stats, workdir / f"{label}.cpu"):
        stale.unlink(missing_ok=True)
    env = dict(os.environ)
    env["pony_test_db"] = str(settings_file)
    env["PONYKIT_PONY_SUITE_STATS"] = str(stats)
    env["PONYKIT_PONY_SUITE_CPU"] = str(workdir / f"{label}.cpu")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    command = [sys.executable, "-m", "pytest", "--pyargs", "pony.orm.tests", "-q", "-p", "no:cacheprovider"]
    command += [
        "-p",
        "no:randomly",
        f"--junitxml={junit}",
        "-o",
        "junit_family=xunit1",
        "-p",
        "cpu_time_plugin",
    ]
    if attached:
        command += ["-p", "attach_plugin"]
    # cwd is a scratch directory: the project's pyproject.toml and conftest.py must not take part.
    process = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return Started(process, label, junit, stats, time.perf_counter())


def finish_suite(started: Started) -> Run:
    """Wait for a run and parse its JUnit XML."""
    started.process.wait()
    wall = time.perf_counter() - started.started
    if not started.junit.exists():
        raise SystemExit(f"{started.label}: pytest wrote no report; run it by hand to see why")
    outcomes: Counter[tuple[str, str]] = Counter()
    root = ET.parse(started.junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None
    for case in suite.iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[(test, kinds[0] if kinds else "passed")] += 1
    stats = started.stats
    text = stats.read_text(encoding="utf-8").replace("\n", " ").strip() if stats.exists() else ""
    cpu_file = started.junit.with_suffix(".cpu")
    cpu = float(cpu_file.read_text(encoding="utf-8")) if cpu_file.exists() else 0.0
    return Run(outcomes, float(suite.get("time", "0")), wall, text, cpu)


def expected_differences(backend: str) -> dict[str, str]:
    """Tests whose outcome ponykit changes on purpose on ``backend``: test id -> reason."""
    found: dict[str, str] = {}
    if not EXPECTED.exists():
        return found
    for line in EXPECTED.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where, _, rest = line.partition(" ")
        test, _, reason = rest.strip().partition("#")
        if where in (backend, "all"):
            found[test.strip()] = reason.strip()
    return found


def compare(backend: str, plain: Run, attached: Run) -> tuple[list[str], list[str]]:
    """Differences in outcome, test by test: (unexpected ones, intended ones)."""
    intended = expected_differences(backend)
    differences = []
    for test in sorted({t for t, _ in plain.outcomes} | {t for t, _ in attached.outcomes}):
        before = sorted(o for (t, o), n in plain.outcomes.items() if t == test for _ in range(n))
        after = sorted(o for (t, o), n in attached.outcomes.items() if t == test for _ in range(n))
        if before != after:
            note = f"  (intended: {intended[test]})" if test in intended else ""
            differences.append(
                f"{test}: plain {before or ['absent']} -> attached {after or ['absent']}{note}"
            )
    return [d for d in differences if "(intended:" not in d], [d for d in differences if "(intended:" in d]


def run_backend(backend: str, repeat: int, workdir: Path, parallel: bool) -> tuple[int, list[str]]:
    """Run the suite plain and attached on one backend; (0 when no difference, the report's lines).

    Sequential runs (the default) share one database and give comparable timings. ``parallel`` runs
    both modes at once, each in its own database: faster (CI), but the timings then compete.
    """
    files = {}
    try:
        for attached in (False, True):
            database = SUITE_DATABASE + (("_attached" if attached else "_plain") if parallel else "")
            files[attached] = workdir / f"{backend}-{database}.settings.py"
            files[attached].write_text(settings_for(backend, database), encoding="utf-8")
            files[attached].chmod(0o600)  # it may hold a server password
    except SystemExit as exc:
        return 2, [f"== {backend}: cannot run: {exc}"]
    runs: dict[bool, list[Run]] = {False: [], True: []}
    for round_ in range(max(1, repeat)):
        if parallel:
            both = [start_suite(backend, a, workdir, files[a], f"-{round_}") for a in (False, True)]
            for attached, started in zip((False, True), both, strict=True):
                runs[attached].append(finish_suite(started))
            continue
        for attached in (False, True):  # alternate, so load changes hit both modes alike
            runs[attached].append(finish_suite(start_suite(backend, attached, workdir, files[attached])))
    plain, with_kit = runs[False][0], runs[True][0]
    unexpected, intended = compare(backend, plain, with_kit)
    for later in runs[False][1:] + runs[True][1:]:
        unexpected += [f"(repeat) {d}" for d in compare(backend, plain, later)[0]]
    tests = {mode: min(r.suite_seconds for r in runs[mode]) for mode in runs}
    wall = {mode: min(r.wall_seconds for r in runs[mode]) for mode in runs}
    cpu = {mode: min(r.cpu_seconds for r in runs[mode]) for mode in runs}
    ratio = tests[True] / tests[False] if tests[False] else float("nan")
    cpu_ratio = cpu[True] / cpu[False] if cpu[False] else float("nan")
    how = "in parallel, timings compete" if parallel else f"fastest of {max(1, repeat)}"
    lines = [
        f"== {backend}",
        f"  plain:    {dict(plain.tally())}  tests {tests[False]:.1f}s, wall {wall[False]:.1f}s, "
        f"CPU {cpu[False]:.1f}s",
        f"  attached: {dict(with_kit.tally())}  tests {tests[True]:.1f}s, wall {wall[True]:.1f}s, "
        f"CPU {cpu[True]:.1f}s",
        f"  Databases bound/attached in the attached run: {with_kit.stats or 'no report'}",
        f"  overhead attached/plain: {cpu_ratio:.2f} (CPU time of the test process), {ratio:.2f} (pytest's "
        f"test time), {wall[True] / wall[False]:.2f} (wall); {how}",
    ]
    own = [f"{t} ({o})" for (t, o) in sorted(plain.outcomes) if o in ("failure", "error")]
    if own:  # Pony's suite has backend-specific failures of its own (105 on MariaDB): show a few
        shown = ", ".join(own[:5]) + (f" and {len(own) - 5} more" if len(own) > 5 else "")
        lines.append(f"  not passing without ponykit either (Pony's own, {len(own)}): {shown}")
    status = 0
    if "attached=0" in with_kit.stats or not with_kit.stats:
        lines.append("  ERROR: the attached run attached no Database (attach_plugin not active?)")
        status = 1
    lines += [f"  intended difference: {line}" for line in intended]
    lines += [f"  DIFFERENCE: {line}" for line in unexpected]
    if unexpected:
        status = 1
    elif status == 0:
        lines.append("  same outcomes with and without ponykit")
    return status, lines


def main() -> int:
    """Parse the arguments, run every backend asked for, print the verdict."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("backends", nargs="*", help=f"any of {', '.join(BACKENDS)} (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per mode; timings are the fastest")
    parser.add_argument(
        "--parallel",
        action="store_true",
        help="run every backend and both modes at once, each in its own database (CI: outcomes only)",
    )
    args = parser.parse_args()
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(sorted(unknown))}: choose from {', '.join(BACKENDS)}")
    backends = args.backends or list(BACKENDS)
    with tempfile.TemporaryDirectory(prefix="pony-suite-") as scratch:
        workdir = Path(scratch)
        if args.parallel:
            with ThreadPoolExecutor(max_workers=len(backends)) as pool:
                results = list(pool.map(lambda b: run_backend(b, args.repeat, workdir, True), backends))
        else:
            results = []
            for backend in backends:
                results.append(run_backend(backend, args.repeat, workdir, False))
                print("\n".join(results[-1][1]), flush=True)
    if args.parallel:
        for _status, lines in results:
            print("\n".join(lines))
    status = max(s for s, _ in results)
    print("Pony's suite with ponykit attached: " + ("PASSED" if status == 0 else "FAILED"))
    return status


if __name__ == "__main__":
    sys.exit(main())
