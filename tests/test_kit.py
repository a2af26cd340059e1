"""attach() and get_kit(): the one set-up call, its timing rules and its per-Database scope."""

from __future__ import annotations

from typing import Any

import pytest
from pony.orm import Database, Required, db_session

import ponykit as pk
from ponykit import _pony


def test_attach_before_bind_says_when_to_call_it() -> None:
    """attach() on an unbound Database raises ConfigurationError explaining the order of calls."""
    with pytest.raises(pk.ConfigurationError) as info:
        pk.attach(Database())
    assert "before the Database was bound" in str(info.value)
    assert "bind_url(db, url)" in str(info.value) and "generate_mapping" in str(info.value)


def test_attach_after_mapping_says_when_to_call_it(db: Database) -> None:
    """attach() after generate_mapping raises ConfigurationError naming the right moment."""

    class Thing(db.Entity):
        name = Required(str)

    db.generate_mapping(create_tables=True)
    with pytest.raises(pk.ConfigurationError, match="after db.generate_mapping"):
        pk.attach(db)


def test_attach_rejects_non_database() -> None:
    """attach() names the type it was given when it is not a Database."""
    with pytest.raises(pk.ConfigurationError, match="got str"):
        pk.attach("sqlite://:memory:")  # type: ignore[arg-type]


def test_second_attach_returns_same_kit_and_keeps_options(db: Database) -> None:
    """A second attach() returns the same Kit, replaces the options given and installs nothing twice."""
    first = pk.attach(db, keys="ring-1", cache="cache-1")
    second = pk.attach(db, keys="ring-2")
    assert second is first
    assert first.keys == "ring-2" and first.cache == "cache-1"
    assert _pony.is_provider_method_wrapped(db, "commit")


def test_get_kit(db: Database) -> None:
    """get_kit() returns the attached Kit and explains how to attach when there is none."""
    with pytest.raises(pk.ConfigurationError, match=r"call ponykit.attach\(db\)"):
        pk.get_kit(db)
    kit = pk.attach(db)
    assert pk.get_kit(db) is kit and kit.db is db


def test_kit_repr_hides_keys_and_cache_contents(db: Database) -> None:
    """The Kit's repr names the key ring's type, never its contents."""

    class SecretRing:
        secret = "s3cr3t-material"

        def __repr__(self) -> str:
            return f"SecretRing({self.secret})"

    kit = pk.attach(db, keys=SecretRing())
    assert "s3cr3t" not in repr(kit) and "SecretRing" in repr(kit)


def test_register_converter_only_before_mapping(db: Database) -> None:
    """register_converter works before mapping and raises afterwards with the fix in the message."""

    class Upper(str):
        pass

    base = _pony.converter_class_for(db, str)

    class UpperConverter(base):  # type: ignore[misc, valid-type]
        def validate(self, val: Any, obj: Any = None) -> Any:
            return Upper(super().validate(val, obj).upper())

    kit = pk.attach(db)
    kit.register_converter(Upper, UpperConverter)

    class Shout(db.Entity):
        word = Required(Upper)

    db.generate_mapping(create_tables=True)
    with db_session:
        Shout(word="hey")
    with db_session:
        assert Shout.select().first().word == "HEY"
    with pytest.raises(pk.ConfigurationError, match="before db.generate_mapping"):
        kit.register_converter(Upper, UpperConverter)


def test_converters_do_not_leak_to_other_databases(make_db: Any) -> None:
    """A converter registered through one Kit is unknown to another Database in the same process."""
    db1, db2 = make_db(), make_db()

    class Tagged(str):
        pass

    base = _pony.converter_class_for(db1, str)

    class TaggedConverter(base):  # type: ignore[misc, valid-type]
        pass

    pk.attach(db1).register_converter(Tagged, TaggedConverter)
    pk.attach(db2)
    assert _pony.converter_class_for(db1, Tagged) is TaggedConverter
    assert _pony.converter_class_for(db2, Tagged) is not TaggedConverter


