"""Engines, transactions and schema migration.

SQLite runs in WAL mode with foreign keys on and a busy timeout, and every transaction starts
with ``BEGIN IMMEDIATE``: one writer at a time, so that a read-then-write (a balance check before
a debit) cannot interleave with another writer. PostgreSQL serialises writers per member with
``SELECT ... FOR UPDATE`` on the member's balance row (see ``storage/ledger.py``).

The few statements every recorded event runs skip SQLAlchemy's execution on PostgreSQL, whose
cost per statement is several times psycopg's own: :func:`insert_rows` and
:func:`execute_driver` run them on the psycopg connection under the SQLAlchemy one, in its
transaction, with values bound and read back as the tables' column types do it, and failures
raised as SQLAlchemy raises them. :func:`pipelined` sends a run of them in one round trip.
SQLite goes through SQLAlchemy as everything else does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Connection, Engine, Table, TypeDecorator, create_engine, event, insert
from sqlalchemy.exc import DBAPIError

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` with Patron's connection settings."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, pool_pre_ping=True, **kwargs)


def is_postgres(conn: Connection | Engine) -> bool:
    return conn.dialect.name == "postgresql"


def conflict_insert(conn: Connection, table: Table) -> Any:
    """An INSERT into ``table`` that takes ``on_conflict_do_nothing`` / ``on_conflict_do_update``
    (PostgreSQL's and SQLite's own, which SQLAlchemy builds alike)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql if is_postgres(conn) else sqlite).insert(table)


@contextmanager
def pipelined(conn: Connection) -> Iterator[None]:
    """Send the statements executed inside to PostgreSQL in one round trip (psycopg's pipeline
    mode) instead of one each; elsewhere, a no-op.

    Only for writes whose results nobody reads (INSERT or UPDATE without RETURNING): inside, a
    statement's result is not back yet, so a SELECT would look empty. A failure (a unique key
    taken) may surface at the end of the block rather than at its statement; it is raised as
    SQLAlchemy raises it (``IntegrityError``...), and the transaction is then aborted as usual.
    """
    if not is_postgres(conn):
        yield
        return
    import psycopg

    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    try:
        with raw.pipeline():
            yield
    except psycopg.Error as exc:  # raised by the final sync, outside SQLAlchemy's execute
        raise DBAPIError.instance(None, None, exc, psycopg.Error) from exc


Row = dict[str, Any]
_ROWS_PER_STATEMENT = 8  # more rows per INSERT in batches of this many (few distinct statements)
_PLANS: dict[tuple[str, tuple[str, ...], int], tuple[str, dict[str, Any]]] = {}


def insert_rows(conn: Connection, table: Table, rows: Row | list[Row]) -> None:
    """``conn.execute(insert(table), rows)``: one row (a dict) or several (dicts of the same keys).

    On PostgreSQL the INSERT goes to psycopg directly, one statement for all the rows: its SQL is
    made once per table, set of columns and number of rows, and each value is bound as its
    column's type binds it (aware times to UTC, JSON as JSON). That costs a fraction of
    SQLAlchemy's execution, which matters for the rows every event writes. Inside
    :func:`pipelined` it is sent with the others.
    """
    if not is_postgres(conn):
        conn.execute(insert(table), rows)
        return
    many = rows if isinstance(rows, list) else [rows]
    if not many:
        return
    if len(many) > _ROWS_PER_STATEMENT:  # a big basket: in batches, to keep the statements few
        for at in range(0, len(many), _ROWS_PER_STATEMENT):
            insert_rows(conn, table, many[at : at + _ROWS_PER_STATEMENT])
        return
    key = (table.name, tuple(many[0]), len(many))
    plan = _PLANS.get(key)
    if plan is None:
        names = list(many[0])
        columns = ", ".join(f'"{c}"' for c in names)
        values = ", ".join("(" + ", ".join(f"%({c}_{i})s" for c in names) + ")" for i in range(len(many)))
        binds = {c: f for c in names if (f := _binder(table.c[c].type, conn)) is not None}
        plan = _PLANS[key] = (f'INSERT INTO "{table.name}" ({columns}) VALUES {values}', binds)
    sql, binds = plan
    params = {
        f"{c}_{i}": (binds[c](v) if c in binds else v) for i, row in enumerate(many) for c, v in row.items()
    }
    execute_driver(conn, sql, params)


