"""The bulk helpers of ``storage.ingest``: planner statistics for the tables the bulk write's
foreign keys look up (PostgreSQL)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, text

from patron.storage import ingest as repo
from patron.storage.db import make_engine


@pytest.mark.postgres
def test_tables_without_statistics_are_analysed_before_a_bulk_write(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL plans foreign-key checks once per connection; SQLite does not")
    schema = f"ingest_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
        for table in repo.REFERENCED:
            conn.execute(text(f"CREATE TABLE {schema}.{table} (merchant_id varchar(40), id varchar(40))"))
        conn.execute(
            text(f"INSERT INTO {schema}.journals SELECT 'mrc_1', 'jrn_' || g FROM generate_series(1, 50) g")
        )
    other = make_engine(
        engine.url.render_as_string(hide_password=False),
        connect_args={"options": f"-csearch_path={schema}"},
    )
    known = False
    try:

        def analysed() -> set[str]:
            with other.connect() as conn:
                return {
                    str(r[0])
                    for r in conn.execute(
                        text(
                            "SELECT tablename FROM pg_stats WHERE schemaname = :s AND attname = 'merchant_id'"
                        ),
                        {"s": schema},
                    )
                }

        assert analysed() == set()
        known = str(other.url) in repo._planned  # the test database's own tables, by an earlier test
        repo._planned.discard(str(other.url))
        with other.begin() as conn:
            repo.plan_statistics(conn)
        assert analysed() == {"journals"}  # members is empty: nothing to learn from yet
        with other.begin() as conn:
            conn.execute(text("INSERT INTO members VALUES ('mrc_1', 'mem_1')"))
        with other.begin() as conn:
            repo.plan_statistics(conn)
        assert analysed() == {"journals", "members"}
        with other.begin() as conn:  # from now on nothing is asked in this process
            repo.plan_statistics(conn)
        assert str(other.url) in repo._planned
    finally:
        other.dispose()
        if not known:
            repo._planned.discard(str(other.url))
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
