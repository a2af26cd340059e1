"""The bookshop's models: module-level entities, bound at import to the production database.

This is how most Pony applications are written, and why their tests are hard to point elsewhere: the
import itself connects. Under ponykit's pytest plugin (see ../pytest.ini) the ``bind_url`` below binds the
test database instead, and the production URL is never connected to.
"""

from __future__ import annotations

import os
from datetime import datetime
from decimal import Decimal

from pony.orm import Database, Optional, PrimaryKey, Required, Set

import ponykit as pk

db = Database()


class Author(db.Entity):
    name = Required(str, 100, unique=True)
    born = Optional(int, min=1000, max=2100)
    books = Set("Book")


class Book(db.Entity):
    title = Required(str, 200)
    isbn = Required(str, 13, unique=True)
    price = Required(Decimal, 8, 2, min=Decimal("0"))
    stock = Required(int, default=0, min=0)
    author = Required(Author)
    tags = Set("Tag")
    orders = Set("Order")


class Tag(db.Entity):
    name = PrimaryKey(str, 40)
    books = Set(Book)


class Order(db.Entity):
    book = Required(Book)
    quantity = Required(int, min=1)
    placed_at = Required(datetime, default=datetime.now)


pk.bind_url(db, os.environ.get("BOOKSHOP_DATABASE_URL", "postgresql://bookshop@db.internal:5432/bookshop"))
pk.attach(db)
db.generate_mapping(create_tables=True)