def insert_many(conn: Connection, table: Table, rows: list[Row]) -> None:
    """Insert many ``rows`` (dicts of the same keys) in bulk: one COPY on PostgreSQL, one
    executemany elsewhere. A unique key taken is raised as ``IntegrityError`` either way."""
    if not rows:
        return
    if not is_postgres(conn):
        conn.execute(insert(table), rows)
        return
    import json

    from psycopg.errors import IntegrityError as DriverIntegrityError
    from sqlalchemy.exc import IntegrityError

    names = list(rows[0])
    as_json = [n for n in names if isinstance(table.c[n].type, JSON)]
    raw = conn.connection.driver_connection
    assert raw is not None
    sql = f"COPY {table.name} ({', '.join(names)}) FROM STDIN"
    try:
        with raw.cursor() as cur, cur.copy(sql) as copy:
            for row in rows:
                copy.write_row(
                    [json.dumps(row[n]) if n in as_json and row[n] is not None else row[n] for n in names]
                )
    except DriverIntegrityError as exc:
        raise IntegrityError(sql, None, exc) from exc


def bind_row(conn: Connection, table: Table, row: Row) -> Row:
    """``row``'s values as ``table``'s column types bind them, for :func:`execute_driver`."""
    binds = {c: f for c in row if (f := _binder(table.c[c].type, conn)) is not None}
    return {**row, **{c: f(row[c]) for c, f in binds.items()}}


def _binder(type_: Any, conn: Connection) -> Any:
    if isinstance(type_, TypeDecorator):
        dialect = conn.dialect
        return lambda value: type_.process_bind_param(value, dialect)
    if isinstance(type_, JSON):
        from psycopg.types.json import Json

        return Json
    return None


_COMPILED: dict[Any, tuple[str, Row]] = {}


def _driver_sql(conn: Connection, stmt: Any) -> tuple[str, Row]:
    """A statement built once (a module's constant) as PostgreSQL's SQL text with psycopg's
    ``%(name)s`` placeholders, compiled on first use, and the values of its literal parameters."""
    found = _COMPILED.get(stmt)
    if found is None:
        compiled = stmt.compile(dialect=conn.dialect)
        fixed = {name: b.value for name, b in compiled.binds.items() if b.value is not None}
        found = _COMPILED[stmt] = (str(compiled), fixed)
    return found


def execute_driver(conn: Connection, stmt: Any, params: Row | list[Row]) -> Any:
    """Run ``stmt`` (a SQLAlchemy statement built once, or SQL text with psycopg's ``%(name)s``
    placeholders) on PostgreSQL's own connection under ``conn``, in its transaction, with
    ``params`` bound as given (see :func:`bind_row`): the cursor (``executemany`` for a list of
    parameter sets). A failure is raised as SQLAlchemy raises it (``IntegrityError``...)."""
    import psycopg

    if isinstance(stmt, str):
        sql = stmt
    else:
        sql, fixed = _driver_sql(conn, stmt)
        if fixed:
            params = [{**fixed, **p} for p in params] if isinstance(params, list) else {**fixed, **params}
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    cursor = raw.cursor()
    try:
        if isinstance(params, list):
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
    except psycopg.Error as exc:
        raise DBAPIError.instance(sql, params, exc, psycopg.Error) from exc
    return cursor


def fetch_driver(conn: Connection, stmt: Any, params: Row) -> Any:
    """:func:`execute_driver`, then the first row of the result (None if none). In a pipeline,
    the fetch sends what is queued and waits for it; a failure of any of it is raised as
    SQLAlchemy raises it."""
    import psycopg

    cursor = execute_driver(conn, stmt, params)
    try:
        return cursor.fetchone()
    except psycopg.Error as exc:
        raise DBAPIError.instance(str(stmt), params, exc, psycopg.Error) from exc


def driver_rows(conn: Connection, table: Table, columns: list[str], rows: list[Any]) -> list[Row]:
    """Rows of ``table`` fetched through :func:`execute_driver` (its ``columns``, in order) as
    SQLAlchemy reads them: each value through its column type's result processing (times in UTC)."""
    dialect = conn.dialect
    procs = [
        t.process_result_value if isinstance(t := table.c[c].type, TypeDecorator) else None for c in columns
    ]
    return [
        {c: v if f is None else f(v, dialect) for c, f, v in zip(columns, procs, row, strict=True)}
        for row in rows
    ]


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the latest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if is_postgres(conn):  # concurrent starters (API workers, test workers) migrate one at a time
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7420001)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")  # feature branches of the schema may each have a head
