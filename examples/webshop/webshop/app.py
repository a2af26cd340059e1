"""The shop's HTTP API: ``uvicorn --factory webshop.app:create_app`` (from ``examples/webshop``).

No ``from __future__ import annotations`` here: the endpoints' annotations name the models derived from
this app's entities (local variables), which FastAPI must see as classes, not strings.
"""

import datetime as dt
import os
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request, Response
from pony.orm import Database, desc, flush, select

import ponykit as pk
from ponykit.errors import FieldError, ValidationError
from ponykit.integrations.fastapi import (
    CursorPage,
    Page,
    PonyRoute,
    check_if_match,
    install,
    problem_responses,
    set_etag,
)

from .models import define
from .schemas import LineOut, OrderIn, OrderOut, derive

DEFAULT_URL = "sqlite:///webshop.sqlite?create_db=1"
# Signs the order-list cursors (a real deployment gives attach(db, keys=...) a key ring instead).
CURSOR_SECRET = os.environ.get("WEBSHOP_CURSOR_SECRET", "webshop-development-cursor-secret").encode()
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
PerPage = Annotated[int, Query(ge=1, le=100)]


@dataclass(frozen=True)
class Staff:
    """The principal of a request: a staff member and the permissions they hold."""

    id: str
    permissions: frozenset[str]


# Who may do what. A real deployment verifies a token here (or trusts an authenticating proxy that sets
# the header); the example trusts ``X-User`` as it is.
STAFF = {"ann": Staff("ann", frozenset({"catalog.write"})), "bob": Staff("bob", frozenset())}


def staff_of(request: Request) -> Staff | None:
    """The principal of a request (``install(app, principal=staff_of)``): whom ``X-User`` names."""
    return STAFF.get(request.headers.get("x-user", ""))


@pk.requires("catalog.write")
def change_product(product: Any, changes: dict[str, Any]) -> None:
    """Change a product's price or stock: only for a principal holding ``catalog.write``."""
    product.update_from(changes)


def order_out(order: Any) -> OrderOut:
    """The response model of an order (relations as keys), built while its session is open."""
    lines = sorted((line.product.id, line.qty) for line in order.lines)
    return OrderOut(
        id=order.id,
        customer=order.customer.id,
        created=order.created.replace(tzinfo=dt.timezone.utc),
        note=order.note,
        lines=[LineOut(product=product, qty=qty) for product, qty in lines],
    )


def create_app(url: str | None = None, *, connections: int = 4) -> FastAPI:
    """The shop bound to ``url`` (default: ``WEBSHOP_DATABASE_URL``, else a SQLite file here)."""
    db = Database()
    pk.bind_url(db, url or os.environ.get("WEBSHOP_DATABASE_URL", DEFAULT_URL))
    E = define(db)
    Customer, Product, Order, OrderLine = E["Customer"], E["Product"], E["Order"], E["OrderLine"]
    pk.attach(db)
    db.generate_mapping(create_tables=True)

    app = FastAPI(title="webshop", version="1.0")
    app.router.route_class = PonyRoute
    install(app, db=db, connections=connections, server_timing=True, principal=staff_of)
    app.state.sent_emails = sent = []
    models = derive(Customer, Product)
    CustomerIn, CustomerOut = models.CustomerIn, models.CustomerOut
    ProductIn, ProductUpdate, ProductOut = models.ProductIn, models.ProductUpdate, models.ProductOut

    @app.post("/customers", status_code=201, responses=problem_responses(400, 422))
    def create_customer(body: CustomerIn) -> CustomerOut:
        if Customer.get(email=body.email) is not None:
            raise ValidationError(
                "the customer cannot be registered", [FieldError("email", "is already registered")]
            )
        return Customer.from_dict(body.model_dump(mode="json", exclude_unset=True))

    @app.get("/customers/{customer_id}", responses=problem_responses(404))
    def get_customer(customer_id: Id) -> CustomerOut:
        return Customer[customer_id]

    @app.post("/products", status_code=201, responses=problem_responses(400, 422))
    def create_product(body: ProductIn, response: Response) -> ProductOut:
        product = Product.from_dict(body.model_dump(mode="json", exclude_unset=True))
        set_etag(response, product)
        return product

    @app.get("/products", responses=problem_responses(400))
    def list_products(
        request: Request, page: Annotated[int, Query(ge=1, le=10_000)] = 1, per_page: PerPage = 20
    ) -> Page[ProductOut]:
        query = select(p for p in Product).order_by(Product.name)
        return Page[ProductOut].from_query(query, page=page, per_page=per_page, request=request)

    @app.get("/products/{product_id}", responses=problem_responses(404))
    def get_product(product_id: Id, response: Response) -> ProductOut:
        product = Product[product_id]
        set_etag(response, product)  # the client sends it back as If-Match to change the product
        return product

    @app.patch("/products/{product_id}", responses=problem_responses(400, 403, 404, 409, 412, 422))
    def update_product(
        product_id: Id, body: ProductUpdate, request: Request, response: Response
    ) -> ProductOut:
        """Change a product (staff with ``catalog.write``, header ``X-User``); send ``If-Match``."""
        product = Product[product_id]
        check_if_match(request, product)  # a stale ETag: 412, nothing changed
        change_product(product, body.model_dump(mode="json", exclude_unset=True))
        set_etag(response, product)
        return product

    @app.post("/orders", status_code=201, responses=problem_responses(400, 422))
    def place_order(body: OrderIn) -> OrderOut:
        errors = []
        customer = Customer.get(id=body.customer)
        if customer is None:
            errors.append(FieldError("customer", "no customer has this id"))
        seen = set()
        for i, line in enumerate(body.lines):
            product = Product.get(id=line.product)
            if line.product in seen:
                errors.append(
                    FieldError(f"lines.{i}.product", "is listed twice; put the quantities together")
                )
            seen.add(line.product)
            if product is None:
                errors.append(FieldError(f"lines.{i}.product", "no product has this id"))
            elif product.stock < line.qty:
                errors.append(FieldError(f"lines.{i}.qty", f"only {product.stock} in stock"))
        if errors:
            raise ValidationError("the order cannot be placed", errors)
        order = Order(customer=customer, note=body.note or "")
        for line in body.lines:
            product = Product[line.product]
            product.stock -= line.qty
            OrderLine(order=order, product=product, qty=line.qty)
        email = customer.email
        pk.on_commit(lambda: sent.append(email))  # only once the order is really stored
        flush()  # the order gets its id
        return order_out(order)

    @app.get("/orders", responses=problem_responses(400))
    def list_orders(
        request: Request, after: str | None = None, before: str | None = None, per_page: PerPage = 20
    ) -> CursorPage[OrderOut]:
        return CursorPage[OrderOut].from_query(
            select(o for o in Order),
            per_page=per_page,
            after=after,
            before=before,
            order=desc(Order.id),
            secret=CURSOR_SECRET,
            request=request,
            item=order_out,
        )

    @app.get("/orders/{order_id}", responses=problem_responses(404))
    def get_order(order_id: Id) -> OrderOut:
        return order_out(Order[order_id])

    return app
