"""Turn pytest-benchmark's JSON output into Markdown tables, one per benchmark group.

    python benchmarks/report.py results.json [--baseline raw] [--stat median] [-o table.md]
    python benchmarks/report.py after.json --before before.json   # two runs of one change, side by side

Each table lists the group's contenders (fastest first) with the chosen statistic (median by default), the
ratio to the baseline contender and the number of rounds. A benchmark's contender is
``extra_info["contender"]`` when set, otherwise the last ``_``-separated word of its test function name
(``test_bulk_insert_raw[postgres]`` -> ``raw``). The baseline is the contender named exactly ``--baseline``,
or else the one whose contender or test name contains it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATS = ("median", "mean", "min", "max")


@dataclass(frozen=True)
class Entry:
    group: str
    contender: str
    name: str
    value: float
    rounds: int


def contender_of(bench: dict[str, Any]) -> str:
    """The contender a benchmark stands for: ``extra_info["contender"]`` or its function name's suffix."""
    extra = bench.get("extra_info") or {}
    if extra.get("contender"):
        return str(extra["contender"])
    name = str(bench.get("name") or bench.get("fullname") or "?")
    func = name.split("[", 1)[0].rsplit("::", 1)[-1]
    return func.rsplit("_", 1)[-1] or func


def load(path: Path, stat: str = "median") -> list[Entry]:
    """The benchmarks of one ``--benchmark-json`` file (those without stats, e.g. disabled, are skipped)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    entries = []
    for bench in data.get("benchmarks", []):
        stats = bench.get("stats") or {}
        if stat not in stats:
            continue
        entries.append(
            Entry(
                group=str(bench.get("group") or "(no group)"),
                contender=contender_of(bench),
                name=str(bench.get("name", "")),
                value=float(stats[stat]),
                rounds=int(stats.get("rounds", 0)),
            )
        )
    return entries


def format_time(seconds: float) -> str:
    """``1.23 ms``-style text with three significant digits."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{_sig3(seconds / scale)} {unit}"
    return f"{_sig3(seconds / 1e-9)} ns"


def _sig3(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def find_baseline(entries: Sequence[Entry], baseline: str) -> Entry | None:
    """The group's baseline entry: exact contender match first, then a substring of contender or name."""
    for entry in entries:
        if entry.contender == baseline:
            return entry
    for entry in entries:
        if baseline in entry.contender or baseline in entry.name.split("[", 1)[0]:
            return entry
    return None


def table(group: str, entries: Sequence[Entry], baseline: str, stat: str = "median") -> str:
    """One group's Markdown section: a heading and a table of contenders, fastest first."""
    base = find_baseline(entries, baseline)
    ratio_head = f"× {base.contender}" if base is not None else f"× {baseline}"
    lines = [
        f"### {group}",
        "",
        f"| contender | {stat} | {ratio_head} | rounds |",
        "|---|---:|---:|---:|",
    ]
    for entry in sorted(entries, key=lambda e: (e.value, e.contender)):
        if base is None or base.value <= 0:
            ratio = "–"
        elif entry is base:
            ratio = "**1.00**"
        else:
            ratio = f"{entry.value / base.value:.2f}"
        lines.append(f"| {entry.contender} | {format_time(entry.value)} | {ratio} | {entry.rounds} |")
    if base is None:
        lines += ["", f"_no `{baseline}` contender in this group_"]
    return "\n".join(lines)


def render(entries: Sequence[Entry], baseline: str, stat: str = "median") -> str:
    """All groups, in natural sort order of their names, as one Markdown document fragment."""
    groups: dict[str, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.group, []).append(entry)
    parts = [table(g, groups[g], baseline, stat) for g in sorted(groups, key=_natural)]
    return "\n\n".join(parts) + "\n" if parts else ""


def compare(before: Sequence[Entry], after: Sequence[Entry], baseline: str) -> str:
    """Two runs side by side (the code before and after a change, measured in one session).

    Per group and contender: the ratio to the baseline contender in each run, and after/before of that
    ratio. Ratios, not times, are compared: they cancel what the machine's load did to both runs alike.
    """

    def ratios(entries: Sequence[Entry]) -> dict[tuple[str, str], float]:
        groups: dict[str, list[Entry]] = {}
        for entry in entries:
            groups.setdefault(entry.group, []).append(entry)
        out = {}
        for group, members in groups.items():
            base = find_baseline(members, baseline)
            if base is None or base.value <= 0:
                continue
            for entry in members:
                out[(group, entry.contender)] = entry.value / base.value
        return out

    old, new = ratios(before), ratios(after)
    lines = [
        f"| group | contender | before × {baseline} | after × {baseline} | after / before |",
        "|---|---|---:|---:|---:|",
    ]
    for group, contender in sorted(old.keys() & new.keys(), key=lambda k: (_natural(k[0]), k[1])):
        b, a = old[(group, contender)], new[(group, contender)]
        lines.append(f"| {group} | {contender} | {b:.2f} | {a:.2f} | {a / b:.2f} |")
    return "\n".join(lines) + "\n"


def _natural(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Markdown tables (per benchmark group) from pytest-benchmark --benchmark-json output."
    )
    parser.add_argument("results", type=Path, help="file written by pytest --benchmark-json=FILE")
    parser.add_argument("--baseline", default="raw", help="contender the ratios are relative to (raw)")
    parser.add_argument("--stat", default="median", choices=STATS, help="statistic to show (median)")
    parser.add_argument("-o", "--output", type=Path, help="write the Markdown here instead of stdout")
    parser.add_argument("--before", type=Path, help="a run of the code before a change: compare ratios")
    args = parser.parse_args(argv)
    try:
        entries = load(args.results, args.stat)
    except (OSError, ValueError) as exc:
        print(f"report.py: cannot read {args.results}: {exc}", file=sys.stderr)
        return 2
    if not entries:
        print(
            f"report.py: {args.results} holds no timed benchmarks (was it run with --benchmark-disable?)",
            file=sys.stderr,
        )
        return 1
    if args.before is not None:
        try:
            text = compare(load(args.before, args.stat), entries, args.baseline)
        except (OSError, ValueError) as exc:
            print(f"report.py: cannot read {args.before}: {exc}", file=sys.stderr)
            return 2
    else:
        text = render(entries, args.baseline, args.stat)
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
