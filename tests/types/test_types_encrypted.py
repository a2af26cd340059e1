"""Encrypted attribute types on every backend: round trips, no plaintext at rest, tamper/swap detection."""

from __future__ import annotations

import base64
import datetime
import logging
import math
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pony.orm import Database, Optional, Required, db_session, select

import ponykit as pk
from ponykit import _pony
from ponykit.errors import (
    BulkWriteError,
    ConfigurationError,
    DecryptionError,
    UnsupportedComparison,
    ValidationError,
)
from ponykit.security import KeyRing

KEY1 = base64.urlsafe_b64encode(bytes(range(32))).decode()
KEY2 = base64.urlsafe_b64encode(bytes(range(100, 132))).decode()


def ring(primary: str = "k1") -> KeyRing:
    return KeyRing({"k1": KEY1, "k2": KEY2}, primary=primary)


def make_schema(db: Database, keys: KeyRing | None = None) -> tuple[Any, Any]:
    """Declare Person (three encrypted attributes) and Other, attach with keys, map."""

    class Person(db.Entity):
        name = Required(str)
        email = Required(pk.types.EncryptedStr, searchable=True)
        note = Optional(pk.types.EncryptedStr)
        data = Optional(pk.types.EncryptedBytes)
        doc = Optional(pk.types.EncryptedJson)

    class Other(db.Entity):
        email = Optional(pk.types.EncryptedStr, searchable=True)
        note = Optional(pk.types.EncryptedStr)

    pk.attach(db, keys=keys or ring())
    db.generate_mapping(create_tables=True)
    return Person, Other


@pytest.fixture
def schema(db: Database) -> tuple[Database, Any, Any]:
    person, other = make_schema(db)
    return db, person, other


def saved(obj: Any) -> Any:
    """Flush ``obj`` and return its primary key."""
    obj.flush()
    return obj.id


def raw(db: Database, sql: str) -> list[Any]:
    with db_session:
        return list(db.select(sql))


def test_round_trip_and_no_plaintext_at_rest(schema: Any) -> None:
    """Values come back equal, and the raw columns read with plain SQL hold no plaintext."""
    db, Person, _ = schema
    with db_session:
        Person(
            name="ann",
            email="ann@example.com",
            note="the password is hunter2",
            data=b"\x00secret-bytes\xff",
            doc={"ssn": "123-45-6789", "n": [1, 2]},
        )
    with db_session:
        p = Person.get(name="ann")
        assert p.email == "ann@example.com"
        assert p.note == "the password is hunter2"
        assert p.data == b"\x00secret-bytes\xff"
        assert p.doc == {"ssn": "123-45-6789", "n": [1, 2]}
    rows = raw(db, "email, note, data, doc FROM person")
    text = repr(rows)
    for secret in ("ann@example.com", "hunter2", "secret-bytes", "123-45-6789"):
        assert secret not in text
    assert all(str(v).startswith("v1:k1:") for v in rows[0])


@given(
    text=st.text(max_size=200),
    data=st.binary(max_size=200),
    doc=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=10,
    ),
)
@settings(max_examples=20)
def test_hypothesis_round_trips(db: Database, text: str, data: bytes, doc: Any) -> None:
    """Arbitrary str, bytes and JSON values survive encryption, storage and decryption unchanged."""
    if "Person" not in db.entities:
        make_schema(db)
    Person = db.entities["Person"]
    with db_session:
        Person.select().delete(bulk=True)
        Person(name="x", email=text or "e", note=text, data=data, doc=doc)
    with db_session:
        p = Person.get(name="x")
        assert (p.email, p.note, p.data, p.doc) == (text or "e", text, data, doc)


def test_searchable_get_and_match(schema: Any) -> None:
    """Entity.get(attr=value) and pk.types.match find rows by an encrypted searchable value."""
    _db, Person, _ = schema
    with db_session:
        Person(name="ann", email="ann@example.com")
        Person(name="bob", email="bob@example.com")
    with db_session:
        assert Person.get(email="bob@example.com").name == "bob"
        assert Person.get(email="nobody@example.com") is None
        found = select(p for p in Person if pk.types.match(Person.email, "ann@example.com"))[:]
        assert [p.name for p in found] == ["ann"]
        q = Person.select(lambda p: pk.types.match(Person.email, "bob@example.com") and p.name == "bob")
        assert [p.name for p in q] == ["bob"]


