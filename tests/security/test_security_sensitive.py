"""ponykit.security.sensitive: declarations, type-level sensitivity, masking in reprs."""

from __future__ import annotations

from typing import Any

import pytest
from pony.orm import Database, PrimaryKey, Required, db_session

import ponykit as pk
from ponykit.security import is_sensitive, mask, sensitive, sensitive_names


class Secret(str):
    """A value type that declares itself sensitive, like ponykit's encrypted types do."""

    __ponykit_sensitive__ = True


def test_three_declaration_forms_and_inheritance() -> None:
    """Class-level tuple, sensitive(Entity.attr) and the decorator all mark attributes; subclasses inherit."""
    db = Database()

    @sensitive("pin")
    class Person(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        __sensitive__ = ("ssn",)
        name = Required(str)
        ssn = Required(str)
        pin = Required(str)
        dob = Required(str)

    class Employee(Person):  # type: ignore[name-defined]
        salary = Required(int)

    sensitive(Person.dob)
    sensitive(Employee.salary)
    assert sensitive_names(Person) == {"ssn", "pin", "dob"}
    assert sensitive_names(Employee) == {"ssn", "pin", "dob", "salary"}
    assert [a.name for a in (Person.name, Person.ssn, Person.pin, Person.dob) if is_sensitive(a)] == [
        "ssn",
        "pin",
        "dob",
    ]
    assert is_sensitive(Employee.salary)


def test_type_flag_makes_attributes_sensitive() -> None:
    """Any attribute whose py_type has a truthy __ponykit_sensitive__ is sensitive without a declaration."""
    db = Database()

    class Vault(db.Entity):  # type: ignore[name-defined]
        label = Required(str)
        token = Required(Secret)

    assert is_sensitive(Vault.token)
    assert not is_sensitive(Vault.label)


def test_bad_declarations_are_refused() -> None:
    """Unknown names and non-attributes raise errors that say what is expected."""
    db = Database()

    class Thing(db.Entity):  # type: ignore[name-defined]
        name = Required(str)

    with pytest.raises(AttributeError, match="has no attribute 'nmae'"):
        sensitive("nmae")(Thing)
    with pytest.raises(TypeError, match="expects entity attributes"):
        sensitive(42)
    with pytest.raises(TypeError, match="at least one"):
        sensitive()


def test_mask_never_shows_the_value() -> None:
    """mask() gives a constant placeholder, whatever the value and its length."""
    assert mask("hunter2") == "***"
    assert mask("x" * 1000) == "***"
    assert mask(None) == "None"


def test_sensitive_primary_key_is_masked_in_repr(db: Database) -> None:
    """An entity whose primary key is sensitive shows a masked key in its repr."""

    class Account(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        __sensitive__ = ("iban",)
        iban = PrimaryKey(str)
        owner = Required(str)

    class Plain(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        owner = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        account = Account(iban="DE89370400440532013000", owner="A")
        plain = Plain(owner="B")
        assert repr(account) == "Account[***]"
        assert "DE89" not in repr(account)
        assert "DE89" not in account.to_json().decode()
        assert repr(plain).startswith("Plain[")


def test_type_flagged_attribute_left_out_of_output(db: Database) -> None:
    """An attribute of a sensitive type is omitted from to_dict unless asked for."""

    class Vault(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        label = Required(str)
        token = Required(Secret)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        vault: Any = Vault(label="l", token=Secret("t0k3n"))
        assert vault.to_dict() == {"id": 1, "label": "l"}
        assert vault.to_dict(only=["token"]) == {"token": "t0k3n"}


def test_encrypted_attributes_are_sensitive_by_default(db: Database) -> None:
    """ponykit's encrypted types are left out of output, refused as input and served by the entity path."""
    from pony.orm import select

    keys = pk.security.KeyRing.from_mapping({"k1": pk.security.KeyRing.generate_key()})

    class Patient(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        name = Required(str)
        diagnosis = Required(pk.types.EncryptedStr)

    pk.attach(db, keys=keys)
    db.generate_mapping(create_tables=True)
    assert is_sensitive(Patient.diagnosis)
    with db_session:
        Patient(name="P", diagnosis="flu")
    with db_session:
        patient = Patient[1]
        assert patient.to_dict() == {"id": 1, "name": "P"}
        assert patient.to_dict(include_sensitive=True)["diagnosis"] == "flu"
        query = select(p for p in Patient)
        assert pk.to_json(query, include_sensitive=True) == b'[{"id":1,"name":"P","diagnosis":"flu"}]'
        with pytest.raises(pk.ValidationError, match="sensitive attribute"):
            Patient.from_dict({"name": "Q", "diagnosis": "cold"})
        created = Patient.from_dict({"name": "Q", "diagnosis": "cold"}, allow=["diagnosis"])
        assert created.diagnosis == "cold"
