"""The schema built by the migrations is ready to shard by merchant: every table of merchant data
has ``merchant_id`` leading its primary key, every unique constraint, every index and every
foreign key, so that a distributed PostgreSQL (Citus) can place each merchant's rows together."""

from __future__ import annotations

from sqlalchemy import Engine, inspect

#: Tables that are not sharded merchant data: the tenants themselves; small reference tables looked
#: up before the merchant is known (API keys by hash, integrations by the id in their webhook URL,
#: console users by email at sign-in, web sessions and login links by token); the job run log;
#: Alembic's own.
GLOBAL = {
    "merchants",
    "api_keys",
    "integrations",
    "users",
    "web_sessions",
    "login_links",
    "job_runs",
    "alembic_version",
}


def test_merchant_id_leads_every_key_of_merchant_data(engine: Engine) -> None:
    insp = inspect(engine)
    problems = []
    tables = [t for t in insp.get_table_names() if t not in GLOBAL]
    assert {"members", "postings", "journals", "lots", "events"} <= set(tables)
    for table in tables:
        columns = [c["name"] for c in insp.get_columns(table)]
        if "merchant_id" not in columns:
            problems.append(f"{table}: no merchant_id column")
            continue
        pk = insp.get_pk_constraint(table)["constrained_columns"]
        if not pk or pk[0] != "merchant_id":
            problems.append(f"{table}: primary key {pk}")
        for uq in insp.get_unique_constraints(table):
            if uq["column_names"][0] != "merchant_id":
                problems.append(f"{table}: unique {uq['column_names']}")
        for ix in insp.get_indexes(table):
            if ix["column_names"] and ix["column_names"][0] != "merchant_id":
                problems.append(f"{table}: index {ix['name']} {ix['column_names']}")
        for fk in insp.get_foreign_keys(table):
            if fk["constrained_columns"][0] != "merchant_id":
                problems.append(f"{table}: foreign key {fk['constrained_columns']}")
    assert problems == []


def test_global_tables_point_only_at_global_tables(engine: Engine) -> None:
    """A reference table cannot hold a foreign key into a distributed one."""
    insp = inspect(engine)
    problems = [
        f"{table} -> {fk['referred_table']}"
        for table in insp.get_table_names()
        if table in GLOBAL
        for fk in insp.get_foreign_keys(table)
        if fk["referred_table"] not in GLOBAL
    ]
    assert problems == []


def test_the_migrations_build_exactly_the_tables_the_code_declares(engine: Engine) -> None:
    import importlib
    import pkgutil

    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import patron.storage
    from patron.storage.tables import metadata

    for module in pkgutil.iter_modules(patron.storage.__path__):  # their tables join the metadata
        importlib.import_module(f"patron.storage.{module.name}")

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), metadata)
    assert diff == []
