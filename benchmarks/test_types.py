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

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pony.orm import Database, Required, db_session

import ponykit as pk
from benchmarks.cores import separate_cores, server_backend_pid
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


# ---------------------------------------------------------------------------------------------------------
# Searchable lookups and key rotation (issue #12 items 16 and 20)
#
# * ``types-encrypted-lookup-<N>-<backend>``: 200 ``Entity.get(email=v)`` of existing values in a table of
#   N rows, for an indexed plain ``str`` column on plain Pony (``pony``) and a searchable ``EncryptedStr``
#   (``ponykit``, served by the lookup index ponykit creates). Target: ponykit <= 1.5x pony on PostgreSQL
#   and MariaDB (``test_searchable_lookup_ratio``, interleaved best-of-15, this process and PostgreSQL on
#   separate cores; reported, not checked, on SQLite).
# * ``types-rotate-<N>-<backend>``: ``rotate_keys`` over N searchable values (each round switches the
#   primary key, so every value is rewritten). ``extra_info["values_per_s"]``; target >= 50,000 on
#   PostgreSQL.

_lookup_envs: dict[tuple[str, int], tuple[Any, Any, Any]] = {}
_attached_plain: dict[tuple[str, int], Any] = {}
LOOKUPS = 200
KEY2 = pk.security.KeyRing.generate_key()


def _lookup_entities(bench_env: Any, n: int) -> tuple[Any, Any, Any]:
    """(LookupPlain, LookupSecret, kit) for this backend, each table holding n rows, made once."""
    found = _lookup_envs.get((bench_env.name, n))
    if found is not None:
        return found
    plain_db, kit_db = Database(), Database()

    class LookupPlain(plain_db.Entity):
        _table_ = f"bench_lookup_plain_{n}"
        email = Required(str, 100, index=True)

    class LookupSecret(kit_db.Entity):
        _table_ = f"bench_lookup_secret_{n}"
        email = Required(pk.types.EncryptedStr, searchable=True)

    pk.bind_url(plain_db, bench_env.url)
    plain_db.generate_mapping(create_tables=True)
    pk.bind_url(kit_db, bench_env.url)
    kit = pk.attach(kit_db, keys=pk.security.KeyRing({"k1": KEY}))
    kit_db.generate_mapping(create_tables=True)
    values = _values(n)
    with db_session:
        LookupPlain.select().delete(bulk=True)
        cursor = plain_db.get_connection().cursor()
        mark = _pony.positional_placeholder(plain_db)
        table = _pony.quote_name(plain_db, LookupPlain._table_)
        cursor.executemany(f"INSERT INTO {table} (email) VALUES ({mark})", [(v,) for v in values])
    with db_session:
        LookupSecret.select().delete(bulk=True)
        pk.bulk_insert(LookupSecret, ({"email": v} for v in values))
    _analyze(plain_db, LookupPlain._table_)
    _analyze(kit_db, LookupSecret._table_)
    _lookup_envs[(bench_env.name, n)] = (LookupPlain, LookupSecret, kit)
    return _lookup_envs[(bench_env.name, n)]


def _attached_plain_entity(bench_env: Any, n: int) -> Any:
    """An indexed plain ``str`` column on an *attached* Database (same rows as LookupPlain): what ponykit's
    per-statement hooks add to a lookup, apart from the encryption."""
    found = _attached_plain.get((bench_env.name, n))
    if found is not None:
        return found
    db = Database()

    class LookupAttached(db.Entity):
        _table_ = f"bench_lookup_attached_{n}"
        email = Required(str, 100, index=True)

    pk.bind_url(db, bench_env.url)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        LookupAttached.select().delete(bulk=True)
        cursor = db.get_connection().cursor()
        mark = _pony.positional_placeholder(db)
        table = _pony.quote_name(db, LookupAttached._table_)
        cursor.executemany(f"INSERT INTO {table} (email) VALUES ({mark})", [(v,) for v in _values(n)])
    _analyze(db, LookupAttached._table_)
    _attached_plain[(bench_env.name, n)] = LookupAttached
    return LookupAttached


def _analyze(db: Any, table: str) -> None:
    # Statistics for every contender's table before timing, as the server's autoanalyze would have them
    # in production: otherwise it may run in the middle of one contender's rounds and not the other's.
    keyword = "ANALYZE TABLE" if _pony.dialect(db) == "mysql" else "ANALYZE"
    with db_session:
        db.execute(f"{keyword} {_pony.quote_name(db, table)}")


