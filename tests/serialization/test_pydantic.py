"""pydantic_model: read models equal to_dict and json_schema; create/update models; caching; sensitivity."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pony.orm import Database, Optional, Required, commit, db_session, delete
from serialization_models import FULL_BOOK, define
from test_serialization_fast import book_values

import ponykit as pk

pydantic = pytest.importorskip("pydantic")


@pytest.fixture
def m(db: Database) -> Any:
    """The shared serialization models with one author."""
    ns = define(db)
    with db_session:
        ns.Author(name="Ann", email="ann@example.com", bio="bio")
    return ns


def _schema(model: Any) -> dict[str, Any]:
    return model.model_json_schema(mode="serialization")  # type: ignore[no-any-return]


def _ponykit_schema(entity: Any, **options: Any) -> dict[str, Any]:
    schema = pk.json_schema(entity, **options)
    del schema["$schema"]  # the one normalization: Pydantic puts no $schema in a model's schema
    return schema


OPTIONS: list[dict[str, Any]] = [
    {},
    {"only": ["title", "price", "author"]},
    {"exclude": ["meta", "cover"]},
    {"related": {"author": {"only": ["name"]}}},
    {"related": {"author": {}, "editor": {"related": {"tags": {}}}}},
]


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_read_round_trip(m: Any, backend: Any, data: st.DataObject) -> None:
    """model_validate(obj).model_dump(mode="json") == obj.to_dict() with the same options, for generated
    rows as each backend stores them (read back in a fresh session)."""
    values = data.draw(book_values(backend.name))
    options = data.draw(st.sampled_from(OPTIONS))
    with_editor = values.pop("with_editor")
    with db_session:
        delete(b for b in m.Book)
        author = m.Author.get(name="Ann")
        new = m.Book(author=author, editor=author if with_editor else None, **values)
        commit()
        book_id = new.id
    model = pk.pydantic_model(m.Book, "read", **options)
    with db_session:
        book = m.Book[book_id]
        expected = book.to_dict(**options)
        instance = model.model_validate(book)
        assert instance.model_dump(mode="json") == expected
        # what a FastAPI response_model does: validate the object, dump as JSON, parse it back
        assert model.model_validate_json(instance.model_dump_json()).model_dump(mode="json") == expected


@pytest.mark.parametrize("options", OPTIONS, ids=range(len(OPTIONS)))
def test_read_schema_equals_json_schema(m: Any, options: dict[str, Any]) -> None:
    """The model's serialization schema is json_schema() of the same options (less "$schema")."""
    assert _schema(pk.pydantic_model(m.Book, **options)) == _ponykit_schema(m.Book, **options)


def test_read_schema_with_collections_and_cycles(m: Any) -> None:
    """Sets as lists of keys or of nested models, a composite key, the cycle guard's anyOf."""
    for entity, options in [
        (m.Author, {"only": ["name", "tags", "books"]}),
        (m.Author, {"related": {"books": {"related": {"author": {}}}}}),
        (m.Slot, {}),
        (m.Shelf, {"related": {"slots": {}}}),
    ]:
        model = pk.pydantic_model(entity, **options)
        assert _schema(model) == _ponykit_schema(entity, **options)
    with db_session:
        shelf = m.Shelf(room="A", number=1)
        m.Slot(shelf=shelf, label="x")
        book = m.Book(author=m.Author.get(name="Ann"), title="t", price=1)
        m.Tag(name="z", authors=[book.author])
        for obj, options in [
            (book.author, {"only": ["name", "tags", "books"]}),
            (book.author, {"related": {"books": {"related": {"author": {}}}}}),
            (shelf, {"related": {"slots": {}}}),
        ]:
            model = pk.pydantic_model(type(obj), **options)
            assert model.model_validate(obj).model_dump(mode="json") == obj.to_dict(**options)


def test_read_model_types_and_sensitive(m: Any) -> None:
    """Values are Python values in the model; sensitive attributes are left out (as to_dict does)."""
    model = pk.pydantic_model(m.Author)
    assert "email" not in model.model_fields and "name" in model.model_fields
    assert "email" in pk.pydantic_model(m.Author, "create").model_fields  # input may set it
    assert "email" not in str(_schema(model))
    with db_session:
        new = m.Book(author=m.Author.get(name="Ann"), **FULL_BOOK)
        commit()
        book_id = new.id
    with db_session:
        book = m.Book[book_id]
        instance = pk.pydantic_model(m.Book).model_validate(book)
        assert (instance.price, instance.created, instance.code) == (book.price, book.created, book.code)
        assert instance.model_dump(mode="json") == book.to_dict()
        author = pk.pydantic_model(m.Author).model_validate(book.author)
        assert "ann@example.com" not in repr(author) + author.model_dump_json()


