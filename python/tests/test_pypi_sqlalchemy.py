"""SQLAlchemy's asyncio ORM (2.1 from PyPI; 2.0 on CPython 3.10, which 2.1
does not support) with aiosqlite, on this greenlet module.

SQLAlchemy runs its synchronous ORM inside greenlets (greenlet_spawn) and
switches out of them for every await of the driver; these tests check that
those greenlets are this module's, then drive the ORM: tables, inserts,
queries, relationships (lazy loads awaited, eager loads), streaming,
rollbacks, and sessions running concurrently under asyncio.gather.  The
database is a file under pytest's tmp_path.  Outside the venvs of
scripts/pypi-env.sh these tests skip.
"""
import asyncio
import contextvars
import sys

import pytest

from pypi_support import assert_ours, require

sqlalchemy = require("sqlalchemy", "2.1" if sys.version_info >= (3, 11) else "2.0",
                     dist="SQLAlchemy")
require("aiosqlite", "0.20")

from sqlalchemy import Column, ForeignKey, Integer, String, Table, func, select  # noqa: E402
from sqlalchemy.exc import IntegrityError  # noqa: E402
from sqlalchemy.ext.asyncio import (  # noqa: E402
    AsyncAttrs, async_sessionmaker, create_async_engine)
from sqlalchemy.orm import (  # noqa: E402
    DeclarativeBase, Mapped, mapped_column, relationship, selectinload)

HANG = 120  # seconds: bounds a hang, judges no speed


@pytest.fixture(autouse=True)
def _pypi_greenlet_is_ours():
    assert_ours()
    yield


class Base(AsyncAttrs, DeclarativeBase):
    pass


