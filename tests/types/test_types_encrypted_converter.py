"""The encrypted types' converter: one module-level class, the envelope codec's one implementation."""

from __future__ import annotations

from typing import Any

import pytest
from pony.orm import Database, Optional, Required, db_session

import ponykit as pk
from ponykit import _pony
from ponykit.security.envelope import NO_MATCH_PATTERN, VERSION, EnvelopeCodec, open_envelope
from ponykit.types.encrypted import EncryptedConverter, EncryptedStrConverter

KEY = bytes(range(32))
OTHER = bytes(range(100, 132))


def _vault(db: Database) -> Any:
    class Vault(db.Entity):
        note = Required(pk.types.EncryptedStr, searchable=True)
        blob = Optional(pk.types.EncryptedBytes)
        doc = Optional(pk.types.EncryptedJson)

    pk.attach(db, keys=pk.security.KeyRing({"k1": KEY}))
    db.generate_mapping(create_tables=True)
    return Vault


def test_converters_are_module_level_classes_without_instance_methods(db: Database) -> None:
    """Every encrypted attribute gets an instance of the module's classes; nothing is shadowed per instance,
    and the attribute's _pony view (taken after mapping) names that converter."""
    vault = _vault(db)
    note, blob, doc = (_pony.attribute_converter(a) for a in (vault.note, vault.blob, vault.doc))
    assert type(note) is EncryptedStrConverter
    assert type(blob) is EncryptedConverter and type(doc) is EncryptedConverter
    for converter in (note, blob, doc):
        assert not {"val2dbval", "dbval2val"} & set(vars(converter))
        assert isinstance(converter.codec, EnvelopeCodec)
        assert _pony.attr_info(converter.attr).converter is converter


class ReversedStr(pk.types.EncryptedStr):
    """An EncryptedStr subclass with its own plaintext encoding (stored reversed)."""

    def encode(self, value: Any) -> bytes:
        return value[::-1].encode()

    def decode(self, data: bytes) -> Any:
        return data.decode()[::-1]


def test_str_subclass_keeps_its_own_encoding(db: Database) -> None:
    """Only EncryptedStr itself takes the str-only converter: a subclass's encode/decode still apply."""

    class Diary(db.Entity):
        entry = Required(ReversedStr)

    pk.attach(db, keys=pk.security.KeyRing({"k1": KEY}))
    db.generate_mapping(create_tables=True)
    converter = _pony.attribute_converter(Diary.entry)
    assert type(converter) is EncryptedConverter
    stored = converter.val2dbval("abc")
    assert open_envelope(converter.kit.keys, stored, b"Diary.entry") == b"cba"
    with db_session:
        Diary(entry="abc")
    with db_session:
        assert Diary.select().first().entry == "abc"


def test_values_round_trip_through_the_one_codec(db: Database) -> None:
    """What the converters store is the envelope format (VERSION prefix), opened by open_envelope too."""
    vault = _vault(db)
    with db_session:
        vault(note="sécret", blob=b"\x00\xff", doc={"b": [1, 2], "a": None})
    note = _pony.attribute_converter(vault.note)
    stored = note.val2dbval("sécret")
    assert stored.startswith(f"{VERSION}:k1:")
    assert open_envelope(note.kit.keys, stored, b"Vault.note") == "sécret".encode()
    assert note.py2sql(stored) == stored
    assert note.dbval2val(stored) == "sécret"
    assert note.dbval2val(None) is None
    with db_session:
        obj = vault.get(note="sécret")
        assert (obj.note, obj.blob, obj.doc) == ("sécret", b"\x00\xff", {"a": None, "b": [1, 2]})


def test_lookup_patterns_follow_the_ring(db: Database) -> None:
    """One pattern per slot of the ring the lookup was prepared with; a slot the ring no longer has
    gets the pattern that matches nothing."""
    vault = _vault(db)
    note = _pony.attribute_converter(vault.note)
    kit = note.kit
    kit.keys = pk.security.KeyRing({"k1": KEY, "k2": OTHER}, primary="k2")
    functions = note.ponykit_lookup_functions()
    patterns = [f("x") for f in functions]
    codec = EnvelopeCodec(b"Vault.note", searchable=True)
    assert patterns == [codec.lookup_pattern(kit.keys, kid, b"x") for kid in kit.keys.key_ids]
    assert sorted(p.split(":")[1] for p in patterns) == ["k1", "k2"]
    assert all(p.startswith(f"{VERSION}:k") and p.endswith(":%") for p in patterns)
    kit.keys = pk.security.KeyRing({"k1": KEY})
    k1_pattern = next(p for p in patterns if p.startswith(f"{VERSION}:k1:"))
    assert [f("x") for f in functions] == [k1_pattern, NO_MATCH_PATTERN]


@pytest.mark.parametrize("stored", [b"v1:k1:xx", 12, "v2:k1:AAAA"])
def test_refusals_name_the_attribute_not_the_value(db: Database, stored: Any) -> None:
    """A stored value that is no envelope: DecryptionError naming Vault.note, never the stored text."""
    vault = _vault(db)
    note = _pony.attribute_converter(vault.note)
    with pytest.raises(pk.DecryptionError, match=r"Vault\.note.*not a ponykit v1 envelope") as info:
        note.dbval2val(stored)
    assert "AAAA" not in str(info.value) and "xx" not in str(info.value)
