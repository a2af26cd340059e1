"""Encrypted attributes: what does ``EncryptedStr`` add per value, next to bare AES-GCM?

Two groups per backend:

* ``types-encrypted-insert-load-<N>-<backend>``: insert N rows through Pony and load them back, with one
  ``str`` column (contender ``pony``) and with one ``EncryptedStr`` column (``ponykit``), beside the bare
  AES-GCM encrypt+decrypt of the same N values (``aesgcm``, no database).
* ``types-encrypted-codec-<N>-<backend>``: only the per-value work the column's converter does on the way
  in and out (validate, val2dbval, py2sql, sql2py, dbval2val), for ``str`` (``pony``) and ``EncryptedStr``
  (``ponykit``), beside ``aesgcm``.

Target (issue 3): ponykit's added cost per value, ``(ponykit - pony) / N``, at most 2x the bare AES-GCM
cost per value. ``test_encrypted_added_cost_ratio`` checks it on the codec path (stable) when timings are
on; the end-to-end group shows the same difference inside real inserts and loads.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pony.orm import Database, Required, db_session

import ponykit as pk
from ponykit import _pony

pytestmark = pytest.mark.benchmark

KEY = pk.security.KeyRing.generate_key()
_envs: dict[str, tuple[Any, Any]] = {}


def _n(request: pytest.FixtureRequest, full: int) -> int:
    return 200 if request.config.getoption("benchmark_disable") else full


def _values(n: int) -> list[str]:
    return [f"user{i:06d}@example.com/padding-to-40-b"[:40] for i in range(n)]


def _entities(bench_env: Any) -> tuple[Any, Any]:
    """(PlainSecret on plain Pony, KitSecret on an attached Database) for this backend, made once."""
    found = _envs.get(bench_env.name)
    if found is not None:
        return found
    plain_db, kit_db = Database(), Database()

    class PlainSecret(plain_db.Entity):
        _table_ = "bench_types_plain"
        value = Required(str, 100)

    class KitSecret(kit_db.Entity):
        _table_ = "bench_types_secret"
        value = Required(pk.types.EncryptedStr)

    pk.bind_url(plain_db, bench_env.url)
    plain_db.generate_mapping(create_tables=True)
    pk.bind_url(kit_db, bench_env.url)
    pk.attach(kit_db, keys=pk.security.KeyRing({"k1": KEY}))
    kit_db.generate_mapping(create_tables=True)
    _envs[bench_env.name] = (PlainSecret, KitSecret)
    return PlainSecret, KitSecret


def _truncate(entity: Any) -> Callable[[], None]:
    def clear() -> None:
        with db_session:
            entity.select().delete(bulk=True)

    return clear


def _insert_load(entity: Any, values: list[str]) -> Callable[[], list[str]]:
    def run() -> list[str]:
        with db_session:
            for v in values:
                entity(value=v)
        with db_session:
            return [o.value for o in entity.select().order_by(entity.id)]

    return run


def _aesgcm(values: list[str]) -> Callable[[], list[str]]:
    cipher = AESGCM(os.urandom(32))
    aad = b"v1:k1:\x00Entity.attr"

    def run() -> list[str]:
        out = []
        for v in values:
            nonce = os.urandom(12)
            sealed = cipher.encrypt(nonce, v.encode(), aad)
            out.append(cipher.decrypt(nonce, sealed, aad).decode())
        return out

    return run


def _codec(attr: Any, values: list[str]) -> Callable[[], list[str]]:
    converter = _pony.attribute_converter(attr)

    def run() -> list[str]:
        out = []
        for v in values:
            stored = converter.py2sql(converter.val2dbval(converter.validate(v, None), None))
            out.append(converter.dbval2val(converter.sql2py(stored), None))
        return out

    return run


def _label(benchmark: Any, group: str, contender: str, env: Any) -> None:
    benchmark.group = f"{group}-{env.name}"
    benchmark.extra_info["contender"] = contender
    benchmark.extra_info["backend"] = env.name


@pytest.mark.parametrize("contender", ["pony", "ponykit"])
def test_encrypted_insert_load(benchmark: Any, bench_env: Any, request: Any, contender: str) -> None:
    n = _n(request, 10_000)
    plain, kit = _entities(bench_env)
    entity = kit if contender == "ponykit" else plain
    _label(benchmark, f"types-encrypted-insert-load-{n}", contender, bench_env)
    values = _values(n)
    result = benchmark.pedantic(_insert_load(entity, values), setup=_truncate(entity), rounds=3)
    assert result == values


def test_encrypted_insert_load_aesgcm(benchmark: Any, bench_env: Any, request: Any) -> None:
    n = _n(request, 10_000)
    _label(benchmark, f"types-encrypted-insert-load-{n}", "aesgcm", bench_env)
    values = _values(n)
    assert benchmark.pedantic(_aesgcm(values), rounds=3) == values


@pytest.mark.parametrize("contender", ["pony", "ponykit", "aesgcm"])
def test_encrypted_codec(benchmark: Any, bench_env: Any, request: Any, contender: str) -> None:
    n = _n(request, 10_000)
    plain, kit = _entities(bench_env)
    _label(benchmark, f"types-encrypted-codec-{n}", contender, bench_env)
    values = _values(n)
    run = (
        _aesgcm(values)
        if contender == "aesgcm"
        else _codec((kit if contender == "ponykit" else plain).value, values)
    )
    assert benchmark.pedantic(run, rounds=10) == values


@pytest.mark.bench_backends("sqlite")
def test_encrypted_added_cost_ratio(bench_env: Any, request: Any) -> None:
    """ponykit's added cost per encrypted value is at most 2x bare AES-GCM (checked when timing is on)."""
    n = _n(request, 10_000)
    plain, kit = _entities(bench_env)
    values = _values(n)
    runs = {
        "pony": _codec(plain.value, values),
        "ponykit": _codec(kit.value, values),
        "aesgcm": _aesgcm(values),
    }
    # Interleaved, best of 15: the three see the same machine load, and the minimum drops interference.
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(15):
        for name, run in runs.items():
            start = time.perf_counter()
            assert run() == values
            best[name] = min(best[name], time.perf_counter() - start)
    added = (best["ponykit"] - best["pony"]) / n
    bare = best["aesgcm"] / n
    print(
        f"\nadded {added * 1e6:.2f} us/value, bare AES-GCM {bare * 1e6:.2f} us/value, "
        f"ratio {added / bare:.2f}"
    )
    if not request.config.getoption("benchmark_disable"):
        assert added <= 2 * bare, f"added cost {added * 1e6:.2f} us/value > 2 x AES-GCM {bare * 1e6:.2f} us"