def test_execute_listener_sees_every_statement(db: Database) -> None:
    """Execute listeners see ORM and raw statements with timings, and can be removed."""

    class Row(db.Entity):
        name = Required(str)

    kit = pk.attach(db)
    db.generate_mapping(create_tables=True)
    seen: list[tuple[str, float]] = []
    remove = kit.add_execute_listener(lambda d, sql, args, secs, err: seen.append((sql, secs)))
    with db_session:
        Row(name="a")
        Row.select().count()
    assert any(sql.upper().startswith("INSERT") for sql, _ in seen)
    assert any("COUNT" in sql.upper() for sql, _ in seen)
    assert all(secs >= 0 for _, secs in seen)
    remove()
    count = len(seen)
    with db_session:
        Row.select().count()
    assert len(seen) == count


def test_failing_execute_listener_does_not_break_queries(db: Database) -> None:
    """A listener that raises is logged; the statement's result is unaffected."""

    class Row(db.Entity):
        name = Required(str)

    kit = pk.attach(db)
    db.generate_mapping(create_tables=True)
    kit.add_execute_listener(lambda *a: 1 / 0)
    with db_session:
        Row(name="a")
    with db_session:
        assert Row.select().count() == 1


# ---------------------------------------------------------------------------------------------------------
# The installers: explicit, ordered, idempotent, independent of import order


def installed_state(db: Database) -> dict[str, Any]:
    """What attach() left on ``db``: provider wrappers, converters, listeners, subscribers, installers."""
    kit = pk.get_kit(db)
    provider = db.provider

    def name(obj: Any) -> str:
        obj = getattr(obj, "func", obj)  # functools.partial
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"

    return {
        "wrapped": sorted(n for n in vars(provider) if _pony.is_provider_method_wrapped(db, n)),
        "converters": [f"{name(t)}={c.__name__}" for t, c in kit.converters.items()],
        "provider_converters": [name(t) for t, _ in provider.converter_classes],
        "param_encoders": sorted(name(t) for t in kit.param_encoders),
        "listeners": [name(f) for f in kit.execute_listeners],
        "subscribers": [name(f) for f in kit.subscribers],
        "installed": list(kit.installed),
        "sqlbuilder": provider.sqlbuilder_cls.__name__,
        "dbschema": provider.dbschema_cls.__name__,
        "index_renderers": len(getattr(provider.dbschema_cls, "_ponykit_index_renderers_", ())),
    }


def test_attach_runs_the_installers_in_order(db: Database) -> None:
    """attach() runs kit.INSTALLERS in their order and records each on the Kit."""
    from ponykit import kit as kit_module

    kit = pk.attach(db)
    expected = [f"{f.__module__}.{f.__qualname__}" for f in kit_module.INSTALLERS]
    assert list(kit.installed) == expected
    assert expected[0] == "ponykit.transactions._hooks.install"
    assert expected[-1] == "ponykit.query.cache.install"


def test_attach_twice_installs_nothing_twice(db: Database) -> None:
    """A second (and third) attach() leaves the same wrappers, converters, listeners and subscribers."""
    pk.attach(db)
    first = installed_state(db)
    assert first["listeners"] and first["subscribers"] and "commit" in first["wrapped"]
    pk.attach(db, reraise_callback_errors=True)
    pk.attach(db)
    assert installed_state(db) == first


def test_failed_attach_leaves_no_kit() -> None:
    """attach() refuses an unbound Database (and a bad option) before making a Kit."""
    unbound = Database()
    with pytest.raises(pk.ConfigurationError, match="before the Database was bound"):
        pk.attach(unbound)
    assert pk.kit.find_kit(unbound) is None


def test_bad_cache_namespace_installs_nothing(db: Database) -> None:
    """An invalid cache_namespace is refused before anything is installed on the Database."""
    with pytest.raises(pk.ConfigurationError, match="cache_namespace"):
        pk.attach(db, cache_namespace="")
    assert pk.kit.find_kit(db) is None
    assert not _pony.is_provider_method_wrapped(db, "commit")


