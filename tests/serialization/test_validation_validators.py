"""@validates field validators and clean(): from from_dict/update_from and at flush, every error."""

from __future__ import annotations

from typing import Any

import pytest
from pony.orm import Database, Optional, Required, Set, commit, db_session, flush

import ponykit as pk
from ponykit.errors import FieldError


@pytest.fixture
def models(db: Database) -> Any:
    """A user with two validated e-mail attributes, a sensitive PIN and a clean() on two fields."""

    class Team(db.Entity, pk.Serializable):
        name = Required(str, 40)
        members = Set("User")

        def clean(self) -> list[FieldError] | None:
            if self.name.lower() == "admin":
                return [FieldError("name", "reserved team name", type="value_error")]
            return None

    class User(db.Entity, pk.Serializable):
        email = Required(str, 80)
        backup_email = Optional(str, 80)
        age = Optional(int, min=0, max=150)
        pin = Optional(str, 12)
        team = Optional(Team)

        @pk.validates("email", "backup_email")
        def check_email(self, name: str, value: Any) -> None:
            if value and "@" not in value:
                raise ValueError(f"{name} must contain an @")

        @pk.validates("pin")
        def check_pin(self, name: str, value: Any) -> None:
            if value and not value.isdigit():
                raise ValueError(f"the pin {value} must be digits only")

        def clean(self) -> None:
            if self.backup_email and self.backup_email == self.email:
                raise ValueError("backup_email must differ from email")

    pk.security.sensitive(User.pin)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return User, Team


def test_every_error_from_from_dict(models: Any) -> None:
    """Validator refusals come with the type/constraint errors of the same payload, in one error."""
    user, _ = models
    with db_session, pytest.raises(pk.ValidationError) as info:
        user.from_dict({"email": "nope", "backup_email": "also-nope", "age": -3})
    assert [(e.loc, e.type) for e in info.value.errors] == [
        (("age",), "greater_than_equal"),
        (("backup_email",), "value_error"),
        (("email",), "value_error"),
    ]
    assert info.value.errors[2].msg == "email must contain an @"
    with db_session:
        assert user.select().count() == 0


def test_clean_from_from_dict_and_update_from(models: Any) -> None:
    """clean() runs on the built object; a refusal leaves nothing created and nothing changed."""
    user, team = models
    with db_session:
        with pytest.raises(pk.ValidationError) as info:
            user.from_dict({"email": "a@x", "backup_email": "a@x"})
        assert [(e.loc, e.msg) for e in info.value.errors] == [((), "backup_email must differ from email")]
        assert user.select().count() == 0
        ann = user.from_dict({"email": "a@x", "backup_email": "b@x"})
        commit()
        with pytest.raises(pk.ValidationError):
            ann.update_from({"backup_email": "a@x"})
        assert ann.backup_email == "b@x"  # put back
        with pytest.raises(pk.ValidationError) as info:
            user.from_dict({"email": "c@x", "team": {"name": "Admin"}})
        assert [(e.loc, e.msg) for e in info.value.errors] == [(("team", "name"), "reserved team name")]
        assert team.select().count() == 0 and user.select().count() == 1


@pytest.mark.parametrize("how", ["insert", "update"])
def test_checked_at_flush(models: Any, how: str) -> None:
    """Objects made or changed in code are checked when Pony flushes them, with every error."""
    user, _ = models
    with db_session:
        ok = user(email="ok@x")
    with pytest.raises(pk.ValidationError) as info, db_session:
        if how == "insert":
            user(email="bad", backup_email="bad")
        else:
            target = user[ok.id]
            target.email = "bad"
            target.backup_email = "bad"
        flush()
    assert [(e.loc, e.type) for e in info.value.errors] == [
        (("email",), "value_error"),
        (("backup_email",), "value_error"),
        ((), "value_error"),  # clean(): the two are equal
    ]
    with db_session:
        assert [u.email for u in user.select()] == ["ok@x"]


def test_sensitive_value_masked_in_validator_message(models: Any) -> None:
    """A validator quoting a sensitive value gets it masked, in from_dict and at flush."""
    user, _ = models
    with db_session, pytest.raises(pk.ValidationError) as info:
        user.from_dict({"email": "a@x", "pin": "12ab34"}, allow=["pin"])
    assert "12ab34" not in str(info.value) and "12ab34" not in str(info.value.to_problem())
    assert [e.loc for e in info.value.errors] == [("pin",)]
    with pytest.raises(pk.ValidationError) as info, db_session:
        user(email="a@x", pin="99zz")
        flush()
    assert "99zz" not in str(info.value)


def test_validates_checks_names(db: Database) -> None:
    """A name that is no attribute is refused when the class is declared."""
    with pytest.raises(pk.OptionError, match="no attribute 'emial'"):

        class Bad(db.Entity, pk.Serializable):
            email = Required(str)

            @pk.validates("emial")
            def check(self, name: str, value: Any) -> None:
                pass


def test_sensitive_value_masked_when_a_validator_or_clean_raises_validation_error(db: Database) -> None:
    """A validator's own ValidationError, and clean()'s, quoting a sensitive value (str or repr)."""

    class Card(db.Entity, pk.Serializable):
        holder = Required(str, 40)
        number = Optional(str, 40)

        @pk.validates("number")
        def check_number(self, name: str, value: Any) -> None:
            if value and value.startswith("9"):
                raise pk.ValidationError(f"number {value} rejected", [FieldError(name, f"bad {value!r}")])

        def clean(self) -> None:
            if self.number and self.number.endswith("0"):
                raise pk.ValidationError(f"{self.number!r} may not end in 0")

    pk.security.sensitive(Card.number)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session, pytest.raises(pk.ValidationError) as info:
        Card.from_dict({"holder": "h", "number": "9111-SECRET"}, allow=["number"])
    assert "SECRET" not in str(info.value) and "SECRET" not in str(info.value.to_problem())
    with pytest.raises(pk.ValidationError) as info, db_session:
        Card(holder="h", number="1\\SECRET0")  # a backslash: its repr() differs from its str()
        flush()
    assert "SECRET" not in str(info.value) and "SECRET" not in str(info.value.to_problem())
