"""ponykit._codegen: generated code is named, shows in tracebacks, can be printed, and is logged.

Every fast path that compiles per-entity code (bulk row encoders, to_dict/to_json methods, flat
serializers, the query fast path's row function) goes through ``build_function``; the tests at the end
raise inside real generated code and read the traceback.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import pytest
from pony.orm import Database, Optional, Required, db_session

import ponykit as pk
from ponykit._codegen import build_function, source_of
from ponykit.bulk._rows import plan_for
from ponykit.errors import BulkWriteError
from ponykit.serialization._plan import plan_for as serialization_plan_for


def _formatted(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def test_traceback_shows_the_generated_line() -> None:
    """A traceback through a generated function names it and quotes its line, like any Python code."""
    fn = build_function(
        "divide",
        ["def divide(x):", "    y = x + 1", "    return ratio / (x - x)"],
        {"ratio": 3},
        label="test.divide",
    )
    with pytest.raises(ZeroDivisionError) as info:
        fn(2)
    text = _formatted(info.value)
    assert '"<ponykit:test.divide#' in text
    assert "return ratio / (x - x)" in text
    assert ", line 3, in divide" in text


def test_source_of_returns_the_source() -> None:
    """source_of gives the generated text (also through a bound method); None for ordinary functions."""
    fn = build_function("answer", "def answer(self):\n    return 42", {}, label="test.answer")
    assert source_of(fn) == "def answer(self):\n    return 42\n"

    class Holder:
        method = fn

    assert source_of(Holder().method) == source_of(fn)
    assert Holder().method() == 42
    assert source_of(_formatted) is None


def test_namespace_is_copied_not_changed() -> None:
    """The generated code sees the namespace's names; the caller's mapping is left as it was."""
    namespace = {"base": 10}
    fn = build_function("add", ["def add(x):", "    return base + x"], namespace, label="test.add")
    assert fn(5) == 15
    assert namespace == {"base": 10}


def test_labels_are_distinct() -> None:
    """Two functions generated under one label still get their own filename (and linecache entry)."""
    first = build_function("f", "def f():\n    return 1", {}, label="test.same")
    second = build_function("f", "def f():\n    return 2", {}, label="test.same")
    assert first.__code__.co_filename != second.__code__.co_filename
    assert first.__code__.co_filename.startswith("<ponykit:test.same#")


def test_debug_log_records_the_source(caplog: pytest.LogCaptureFixture) -> None:
    """At DEBUG, logger ponykit.codegen records the label, the filename and the generated source."""
    with caplog.at_level(logging.DEBUG, logger="ponykit.codegen"):
        fn = build_function("logged", "def logged():\n    return 'marker-7'", {}, label="test.logged")
    records = [r for r in caplog.records if r.name == "ponykit.codegen"]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "test.logged" in message
    assert fn.__code__.co_filename in message
    assert "return 'marker-7'" in message


def test_no_debug_log_above_debug(caplog: pytest.LogCaptureFixture) -> None:
    """Above DEBUG nothing is logged (the source is not even formatted)."""
    with caplog.at_level(logging.INFO, logger="ponykit.codegen"):
        build_function("quiet", "def quiet():\n    return 0", {}, label="test.quiet")
    assert not [r for r in caplog.records if r.name == "ponykit.codegen"]


# ---------------------------------------------------------------------------------------------------------
# Real generated code


class Fragile:
    """A value whose converter raises on the way to the database and to JSON when it is "bad"."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fragile) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


class FragileType(pk.types.AttributeType):
    """Fragile stored as text; ``to_db``/``to_json`` refuse the text "bad" (not raised by validate)."""

    python_type = Fragile
    storage = str

    def validate(self, value: Any) -> Any:
        return value if isinstance(value, Fragile) else Fragile(str(value))

    def to_db(self, value: Any) -> Any:
        if value.text == "bad":
            raise ValueError("fragile value refused on the way to the database")
        return value.text

    def from_db(self, value: Any) -> Any:
        return Fragile(value)

    def to_json(self, value: Any) -> Any:
        if value.text == "bad-json":
            raise ValueError("fragile value refused on the way to JSON")
        return value.text