book_tags = Table(
    "book_tags", Base.metadata,
    Column("book_id", ForeignKey("books.id"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id"), primary_key=True))


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    books: Mapped[list["Book"]] = relationship(back_populates="author",
                                               cascade="all, delete-orphan")


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    pages: Mapped[int] = mapped_column(Integer)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")
    tags: Mapped[list["Tag"]] = relationship(secondary=book_tags, back_populates="books")


class Tag(Base):
    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    books: Mapped[list[Book]] = relationship(secondary=book_tags, back_populates="tags")


def _run(coro):
    async def bounded():
        return await asyncio.wait_for(coro, HANG)
    return asyncio.run(bounded())


async def _engine(tmp_path):
    # busy timeout: concurrent sessions take turns at SQLite's write lock
    engine = create_async_engine("sqlite+aiosqlite:///%s" % (tmp_path / "db.sqlite3"),
                                 connect_args={"timeout": HANG}, pool_size=10, max_overflow=20)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    return engine


def _sqlalchemy_greenlet():
    """What SQLAlchemy's greenlet_spawn runs in (called inside run_sync)."""
    import greenlet
    cur = greenlet.getcurrent()
    return {
        "is_ours": isinstance(cur, greenlet.greenlet),
        "provider": getattr(cur, "__sqlalchemy_greenlet_provider__", False),
        "module_type": type(cur).__mro__,
        "parent_is_greenlet": isinstance(cur.parent, greenlet.greenlet),
    }


def test_sqlalchemy_greenlets_are_this_module(tmp_path):
    import greenlet
    seen = {}
    var = contextvars.ContextVar("var", default="unset")

    async def main():
        engine = await _engine(tmp_path)
        var.set("from the task")
        async with engine.connect() as conn:
            def sync(c):
                seen.update(_sqlalchemy_greenlet())
                seen["var"] = var.get()       # gr_context: the task's context
                return c.exec_driver_sql("select 41 + 1").scalar()
            seen["value"] = await conn.run_sync(sync)
        await engine.dispose()
    _run(main())
    assert seen["value"] == 42
    assert seen["is_ours"] and seen["provider"] and seen["parent_is_greenlet"], seen
    assert greenlet.greenlet in seen["module_type"], seen["module_type"]
    assert seen["var"] == "from the task", seen
    assert sqlalchemy.__version__.startswith("2.1." if sys.version_info >= (3, 11) else "2.0.")


def test_orm_tables_inserts_queries_relationships(tmp_path):
    async def main():
        engine = await _engine(tmp_path)
        Session = async_sessionmaker(engine, expire_on_commit=False)
        async with Session() as s:
            async with s.begin():
                tags = {n: Tag(name=n) for n in ("sf", "classic", "short")}
                for a in range(5):
                    author = Author(name="author-%d" % a)
                    for b in range(4):
                        author.books.append(Book(
                            title="book-%d-%d" % (a, b), pages=100 + 10 * a + b,
                            tags=[tags["sf"]] + ([tags["classic"]] if b % 2 else [])))
                    s.add(author)
        async with Session() as s:
            assert await s.scalar(select(func.count()).select_from(Book)) == 20
            assert await s.scalar(select(func.count()).select_from(book_tags)) == 30
            # eager: selectinload over a one-to-many and a many-to-many
            authors = (await s.scalars(
                select(Author).options(selectinload(Author.books).selectinload(Book.tags))
                .order_by(Author.name))).all()
            assert [a.name for a in authors] == ["author-%d" % i for i in range(5)]
            assert all(len(a.books) == 4 for a in authors)
            assert sorted(t.name for t in authors[2].books[1].tags) == ["classic", "sf"]
            # lazy loads, awaited (each one a greenlet switch out to the driver)
            book = await s.scalar(select(Book).where(Book.title == "book-3-2"))
            author = await book.awaitable_attrs.author
            assert author.name == "author-3"
            assert len(await author.awaitable_attrs.books) == 4
            classic = await s.scalar(select(Tag).where(Tag.name == "classic"))
            assert len(await classic.awaitable_attrs.books) == 10
            # a join, an aggregate, streaming results
            rows = (await s.execute(
                select(Author.name, func.sum(Book.pages)).join(Book)
                .group_by(Author.name).order_by(Author.name))).all()
            assert rows == [("author-%d" % a, sum(100 + 10 * a + b for b in range(4)))
                            for a in range(5)]
            stream = await s.stream_scalars(select(Book.title).order_by(Book.id))
            titles = [t async for t in stream]
            assert len(titles) == 20 and titles[0] == "book-0-0"
        # update, delete with cascade, and a rollback after an IntegrityError
        async with Session() as s:
            async with s.begin():
                a0 = await s.scalar(select(Author).where(Author.name == "author-0"))
                a0.name = "renamed"
                a4 = await s.scalar(select(Author).where(Author.name == "author-4")
                                    .options(selectinload(Author.books)))
                await s.delete(a4)
            s.add(Author(name="author-1"))       # unique name taken
            with pytest.raises(IntegrityError):
                await s.commit()
            await s.rollback()
            assert await s.scalar(select(func.count()).select_from(Author)) == 4
            assert await s.scalar(select(func.count()).select_from(Book)) == 16
            assert await s.scalar(select(Author.id).where(Author.name == "renamed")) is not None
        # an exception raised inside run_sync reaches the awaiting coroutine
        async with Session() as s:
            def boom(sync_session):
                sync_session.execute(select(1))
                raise KeyError("from the greenlet")
            with pytest.raises(KeyError, match="from the greenlet"):
                await s.run_sync(boom)
        await engine.dispose()
    _run(main())


def test_concurrent_sessions_under_gather(tmp_path):
    import greenlet
    workers, per_worker = 24, 8
    live = [0, 0]              # SQLAlchemy greenlets parked at once: now, most

    async def main():
        engine = await _engine(tmp_path)
        Session = async_sessionmaker(engine, expire_on_commit=False)
        async with Session() as s, s.begin():
            s.add_all([Author(name="w%d" % w) for w in range(workers)])

        def first_step(sync_session, w):
            # runs in a greenlet of SQLAlchemy's greenlet_spawn, which
            # switches out to the event loop for each await of the driver:
            # the other tasks' greenlets start while this one is parked
            assert getattr(greenlet.getcurrent(), "__sqlalchemy_greenlet_provider__", False)
            live[0] += 1
            live[1] = max(live)
            try:
                return sync_session.scalars(
                    select(Author).where(Author.name == "w%d" % w)).one()
            finally:
                live[0] -= 1

        async def worker(w):
            async with Session() as s:
                me = await s.run_sync(first_step, w)
                for k in range(per_worker):
                    s.add(Book(title="w%d-%d" % (w, k), pages=k, author=me))
                    await s.commit()
                    await asyncio.sleep(0)
                books = await me.awaitable_attrs.books
                return w, sorted(b.title for b in books)

        results = await asyncio.gather(*(worker(w) for w in range(workers)))
        async with Session() as s:
            total = await s.scalar(select(func.count()).select_from(Book))
            per_author = dict((await s.execute(
                select(Author.name, func.count(Book.id)).join(Book).group_by(Author.name)
            )).all())
        await engine.dispose()
        return results, total, per_author

    results, total, per_author = _run(main())
    assert total == workers * per_worker
    assert per_author == {"w%d" % w: per_worker for w in range(workers)}
    assert sorted(results) == [(w, sorted("w%d-%d" % (w, k) for k in range(per_worker)))
                               for w in range(workers)]
    # every task's greenlet was parked in the driver at the same time
    # (counted, not timed: asyncio runs each task to its first await first)
    assert live == [0, workers], live
