"""The API's request and response models.

Customers' and products' models are derived from the entities (``pk.pydantic_model``): their
constraints are the entity's (``max_len``, ``min``/``max``, Decimal precision), so OpenAPI documents what
``from_dict`` enforces. Orders' models are written by hand: their shape (lines as product/qty pairs, an
aware ``created``) is the API's, not the table's.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

import ponykit as pk


@dataclass(frozen=True)
class Models:
    """The entity-derived models of one app (the entities are declared per Database by ``define``)."""

    CustomerIn: Any
    CustomerOut: Any
    ProductIn: Any
    ProductUpdate: Any
    ProductOut: Any


def derive(customer: type, product: type) -> Models:
    """The customers' and products' models, from the entities (``version`` is ponykit's to count)."""
    return Models(
        CustomerIn=pk.pydantic_model(customer, "create", exclude=["orders"]),
        CustomerOut=pk.pydantic_model(customer, exclude=["orders"]),
        ProductIn=pk.pydantic_model(product, "create", exclude=["lines", "version"]),
        ProductUpdate=pk.pydantic_model(product, "update", exclude=["lines", "version"]),
        ProductOut=pk.pydantic_model(product, exclude=["lines"]),
    )


class LineIn(BaseModel):
    product: Annotated[int, Field(ge=1, le=2**31 - 1)]
    qty: Annotated[int, Field(ge=1, le=1000)]


class OrderIn(BaseModel):
    customer: Annotated[int, Field(ge=1, le=2**31 - 1)]
    lines: Annotated[list[LineIn], Field(min_length=1, max_length=20)]
    note: Annotated[str | None, Field(max_length=200)] = None


class LineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    product: int
    qty: int


class OrderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    customer: int
    created: dt.datetime
    note: str | None
    lines: list[LineOut]
