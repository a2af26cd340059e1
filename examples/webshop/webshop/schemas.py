"""The API's request and response models (hand-written; ``pk.pydantic_model(Entity)`` can derive them)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(min_length=1, max_length=80)]


class CustomerIn(BaseModel):
    name: Name
    email: Annotated[str, Field(min_length=3, max_length=120, pattern=r"^[^@\s]+@[^@\s]+$")]


class CustomerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    email: str


class ProductIn(BaseModel):
    name: Name
    price: Annotated[Decimal, Field(gt=0, max_digits=10, decimal_places=2)]
    stock: Annotated[int, Field(ge=0, le=1_000_000)]


class ProductOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    price: Decimal
    stock: int


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
