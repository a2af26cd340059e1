"""pydantic_model: validating Pony objects into the generated read model, beside to_dict.

One group per backend, ``pydantic-<M>-<backend>``, over M loaded ``bench_item`` objects (M = 1,000; 200
with ``--benchmark-disable``), each on its own:

* ``to_dict``: ``obj.to_dict()`` (ponykit's serializer, the generated per-class method);
* ``ponykit-model``: ``pk.pydantic_model(Item).model_validate(obj)`` (reads through to_dict's plan, then
  Pydantic parses the JSON forms into Python values);
* ``ponykit-model-dump``: the same, then ``model_dump(mode="json")`` (what a FastAPI response does);
* ``hand-written``: a hand-written Pydantic model with ``from_attributes=True`` (what Pony's FastAPI doc
  suggests), ``model_validate(obj)``.

``test_pydantic_ratios`` prints the ratios to ``to_dict`` and to the hand-written model; the target is
that the generated model costs no more than 1.5x the hand-written one (checked when timing is on).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from pony.orm import db_session, select

import ponykit as pk

from .test_serialization import _seed, _serializable_item

pydantic = pytest.importorskip("pydantic")
pytestmark = pytest.mark.benchmark

FULL = 1_000


class HandItem(pydantic.BaseModel):
    """The model a Pony user writes by hand for bench_item."""

    model_config = pydantic.ConfigDict(from_attributes=True)
    id: int
    name: str
    qty: int
    price: Decimal
    created: dt.datetime
    active: bool
    note: str | None


def _m(request: pytest.FixtureRequest) -> int:
    return 200 if request.config.getoption("benchmark_disable") else FULL


def _runs(env: Any, m: int) -> tuple[dict[str, Callable[[], list[Any]]], Callable[[], None]]:
    item = _serializable_item(env)
    model = pk.pydantic_model(item)
    session = db_session()
    session.__enter__()
    objects = list(select(i for i in item).order_by(item.id)[:m])
    runs: dict[str, Callable[[], list[Any]]] = {
        "to_dict": lambda: [o.to_dict() for o in objects],
        "ponykit-model": lambda: [model.model_validate(o) for o in objects],
        "ponykit-model-dump": lambda: [model.model_validate(o).model_dump(mode="json") for o in objects],
        "hand-written": lambda: [HandItem.model_validate(o) for o in objects],
    }
    return runs, lambda: session.__exit__(None, None, None)


@pytest.mark.parametrize("contender", ["to_dict", "ponykit-model", "ponykit-model-dump", "hand-written"])
def test_pydantic_validate(benchmark: Any, bench_env: Any, request: Any, contender: str) -> None:
    """M loaded objects through each contender."""
    m = _m(request)
    _seed(bench_env, m)
    benchmark.group = f"pydantic-{m}-{bench_env.name}"
    benchmark.extra_info["contender"] = contender
    benchmark.extra_info["backend"] = bench_env.name
    runs, close = _runs(bench_env, m)
    try:
        out = benchmark(runs[contender])
    finally:
        close()
    assert len(out) == m


def test_pydantic_ratios(bench_env: Any, request: Any) -> None:
    """Ratios to to_dict and to the hand-written model; the generated model within 1.5x hand-written."""
    m = _m(request)
    _seed(bench_env, m)
    runs, close = _runs(bench_env, m)
    try:
        dumped = runs["ponykit-model-dump"]()
        assert dumped == runs["to_dict"]()  # the same output, or the comparison means nothing
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(1 if request.config.getoption("benchmark_disable") else 7):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - start)
    finally:
        close()
    base, hand = best["to_dict"], best["hand-written"]
    print({k: f"{v * 1e3:.2f} ms" for k, v in best.items()})
    print(
        f"\n{bench_env.name}: model_validate {best['ponykit-model'] / base:.2f}x to_dict, "
        f"{best['ponykit-model'] / hand:.2f}x hand-written; "
        f"with dump {best['ponykit-model-dump'] / base:.2f}x"
    )
    if not request.config.getoption("benchmark_disable"):
        ratio = best["ponykit-model"] / hand
        assert ratio <= 1.5, f"generated read model is {ratio:.2f}x the hand-written one (target 1.5x)"
