"""The example app examples/webshop: a valid OpenAPI schema, its flows, and schemathesis finds no 500s."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "webshop"))

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from webshop.app import create_app


@pytest.fixture
def shop_app(tmp_path: Path) -> Any:
    # Made inside each test (not at import): the autouse fixture of conftest.py forgets the Database
    # attached here when the test ends, so later tests never see a second attached Database.
    return create_app(f"sqlite:///{tmp_path}/shop.sqlite?create_db=1")


@pytest.fixture
def shop_schema(shop_app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", shop_app)


schema = schemathesis.pytest.from_fixture("shop_schema")


def _client(app: Any) -> TestClient:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TestClient(app)


def test_the_openapi_schema_is_valid(shop_app: Any) -> None:
    # In a child interpreter: the validator's lazily loaded meta-schemas keep allocating in this process
    # long after (seen as a "leak" by tests/query/test_query_memory.py run later in the same process).
    checker = "import json, sys; from openapi_spec_validator import validate; validate(json.load(sys.stdin))"
    done = subprocess.run(
        [sys.executable, "-c", checker], input=json.dumps(shop_app.openapi()), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_a_shopping_flow(shop_app: Any) -> None:
    APP = shop_app
    client = _client(APP)
    ann = client.post("/customers", json={"name": "Ann", "email": "ann.flow@example.com"}).json()
    tea = client.post("/products", json={"name": "Tea", "price": "3.50", "stock": 5}).json()
    cup = client.post("/products", json={"name": "Cup", "price": "7.00", "stock": 1}).json()
    sent_before = len(APP.state.sent_emails)

    bad = client.post(
        "/orders",
        json={
            "customer": 999_999,
            "lines": [{"product": tea["id"], "qty": 9}, {"product": 999_999, "qty": 1}],
        },
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    locs = [tuple(e["loc"]) for e in bad.json()["errors"]]
    assert locs == [("customer",), ("lines", 0, "qty"), ("lines", 1, "product")]  # every problem at once
    assert len(APP.state.sent_emails) == sent_before

    order = client.post(
        "/orders",
        json={
            "customer": ann["id"],
            "lines": [{"product": tea["id"], "qty": 2}, {"product": cup["id"], "qty": 1}],
        },
    )
    assert order.status_code == 201, order.text
    assert APP.state.sent_emails[-1] == "ann.flow@example.com"
    assert client.get(f"/products/{tea['id']}").json()["stock"] == 3
    assert "server-timing" in order.headers

    page = client.get("/products", params={"per_page": 1}).json()
    assert page["per_page"] == 1 and page["total"] >= 2 and page["links"]["next"]
    orders = client.get("/orders", params={"per_page": 1}).json()
    assert orders["items"][0]["id"] == order.json()["id"]
    assert client.get("/orders/999999").status_code == 404


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(case: Any) -> None:
    # No 500, every status, media type, body and header as the schema documents them, and invalid input
    # refused. Left out: schemathesis' "schema-valid data must be accepted" (the shop refuses valid-looking
    # input by its rules: a taken email, a tampered cursor, too little stock) and its Allow-header check
    # of FastAPI's own 405 answers.
    case.call_and_validate(
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            response_headers_conformance,
            negative_data_rejection,
        ]
    )


def test_validation_rules_of_the_entities_answer_422(shop_app: Any) -> None:
    client = _client(shop_app)
    bad = client.post("/customers", json={"name": "Ann", "email": "not an address"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    assert [(e["loc"], e["type"]) for e in bad.json()["errors"]] == [(["email"], "value_error")]
    same = client.post("/customers", json={"name": "a@b.example", "email": "A@b.example"})
    assert same.status_code == 422
    assert [e["loc"] for e in same.json()["errors"]] == [["name"]]  # clean(): a rule on two attributes
    extra = client.post("/customers", json={"name": "Ann", "email": "a@b.example", "id": 5})
    assert extra.status_code == 422  # the derived input model forbids what is not an input


def test_a_product_change_needs_the_permission_and_the_current_etag(shop_app: Any) -> None:
    client = _client(shop_app)
    created = client.post("/products", json={"name": "Tea", "price": "3.50", "stock": 5})
    assert created.status_code == 201 and created.json()["version"] == 1
    url = f"/products/{created.json()['id']}"
    etag = client.get(url).headers["etag"]
    assert etag == created.headers["etag"]

    assert client.patch(url, json={"stock": 9}, headers={"If-Match": etag}).status_code == 403  # nobody
    bob = client.patch(url, json={"stock": 9}, headers={"If-Match": etag, "X-User": "bob"})
    assert bob.status_code == 403 and "catalog.write" in bob.json()["detail"]

    ann = {"X-User": "ann"}
    changed = client.patch(url, json={"stock": 9}, headers={**ann, "If-Match": etag})
    assert changed.status_code == 200, changed.text
    assert changed.json()["stock"] == 9 and changed.json()["version"] == 2
    assert changed.headers["etag"] != etag == created.headers["etag"]

    stale = client.patch(url, json={"stock": 1}, headers={**ann, "If-Match": etag})  # the old ETag
    assert stale.status_code == 412 and stale.json()["code"] == "VersionConflict"
    assert client.get(url).json()["stock"] == 9  # the stale change wrote nothing
    fresh = client.patch(url, json={"stock": 1}, headers={**ann, "If-Match": changed.headers["etag"]})
    assert fresh.status_code == 200 and fresh.json()["stock"] == 1