@contextlib.contextmanager
def _round_trip_cores(bench_env: Any) -> Iterator[str]:
    """This process and a local PostgreSQL server on separate cores (benchmarks/cores.py): left to the
    scheduler, one contender's backend may share this process's core and answer round trips in ~30 us
    while another's, on the other core of this VM, takes ~100 us (measured), whatever the query."""
    with separate_cores(server_backend_pid(bench_env)) as how:
        yield how


def _lookups(entity: Any, wanted: list[str]) -> Callable[[], int]:
    def run() -> int:
        found = 0
        with db_session:
            for v in wanted:
                found += entity.get(email=v) is not None
        return found

    return run


def _wanted(n: int) -> list[str]:
    values = _values(n)
    step = max(1, n // LOOKUPS)
    return [values[i] for i in range(0, n, step)][:LOOKUPS]


@pytest.mark.parametrize("contender", ["pony", "ponykit"])
def test_searchable_lookup(benchmark: Any, bench_env: Any, request: Any, contender: str) -> None:
    n = _n(request, 100_000)
    plain, secret, _kit = _lookup_entities(bench_env, n)
    _label(benchmark, f"types-encrypted-lookup-{n}", contender, bench_env)
    wanted = _wanted(n)
    run = _lookups(secret if contender == "ponykit" else plain, wanted)
    with _round_trip_cores(bench_env):
        assert benchmark.pedantic(run, rounds=5, warmup_rounds=1) == len(wanted)


def test_searchable_lookup_ratio(bench_env: Any, request: Any) -> None:
    """A searchable lookup costs at most 1.5x a lookup of an indexed plain str (checked when timing is on)."""
    n = _n(request, 100_000)
    plain, secret, _kit = _lookup_entities(bench_env, n)
    wanted = _wanted(n)
    attached = _attached_plain_entity(bench_env, n)
    runs = {
        "pony": _lookups(plain, wanted),
        "attached": _lookups(attached, wanted),
        "ponykit": _lookups(secret, wanted),
    }
    best = dict.fromkeys(runs, float("inf"))
    with _round_trip_cores(bench_env) as placement:
        for _ in range(15):  # interleaved, best of 15: both see the same machine load
            for name, run in runs.items():
                start = time.perf_counter()
                assert run() == len(wanted)
                best[name] = min(best[name], time.perf_counter() - start)
    ratio = best["ponykit"] / best["pony"]
    print(
        f"\n{bench_env.name} {n} rows ({placement}): pony {best['pony'] / len(wanted) * 1e3:.3f} ms/lookup, "
        f"ponykit {best['ponykit'] / len(wanted) * 1e3:.3f} ms/lookup, ratio {ratio:.2f} "
        f"(attached plain str {best['attached'] / len(wanted) * 1e3:.3f} ms/lookup, "
        f"{best['attached'] / best['pony']:.2f}x)"
    )
    # The target is for server backends, where a lookup is a round trip. SQLite answers an indexed lookup
    # in-process in ~50 us, next to which the blind index (HMAC) and the decryption of the row found
    # (AES-GCM) are a large share: its ratio is reported, not checked.
    if not request.config.getoption("benchmark_disable") and bench_env.name in ("postgres", "mysql"):
        assert ratio <= 1.5, f"searchable lookup {ratio:.2f}x an indexed str lookup (target 1.5x)"


def test_rotate_keys_speed(benchmark: Any, bench_env: Any, request: Any) -> None:
    n = _n(request, 100_000)
    _plain, secret, kit = _lookup_entities(bench_env, n)
    _label(benchmark, f"types-rotate-{n}", "ponykit", bench_env)
    rings = [pk.security.KeyRing({"k2": KEY2, "k1": KEY}), pk.security.KeyRing({"k1": KEY, "k2": KEY2})]

    def switch_primary() -> None:
        kit.keys = rings[0] if kit.keys.primary == "k1" else rings[1]

    def rotate() -> int:
        return int(pk.security.rotate_keys(secret, batch_size=5000))

    assert benchmark.pedantic(rotate, setup=switch_primary, rounds=3) == n
    stats = benchmark.stats
    if stats is not None:
        best = stats.stats.min
        benchmark.extra_info["values_per_s"] = round(n / best)
        print(f"\n{bench_env.name}: rotate_keys {n / best:,.0f} values/s (best of 3)")
    kit.keys = pk.security.KeyRing({"k1": KEY, "k2": KEY2})
