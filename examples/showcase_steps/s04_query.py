"""04 query: offset and keyset pages, nested prefetch, query counting and N+1 detection.

Pages a blog's posts by OFFSET and by signed keyset cursors, prefetches authors' posts and tags in one
query per path segment, and catches an N+1 loop.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable

from pony.orm import Database, LongStr, Optional, Required, Set, db_session, desc, select

import ponykit as pk
from ponykit.diagnostics import NPlusOneDetected, count_queries, detect_n_plus_one
from ponykit.errors import InvalidCursor


def run(workdir: pathlib.Path, say: Callable[[str], None]) -> None:
    """Run the step in ``workdir``, narrating through ``say``."""
    db = Database()

    class Author(db.Entity):
        name = Required(str)
        bio = Optional(LongStr)
        posts = Set("Post")

    class Post(db.Entity):
        title = Required(str)
        score = Optional(int)
        author = Required(Author)
        tags = Set("Tag")

    class Tag(db.Entity):
        label = Required(str)
        posts = Set(Post)

    pk.bind_url(db, f"sqlite:///{workdir / 'query.db'}?create_db=1")
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        tags = [Tag(label=t) for t in ("pony", "sql", "python")]
        for a in range(5):
            author = Author(name=f"author {a}", bio=f"bio of author {a}")
            for p in range(6):
                Post(
                    title=f"post {a}.{p}",
                    score=None if p == 0 else (a * 7 + p) % 10,
                    author=author,
                    tags=tags[: p % 4],
                )

    with db_session:
        page = pk.paginate(select(p for p in Post).order_by(desc(Post.score)), page=2, per_page=10)
        say(
            f"offset page {page.page}/{page.pages}: {len(page.items)} of {page.total} posts, "
            f"has_next={page.has_next}"
        )

    secret = os.urandom(32)
    with db_session:
        q = select(p for p in Post).order_by(desc(Post.score))
        seen, after, pages = [], None, 0
        while True:
            kpage = pk.paginate_keyset(q, per_page=7, after=after, secret=secret)
            seen += kpage.items
            pages += 1
            if not kpage.has_next:
                break
            after = kpage.next_cursor
        nulls = sum(1 for p in seen if p.score is None)
        say(f"keyset: {pages} pages, {len(seen)} posts, {nulls} with a NULL score, none skipped or repeated")
        say(f"a cursor is opaque and signed: {after[:24]}...")
        try:
            pk.paginate_keyset(q, per_page=7, after=after[:-3] + "abc", secret=secret)
        except InvalidCursor:
            say("a tampered cursor is rejected before any SQL runs")

    with db_session:
        with count_queries() as counter:
            authors = pk.prefetch(select(a for a in Author), "posts.tags", "bio")
        with count_queries() as touched:
            n_tags = sum(len(p.tags) for a in authors for p in a.posts) + len([a.bio for a in authors])
        say(
            f"prefetch posts.tags and bio: {counter.count} queries, "
            f"then {touched.count} while reading ({n_tags} tags and bios)"
        )

    with db_session:
        try:
            with detect_n_plus_one(threshold=3):
                for a in Author.select():
                    _ = a.bio
        except NPlusOneDetected as exc:
            f = exc.findings[0]
            say(f"N+1 caught: {f.count} loads of {f.entity}.{f.attribute} -> prefetch it")