def test_not_searchable_lookup_raises(schema: Any) -> None:
    """Looking up a non-searchable encrypted attribute raises UnsupportedComparison, never matches nothing."""
    _db, Person, _ = schema
    with db_session:
        Person(name="ann", email="a@x", note="n")
    with db_session, pytest.raises(UnsupportedComparison, match=r"Person\.note"):
        Person.get(note="n")
    with db_session, pytest.raises(UnsupportedComparison):
        pk.types.match(Person.note, "n")


def test_generator_comparison_raises(schema: Any) -> None:
    """Comparing an encrypted attribute in a generator query raises TypeError instead of matching nothing."""
    _db, Person, _ = schema
    with db_session:
        Person(name="ann", email="a@x")
    with db_session, pytest.raises(TypeError, match="encrypted attribute cannot be used in a generator"):
        select(p for p in Person if p.email == "a@x")[:]


def test_encode_value_gives_ciphertext(schema: Any) -> None:
    """_pony.encode_value (what bulk writers bind) returns an envelope that decodes to the value."""
    _db, Person, _ = schema
    (stored,) = _pony.encode_value(Person.email, "ann@example.com")
    assert stored.startswith("v1:k1:")
    assert "ann@example.com" not in stored
    assert _pony.decode_value(Person.email, stored) == "ann@example.com"
    with db_session:
        Person(name="ann", email="ann@example.com")
    with db_session:
        # The blind index written through encode_value is the one lookups use.
        assert stored.split(":")[2] in Person.get(email="ann@example.com")._dbvals_[Person.email]


def flip(stored: str, part: str) -> str:
    """Flip one byte of the nonce, ciphertext or tag of an envelope, or change its key id."""
    header, _, body = stored.rpartition(":")
    raw_bytes = bytearray(base64.b64decode(body))
    if part == "nonce":
        raw_bytes[0] ^= 1
    elif part == "ciphertext":
        raw_bytes[12] ^= 1
    elif part == "tag":
        raw_bytes[-1] ^= 1
    elif part == "truncate":
        raw_bytes = raw_bytes[:20]
    elif part == "keyid":
        return stored.replace("v1:k1:", "v1:k2:", 1)
    elif part == "unknown-keyid":
        return stored.replace("v1:k1:", "v1:k9:", 1)
    elif part == "noncanonical":  # a spare bit of the last base64 character: same bytes, other text
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        stripped = body.rstrip("=")
        assert stripped != body, "the test value must give a padded body"
        last = alphabet[alphabet.index(stripped[-1]) ^ 1]
        return f"{header}:{stripped[:-1]}{last}{body[len(stripped) :]}"
    elif part == "index":
        head = header.split(":")
        head[2] = "0" * 32
        return ":".join(head) + ":" + body
    return header + ":" + base64.b64encode(bytes(raw_bytes)).decode()


@pytest.mark.parametrize(
    "part", ["nonce", "ciphertext", "tag", "truncate", "keyid", "unknown-keyid", "index", "noncanonical"]
)
def test_tampering_raises_decryption_error(schema: Any, part: str) -> None:
    """A tampered, truncated or foreign-key envelope raises DecryptionError naming entity, attr and pk."""
    db, Person, _ = schema
    with db_session:
        pid = saved(Person(name="ann", email="ann@example.com"))
    (stored,) = raw(db, "email FROM person")
    bad = flip(stored, part)
    with db_session:
        db.execute("UPDATE person SET email = $bad", {}, {"bad": bad})
    with db_session:
        with pytest.raises(DecryptionError) as info:
            Person[pid].email  # noqa: B018
        message = str(info.value)
        assert "Person.email" in message
        assert repr(pid) in message
        assert "ann@example.com" not in message
        assert bad not in message
        assert stored not in message


def test_swap_between_columns_and_tables_fails(schema: Any) -> None:
    """An envelope copied into another attribute or another entity's table does not decrypt."""
    db, Person, Other = schema
    with db_session:
        pid = saved(Person(name="ann", email="ann@example.com", note="n1"))
        oid = saved(Other(note="x"))
    (note,) = raw(db, "note FROM person")
    (email,) = raw(db, "email FROM person")
    with db_session:
        db.execute("UPDATE other SET note = $note", {}, {"note": note})
    with db_session, pytest.raises(DecryptionError, match=r"Other\.note"):
        Other[oid].note  # noqa: B018
    with db_session:
        db.execute("UPDATE person SET note = $email", {}, {"email": email})
    with db_session, pytest.raises(DecryptionError, match=r"Person\.note"):
        Person[pid].note  # noqa: B018