_DESCRIBE = """
import json
from typing import Any
from pony.orm import Database
import ponykit as pk
from ponykit import _pony
from ponykit.kit import attach

db = Database()
db.bind(provider="sqlite", filename=":memory:")
attach(db)
{describe}
print(json.dumps(installed_state(db), sort_keys=True))
"""

IMPORT_ORDERS = (
    "import ponykit",
    "import ponykit.kit",
    "import ponykit.query.cache; import ponykit",
    "import ponykit.types.encrypted",
    "from ponykit.kit import attach",
    "import ponykit._kit; import ponykit.transactions; import ponykit.serialization",
    "import ponykit.security.sensitive; import ponykit.query._generations; import ponykit.diagnostics",
    "import ponykit.types.base; import ponykit.bulk; import ponykit.query; import ponykit.diagnostics",
)


def test_import_order_does_not_change_what_attach_installs() -> None:
    """In fresh interpreters, importing ponykit's modules in different orders before attach() gives
    the same installed state (nothing is installed because a module happened to be imported)."""
    import inspect
    import json
    import os
    import pathlib
    import subprocess
    import sys

    env = dict(os.environ)
    src = str(pathlib.Path(pk.__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    describe = inspect.getsource(installed_state)
    states = {}
    for order in IMPORT_ORDERS:
        # The order's imports come first: nothing of ponykit is imported before them.
        script = order + "\n" + _DESCRIBE.format(describe=describe)
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, check=False
        )
        assert done.returncode == 0, f"{order}: {done.stderr}"
        states[order] = json.loads(done.stdout.strip().splitlines()[-1])
    first = states[IMPORT_ORDERS[0]]
    assert first["installed"] and first["listeners"] and first["subscribers"] and first["converters"]
    for order, state in states.items():
        assert state == first, f"import order {order!r} installs something else"


# ---------------------------------------------------------------------------------------------------------
# The type registry


def test_register_type_refuses_a_duplicate(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second registration of a type with another class is refused (naming the type and the fix);
    replace=True replaces it; registering the same class again changes nothing."""
    from ponykit.types.base import registry

    monkeypatch.setattr(registry, "_types", dict(registry._types))

    class Code(str):
        pass

    first = pk.types.register_type(Code, storage=str, to_db=str, from_db=Code)
    pk.types.register_type(Code, first)  # the same class again: fine
    with pytest.raises(pk.ConfigurationError) as info:
        pk.types.register_type(Code, storage=str, to_db=str.upper, from_db=Code)
    message = str(info.value)
    assert "Code" in message and "already registered" in message and "replace=True" in message
    assert pk.types.registered_types()[Code] is first
    second = pk.types.register_type(Code, storage=str, to_db=str.upper, from_db=Code, replace=True)
    assert second is not first and pk.types.registered_types()[Code] is second


def test_type_registry_instance() -> None:
    """A TypeRegistry of one's own behaves like the default one: duplicates need replace=True."""
    import ipaddress

    from ponykit.types.base import TypeRegistry
    from ponykit.types.builtin import IPv4AddressType, IPv6AddressType

    own = TypeRegistry()
    own.register(ipaddress.IPv4Address, IPv4AddressType)
    with pytest.raises(pk.ConfigurationError, match="replace=True"):
        own.register(ipaddress.IPv4Address, IPv6AddressType)
    own.register(ipaddress.IPv4Address, IPv6AddressType, replace=True)
    assert own.get(ipaddress.IPv4Address) is IPv6AddressType
    assert own.json_codec(ipaddress.IPv4Address) is not None and own.json_codec(int) is None


def test_built_in_types_and_codec_factories_are_wired() -> None:
    """ponykit's own types are registered once, and json_codec knows Enum and encrypted types."""
    import enum
    import ipaddress

    class Plan(enum.Enum):
        FREE = "free"

    assert ipaddress.IPv4Address in pk.types.registered_types()
    assert isinstance(pk.types.json_codec(Plan), pk.types.EnumType)
    assert isinstance(pk.types.json_codec(pk.types.EncryptedStr), pk.types.EncryptedStr)
