"""09 bulk writes, part 2: a catalogue with authors, tags and reviews, imported and pruned in bulk.

Books name their author by key and their tags as a list in the same rows (many-to-many link rows through
the table Pony mapped), more tags are linked afterwards, a missing author is caught per row with
``check_references=True``, and deleting books takes their reviews and links with them, as Pony's own
per-object delete would.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable

from pony.orm import Database, Optional, PrimaryKey, Required, Set, db_session, select

import ponykit as pk


def run(workdir: pathlib.Path, say: Callable[[str], None]) -> None:
    """Run the step in ``workdir``, narrating through ``say``."""
    db = Database()

    class Author(db.Entity):
        name = Required(str, 100, unique=True)
        books = Set("Book")

    class Book(db.Entity):
        title = Required(str, 200)
        author = Required(Author)
        tags = Set("Tag")
        reviews = Set("Review")  # the reverse is Required: Pony cascades a book's delete to its reviews
        year = Optional(int)

    class Tag(db.Entity):
        name = PrimaryKey(str, 40)
        books = Set(Book)

    class Review(db.Entity):
        book = Required(Book)
        stars = Required(int, min=1, max=5)

    pk.bind_url(db, f"sqlite:///{workdir / 'catalogue.db'}?create_db=1")
    pk.attach(db)
    db.generate_mapping(create_tables=True)

    genres = ["fiction", "history", "science", "poetry", "travel"]
    start = time.perf_counter()
    with db_session:
        pk.bulk_insert(Tag, [{"name": g} for g in genres])
        authors = pk.bulk_insert(Author, [{"name": f"author {i}"} for i in range(200)], return_ids=True)
        books = pk.bulk_insert(
            Book,
            (
                {
                    "title": f"book {i}",
                    "author": authors[i % 200],
                    "tags": [genres[i % 5]],
                    "year": 1900 + i % 120,
                }
                for i in range(5_000)
            ),
            return_ids=True,
        )
        linked = pk.bulk_link(Book.tags, [(book, "travel") for book in books[::10]])
        pk.bulk_insert(Review, ({"book": books[i % 5_000], "stars": 1 + i % 5} for i in range(10_000)))
    say(
        f"5,000 books with their tags in the same rows, {linked} more links and 10,000 reviews in "
        f"{time.perf_counter() - start:.2f}s"
    )

    try:
        with db_session:
            pk.bulk_insert(
                Book,
                [{"title": "fine", "author": authors[0]}, {"title": "orphan", "author": 999_999}],
                check_references=True,
            )
    except pk.BulkWriteError as exc:
        say(f"a book whose author does not exist is named before anything is written: row {exc.row_index}")

    with db_session:
        gone = pk.bulk_delete(Book, select(b for b in Book if b.year < 1910))
        reviews = Review.select().count()
        links = sum(tag.books.count() for tag in Tag.select())
        say(f"bulk_delete removed {gone} books, their reviews went with them ({reviews:,} reviews left)")
        travel = select(b for b in Book if "travel" in b.tags.name).count()
        say(f"link rows left: {links:,} (theirs went too); 'travel' books now: {travel:,}")
    db.disconnect()