def test_swap_between_rows_of_one_column_is_not_detected(schema: Any) -> None:
    """Documented limit: the associated data names entity and attribute, not the row: rows can swap."""
    db, Person, _ = schema
    with db_session:
        a = saved(Person(name="ann", email="a@x", note="ann's"))
        Person(name="bob", email="b@x", note="bob's")
    note_b = raw(db, "note FROM person WHERE name = 'bob'")[0]
    with db_session:
        db.execute("UPDATE person SET note = $n WHERE id = $a", {}, {"n": note_b, "a": a})
    with db_session:
        assert Person[a].note == "bob's"


def test_mapping_without_keys_fails_and_writes_nothing(db: Database, backend: Any) -> None:
    """An encrypted attribute on a Database attached without keys refuses to map; no table is created."""

    class Secretive(db.Entity):
        token = Required(pk.types.EncryptedStr)

    pk.attach(db)
    with pytest.raises(ConfigurationError, match=r"Secretive\.token.*without keys"):
        db.generate_mapping(create_tables=True)
    with db_session:
        tables = {t.lower() for t in _tables(db, backend.name)}
    assert "secretive" not in tables


def _tables(db: Database, name: str) -> list[str]:
    if name == "sqlite":
        return list(db.select("name FROM sqlite_master WHERE type = 'table'"))
    if name == "postgres":
        return list(db.select("tablename FROM pg_tables WHERE schemaname = current_schema()"))
    return list(db.select("table_name FROM information_schema.tables WHERE table_schema = DATABASE()"))


@pytest.mark.backends("sqlite")
def test_unattached_database_refuses_to_map(db: Database) -> None:
    """Without attach() at all, Pony finds no converter and refuses to map (encrypted types are not str)."""

    class Secretive(db.Entity):
        token = Required(pk.types.EncryptedStr)

    with pytest.raises(TypeError, match="EncryptedStr"):
        db.generate_mapping(create_tables=True)


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("option", [{"unique": True}, {"py_check": lambda v: True}])
def test_unsafe_options_refused(db: Database, option: dict[str, Any]) -> None:
    """unique= and py_check= are refused on encrypted attributes (meaningless, or would leak plaintext)."""

    class Secretive(db.Entity):
        token = Required(pk.types.EncryptedStr, **option)

    pk.attach(db, keys=ring())
    with pytest.raises(ConfigurationError, match=r"Secretive\.token"):
        db.generate_mapping(create_tables=True)


def test_wrong_types_rejected_without_showing_values(schema: Any) -> None:
    """Assigning a value of the wrong type raises TypeError naming the attribute, not the value."""
    _db, Person, _ = schema
    with db_session:
        with pytest.raises(TypeError, match=r"Person\.email: expected str, got int"):
            Person(name="x", email=12345)
        with pytest.raises(TypeError, match=r"Person\.doc: expected a JSON-serializable value, got set"):
            Person(name="x", email="e", doc={1, 2})


def test_sql_log_shows_no_plaintext(schema: Any, caplog: pytest.LogCaptureFixture) -> None:
    """With Pony's SQL logging on (values shown), plaintext of encrypted values never reaches the log."""
    _db, Person, _ = schema
    caplog.set_level(logging.DEBUG)
    with db_session(sql_debug=True, show_values=True):
        Person(name="ann", email="ann@example.com", note="hunter2")
    with db_session(sql_debug=True, show_values=True):
        Person.get(email="ann@example.com")
    assert "INSERT" in caplog.text
    assert "ann@example.com" not in caplog.text
    assert "hunter2" not in caplog.text


def test_updates_and_optimistic_checks(schema: Any) -> None:
    """Updating an encrypted value re-encrypts it; optimistic checks compare the stored envelope."""
    _db, Person, _ = schema
    with db_session:
        pid = saved(Person(name="ann", email="a@x", note="one"))
    with db_session:
        p = Person[pid]
        assert p.note == "one"
        p.note = "two"
        p.name = "ann2"
    with db_session:
        assert Person[pid].note == "two"
        assert Person.get(email="a@x").name == "ann2"