pk.types.register_type(Fragile, FragileType)


def _gadget(db: Database) -> Any:
    class Gadget(db.Entity, pk.Serializable):
        name = Required(str)
        part = Optional(Fragile)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return Gadget


def test_bulk_encoder_failure_shows_the_generated_frame(db: Database) -> None:
    """A converter raising inside the generated row encoder: the traceback (the BulkWriteError's cause)
    goes through a ``<ponykit:bulk.encode_row Gadget#N>`` frame and quotes the generated line."""
    gadget = _gadget(db)
    with db_session, pytest.raises(BulkWriteError) as info:
        pk.bulk_insert(
            gadget, [{"name": "ok", "part": Fragile("fine")}, {"name": "x", "part": Fragile("bad")}]
        )
    assert info.value.row_index == 1
    cause = info.value.__cause__
    assert isinstance(cause, ValueError)
    text = _formatted(info.value)
    assert '"<ponykit:bulk.encode_row Gadget#' in text
    frames = [f for f in traceback.extract_tb(cause.__traceback__) if f.filename.startswith("<ponykit:")]
    assert frames and all(f.line for f in frames)  # each generated frame quotes its line
    encode = plan_for(gadget).shape(("name", "part")).encode
    assert frames[-1].line in (source_of(encode) or "")


def test_to_dict_failure_shows_the_generated_frame(db: Database) -> None:
    """A value dumper raising inside the generated to_dict: the traceback has the generated method's
    ``<ponykit:serialization.to_dict Gadget#N>`` frame and line."""
    gadget = _gadget(db)
    with db_session:
        gadget(name="g", part=Fragile("bad-json"))
    with db_session:
        obj = gadget.get(name="g")
        with pytest.raises(ValueError, match="refused on the way to JSON") as info:
            obj.to_dict()
        text = _formatted(info.value)
        assert '"<ponykit:serialization.to_dict Gadget#' in text
        source = source_of(type(obj).to_dict)
        assert source is not None and source.startswith("def to_dict(self, ")
        frames = [
            f for f in traceback.extract_tb(info.value.__traceback__) if f.filename.startswith("<ponykit:")
        ]
        assert frames and frames[-1].line and frames[-1].line in source


def test_generated_labels_name_what_and_which_entity(db: Database) -> None:
    """Each generated function of an entity has its own label, naming the generator and the entity."""
    gadget = _gadget(db)
    with db_session:
        gadget(name="g", part=Fragile("fine"))
    with db_session:
        obj = gadget.get(name="g")
        assert obj.to_dict() == {"id": 1, "name": "g", "part": "fine"}
        assert obj.to_json() == b'{"id":1,"name":"g","part":"fine"}'
        assert pk.serialization.to_json(gadget.select()) == b'[{"id":1,"name":"g","part":"fine"}]'
        # The query fast path's row function is generated once per plan and column positions.
        assert pk.serialization.to_json(gadget.select()) == b'[{"id":1,"name":"g","part":"fine"}]'
    (row,) = serialization_plan_for(gadget, {}).row_fns.values()
    shape = plan_for(gadget).shape(("name", "part"))
    functions = [shape.encode, shape.encode_columns, type(obj).to_dict, type(obj).to_json, row]
    labels = [fn.__code__.co_filename.partition("#")[0] for fn in functions]
    assert labels == [
        "<ponykit:bulk.encode_row Gadget",
        "<ponykit:bulk.encode_columns Gadget",
        "<ponykit:serialization.to_dict Gadget",
        "<ponykit:serialization.to_json Gadget",
        "<ponykit:serialization.query_row Gadget",
    ]
    assert all(source_of(fn) for fn in functions)