def test_models_are_cached(m: Any) -> None:
    """The same entity and options give the same class; other options another one."""
    assert pk.pydantic_model(m.Book) is pk.pydantic_model(m.Book, "read")
    assert pk.pydantic_model(m.Book, only=["title"]) is pk.pydantic_model(m.Book, only=("title",))
    assert pk.pydantic_model(m.Book, only=["title"]) is not pk.pydantic_model(m.Book)
    assert pk.pydantic_model(m.Book, "create") is pk.pydantic_model(m.Book, "create")
    with pytest.raises(pk.OptionError, match="mode"):
        pk.pydantic_model(m.Book, "write")


def test_create_and_update_models(m: Any) -> None:
    """create: no auto key, Required without default required, extra keys forbidden; update: all optional."""
    create = pk.pydantic_model(m.Book, "create")
    fields = create.model_fields
    assert "id" not in fields
    assert {n for n, f in fields.items() if f.is_required()} == {"title", "price", "author"}
    assert not fields["in_print"].is_required()
    schema = create.model_json_schema()
    assert schema["properties"]["title"]["maxLength"] == 100
    assert schema["additionalProperties"] is False
    update = pk.pydantic_model(m.Book, "update")
    assert not any(f.is_required() for f in update.model_fields.values())
    update.model_validate({"title": "x"})
    with pytest.raises(pydantic.ValidationError):
        update.model_validate({"title": "x" * 101})
    author_create = pk.pydantic_model(m.Author, "create")
    assert "secret_note" not in author_create.model_fields  # hidden
    assert author_create.model_validate({"name": "Bo", "tags": ["a"]}).tags == ["a"]
    # what the create model accepts, from_dict creates
    with db_session:
        payload = create.model_validate(
            {"title": "T", "price": "9.99", "author": 1, "published": "2020-02-03"}
        ).model_dump(mode="json", exclude_unset=True)
        book = m.Book.from_dict(payload)
        assert book.to_dict(only=["title", "price", "published"]) == {
            "title": "T",
            "price": "9.99",
            "published": "2020-02-03",
        }


def test_ponykit_types(db: Database) -> None:
    """ponykit's own types (an Enum, AwareDatetime): Python values in read models, their JSON rule in and
    out, the same refusal type as from_dict."""
    import datetime as dt
    import enum

    from pony.orm import Optional, Required

    class Tier(enum.Enum):
        FREE = "free"
        PRO = "pro"

    class Event(db.Entity, pk.Serializable):
        at = Required(pk.types.AwareDatetime)
        tier = Optional(Tier)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    read = pk.pydantic_model(Event)
    assert _schema(read) == _ponykit_schema(Event)
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with db_session:
        made = Event(at=when, tier=Tier.PRO)
        commit()
        event_id = made.id
    with db_session:
        event = Event[event_id]
        instance = read.model_validate(event)
        assert instance.tier is Tier.PRO and instance.at == when
        assert instance.model_dump(mode="json") == event.to_dict()
        create = pk.pydantic_model(Event, "create")
        assert create.model_validate({"at": "2024-05-06T07:08:09+02:00"}).at == when
        with pytest.raises(pydantic.ValidationError) as theirs:
            create.model_validate({"at": "not a date", "tier": "gold"})
        with pytest.raises(pk.ValidationError) as ours:
            Event.from_dict({"at": "not a date", "tier": "gold"})
        assert sorted((e["loc"], e["type"]) for e in theirs.value.errors()) == sorted(
            (e.loc, e.type) for e in ours.value.errors
        )


def test_a_read_model_follows_a_later_sensitivity_declaration(db: Database) -> None:
    class Holder(db.Entity, pk.Serializable):
        name = Required(str)
        pin = Optional(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    assert "pin" in pk.pydantic_model(Holder).model_fields
    pk.security.sensitive(Holder.pin)  # declared after a model was built (and cached)
    assert "pin" not in pk.pydantic_model(Holder).model_fields


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("blank", ["", " ", "\t\n "])
def test_create_model_refuses_blank_required_text_as_pony_does(m: Any, blank: str) -> None:
    """Pony strips a str before its Required check (autostrip): whitespace alone is refused there, so the
    input model refuses it too, with a 422 rather than a ValueError deep in Pony (found by schemathesis
    on the example webshop: POST /customers with the email " ")."""
    create = pk.pydantic_model(m.Author, "create")
    with pytest.raises(pydantic.ValidationError):
        create.model_validate({"name": blank, "email": "a@example.com"})
    with db_session, pytest.raises(ValueError, match="required"):
        m.Author(name=blank, email="b@example.com")
    assert create.model_validate({"name": " Ann ", "email": "a@example.com"}).name == " Ann "