def test_json_codec_and_sensitivity() -> None:
    """Encrypted types are marked sensitive and have JSON codecs for serialization."""
    for cls in (pk.types.EncryptedStr, pk.types.EncryptedBytes, pk.types.EncryptedJson):
        assert cls.__ponykit_sensitive__ is True
        assert not issubclass(cls, (str, bytes))
    codec = pk.types.json_codec(pk.types.EncryptedBytes)
    assert codec is not None
    assert codec.to_json(b"\x00\x01") == "AAE="
    assert codec.from_json("AAE=") == b"\x00\x01"
    assert codec.json_schema() == {"type": "string", "contentEncoding": "base64"}
    assert pk.types.json_codec(pk.types.EncryptedStr).json_schema() == {"type": "string"}  # type: ignore[union-attr]


def _lossy(value: Any) -> bool:
    """Independent oracle: does ``value`` hold something JSON would change (NaN/inf, dates, UUIDs, tuples)?"""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (datetime.date, datetime.time, uuid.UUID, tuple)):
        return True
    if isinstance(value, dict):
        return any(_lossy(v) for v in value.values())
    if isinstance(value, list):
        return any(_lossy(v) for v in value)
    return False


JSON_LIKE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()  # NaN and infinities included
    | st.text(max_size=10)
    | st.datetimes()
    | st.dates()
    | st.times()
    | st.uuids(),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@given(doc=JSON_LIKE, through=st.sampled_from(["orm", "bulk"]))
@settings(max_examples=40)
def test_json_round_trips_exactly_or_is_refused(db: Database, doc: Any, through: str) -> None:
    """Any JSON-like value comes back == (through the ORM or bulk_insert) or is refused at write time
    with a ValidationError naming the attribute and the kind of value, never the value."""
    if "Person" not in db.entities:
        make_schema(db)
    Person = db.entities["Person"]
    with db_session:
        Person.select().delete(bulk=True)
    refused = _lossy(doc)

    def write() -> None:
        with db_session:
            if through == "orm":
                Person(name="x", email="e", doc=doc)
            else:
                pk.bulk_insert(Person, [{"name": "x", "email": "e", "doc": doc}])

    if refused:
        with pytest.raises(ValidationError) as info:
            write()
        message = str(info.value)
        if through == "orm":
            assert message.startswith("attribute Person.doc: EncryptedJson cannot store a")
        else:  # bulk errors hide the details of sensitive attributes, and name them
            assert isinstance(info.value, BulkWriteError)
            assert (info.value.entity, info.value.attribute) == ("Person", "doc")
        for secret in ("1970", "-00", "00000000"):
            assert secret not in message
        with db_session:
            assert Person.select().count() == 0
        return
    write()
    with db_session:
        back = Person.get(name="x").doc
    assert back == doc and type(back) is type(doc)


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (float("nan"), "a NaN or infinite float"),
        ({"x": float("inf")}, "a NaN or infinite float"),
        ([float("-inf")], "a NaN or infinite float"),
        (datetime.datetime(2024, 5, 1, 12, 30), "a datetime"),
        ({"when": datetime.date(2024, 5, 1)}, "a date"),
        (uuid.UUID(int=7), "a UUID"),
        ((1, 2), "a tuple"),
    ],
)
def test_json_lossy_values_refused(schema: Any, value: Any, what: str) -> None:
    """F8's values: each is refused on assignment with a ValidationError that names attribute and kind."""
    _db, Person, _ = schema
    with db_session:
        p = Person(name="x", email="e")
        expected = rf"^attribute Person\.doc: EncryptedJson cannot store {what}"
        with pytest.raises(ValidationError, match=expected) as info:
            p.doc = value
        assert info.value.errors[0].path == "doc"
        assert "2024" not in str(info.value)


def test_optional_encrypted_attributes_set_back_to_none(schema: Any) -> None:
    """An Optional encrypted attribute of an existing row set to None stores NULL and reads back None
    (Pony hands the converter None on update; it used to reach the cipher and fail)."""
    db, Person, _ = schema
    with db_session:
        pid = saved(Person(name="a", email="a@x", note="hi", data=b"\x00\x01", doc={"k": 1}))
    with db_session:
        person = Person[pid]
        person.note = None
        person.data = None
        person.doc = None
    with db_session:
        person = Person[pid]
        assert (person.note, person.data, person.doc) == (None, None, None)
    assert raw(db, f"select note, data, doc from person where id = {pid}") == [(None, None, None)]
