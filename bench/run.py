"""Every benchmark, each against its ceiling twin in alternating rounds; figures to
``bench/results.json`` and a table on stdout.

    PATRON_BENCH_POSTGRES_URL=postgresql+psycopg://... python bench/run.py [--quick] [--only ...]

``--quick`` (``make bench-quick``) finishes in about five minutes on two cores; without it
(``make bench``) the sizes are the issue's: 1M members for the jobs, 10M postings for
balance_read, a 1M-row import (that one alone takes most of an hour on two cores). Each
benchmark resets the ``public`` schema of the bench database and migrates it afresh, so use a
database of its own. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import log, postgres_url, reset_postgres

RESULTS = Path(__file__).resolve().parent / "results.json"
SIZES = {
    "quick": {
        "ingest_events": 800,
        "http_events": 500,
        "jobs_members": 100_000,
        "reads": 500,
        "postings_small": 10_000,
        "postings_large": 1_000_000,
        "clv_customers": 100_000,
        "import_rows": 1_000,
        "prune_events": 20_000,
        "history_purchases": 500,
        "analytics_purchases": 20_000,
        "analytics_members": 2_000,
    },
    "full": {
        "ingest_events": 5000,
        "http_events": 3000,
        "jobs_members": 1_000_000,
        "reads": 3000,
        "postings_small": 10_000,
        "postings_large": 10_000_000,
        "clv_customers": 100_000,
        "import_rows": 1_000_000,
        "prune_events": 1_000_000,
        "history_purchases": 2_000,
        "analytics_purchases": 1_000_000,
        "analytics_members": 100_000,
    },
}
BENCHMARKS = ("ingest", "http_earn", "jobs", "balance_read", "extra", "analytics")


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def postgres_facts(url: str) -> dict[str, str]:
    import psycopg
    from harness import libpq

    with psycopg.connect(libpq(url)) as conn:
        facts = {
            k: str(conn.execute(f"SHOW {k}").fetchone()[0])  # type: ignore[index]
            for k in ("server_version", "fsync", "synchronous_commit", "shared_buffers", "autovacuum")
        }
    if facts["fsync"] != "on" or facts["synchronous_commit"] == "off":
        sys.exit(
            f"refusing to benchmark with fsync={facts['fsync']}, "
            f"synchronous_commit={facts['synchronous_commit']}"
        )
    return facts


def table(results: dict[str, Any]) -> str:
    rows = [("benchmark", "ratio", "min", "max", "target", "figures")]

    def add(name: str, r: dict[str, Any], target: str, figures: str) -> None:
        rows.append(
            (name, f"{r['ratio']:.4f}", f"{r['ratio_min']:.4f}", f"{r['ratio_max']:.4f}", target, figures)
        )

    ing = results.get("ingest", {})
    for db in ("sqlite", "postgres"):
        if db in ing:
            r = ing[db]
            add(
                f"ingest/{db}",
                r,
                ">= 0.25",
                f"{r['patron_events_per_s']:,.0f} vs {r['twin_events_per_s']:,.0f} events/s",
            )
    if "postgres" in results.get("http_earn", {}):
        r = results["http_earn"]["postgres"]
        add(
            "http_earn",
            r,
            ">= 0.25, p99 < 50",
            f"{r['requests_per_s']:,.0f} req/s p50 {r['p50_ms']} p99 {r['p99_ms']} ms",
        )
    if "postgres" in results.get("jobs", {}):
        r = results["jobs"]["postgres"]
        e, q = r["expire"], r["requalify"]
        add(
            "jobs/expire", e, ">= 0.5", f"{e['patron_lots_per_s']:,.0f} vs {e['twin_lots_per_s']:,.0f} lots/s"
        )
        add(
            "jobs/requalify",
            q,
            ">= 0.5",
            f"{q['patron_members_per_s']:,.0f} vs {q['twin_members_per_s']:,.0f} members/s",
        )
    if "postgres" in results.get("balance_read", {}):
        r = results["balance_read"]["postgres"]
        add(
            "balance_read",
            r,
            "p99 growth <= 1.2",
            f"p99 {r['p99_ms_small_ledger']} -> {r['p99_ms_large_ledger']} ms (x{r['p99_growth']})",
        )
    if "postgres" in results.get("earn_history", {}):
        r = results["earn_history"]["postgres"]
        add(
            "earn_history",
            r,
            "(orientation)",
            f"{r['ms_per_event_history']} vs {r['ms_per_event_fresh']} ms an event "
            f"({r['prior_purchases']:,} earlier)",
        )
    if "postgres" in results.get("analytics", {}):
        r = results["analytics"]["postgres"]
        took = sum(v["patron"] for v in r["reports_ms"].values())
        add("analytics", r, "(orientation)", f"5 reports in {took:,.0f} ms over {r['purchases']:,} purchases")
    widths = [max(len(str(row[i])) for row in rows) for i in range(6)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)


def markdown(results: dict[str, Any]) -> str:
    """The figures as the Results section of bench/README.md shows them."""
    meta = results.get("meta", {})
    m, pg = meta.get("machine", {}), meta.get("postgres", {})
    lines = [
        f"Run of {meta.get('date', '?')} (`{meta.get('size', '?')}` sizes, {meta.get('rounds', '?')} rounds, "
        f"{meta.get('seconds', '?')} s in all) on {m.get('cpus')} x {m.get('cpu')}, {m.get('memory')}, "
        f"Python {m.get('python')}, PostgreSQL {pg.get('server_version')} (fsync {pg.get('fsync')}, "
        f"synchronous_commit {pg.get('synchronous_commit')}, shared_buffers {pg.get('shared_buffers')}, "
        f"autovacuum {pg.get('autovacuum', '?')}).",
        "",
        "| benchmark | ratio (median) | min | max | target | Patron | twin | other figures |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def row(name: str, r: dict[str, Any], target: str, ours: str, theirs: str, other: str = "") -> None:
        lines.append(
            f"| {name} | {r['ratio']:.4f} | {r['ratio_min']:.4f} | {r['ratio_max']:.4f} | {target} "
            f"| {ours} | {theirs} | {other} |"
        )

    for db in ("sqlite", "postgres"):
        r = results.get("ingest", {}).get(db)
        if r:
            row(
                f"ingest / {db}",
                r,
                ">= 0.25",
                f"{r['patron_events_per_s']:,.0f} events/s",
                f"{r['twin_events_per_s']:,.0f} events/s",
                r.get("patron_path", ""),
            )
    r = results.get("http_earn", {}).get("postgres")
    if r:
        row(
            "http_earn",
            r,
            ">= 0.25, p99 < 50 ms",
            f"{r['requests_per_s']:,.0f} req/s",
            f"{r['twin_events_per_s']:,.0f} events/s",
            f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms (twin p99 {r['twin_p99_ms']} ms); "
            f"pgledger peer / twin {r.get('peer_pgledger_ratio_to_twin')}",
        )
    r = results.get("jobs", {}).get("postgres")
    if r:
        e, q, k = r["expire"], r["requalify"], r["kill9"]
        peaks = ", ".join(f"{job} {mib} MiB" for job, mib in r["peak_rss_mib"].items())
        row(
            "jobs / expire-points",
            e,
            ">= 0.5",
            f"{e['patron_lots_per_s']:,.0f} lots/s",
            f"{e['twin_lots_per_s']:,.0f} lots/s",
            f"{r['members']:,} members",
        )
        row(
            "jobs / requalify-tiers",
            q,
            ">= 0.5",
            f"{q['patron_members_per_s']:,.0f} members/s",
            f"{q['twin_members_per_s']:,.0f} members/s",
            f"changes: Patron {q['changes_patron'][0]:,}, twin {q['changes_twin']:,}",
        )
        lines.append(
            f"| jobs: memory, kill -9 | | | | bounded; resumable | peak RSS: {peaks} | | "
            f"killed at {k['done_before_kill']:,}/{k['due']:,} lots, "
            f"re-run finished {k['done_after_rerun']:,}, "
            f"verify {'ok' if k['verify_ok'] else 'FAILED'} |"
        )
    r = results.get("balance_read", {}).get("postgres")
    if r:
        row(
            "balance_read",
            r,
            "p99 growth <= 1.2",
            f"{r['large']['patron_reads_per_s']:,.0f} reads/s",
            f"{r['large']['twin_reads_per_s']:,.0f} reads/s",
            f"p99 {r['p99_ms_small_ledger']} ms at {r['postings_small']:,} postings, "
            f"{r['p99_ms_large_ledger']} ms at {r['postings_large']:,}: x{r['p99_growth']}",
        )
    c, i = results.get("clv"), results.get("import")
    if c:
        lines.append(
            f"| clv | | | | | {c['customers']:,} customers, {c['purchases']:,} purchases: summarise "
            f"{c['summarise_s']} s, fit + value {c['fit_and_value_s']} s | | |"
        )
    if i:
        lines.append(
            f"| import | | | | | {i['rows']:,} rows in {i['seconds']} s ({i['rows_per_s']:,.0f} rows/s), "
            f"peak RSS {i['peak_rss_mib']} MiB | | 1M rows at that rate: {i['projected_1m_s']:,} s |"
        )
        if "postgres" in i:
            g = i["postgres"]
            lines.append(
                f"| import (PostgreSQL) | | | | | {g['rows']:,} rows in {g['seconds']} s "
                f"({g['rows_per_s']:,.0f} rows/s), peak RSS {g['peak_rss_mib']} MiB | | "
                f"1M rows at that rate: {g['projected_1m_s']:,} s |"
            )
    pr = results.get("prune_outbox")
    if pr:
        lines.append(
            f"| prune-outbox | | | | | {pr['events']:,} events, deliveries and attempts past the "
            f"retention in {pr['seconds']} s ({pr['events_per_s']:,.0f} events/s) | | PostgreSQL |"
        )
    h = results.get("earn_history", {}).get("postgres")
    if h:
        row(
            "earn_history",
            h,
            "(orientation: 1.0 flat)",
            f"{h['ms_per_event_history']} ms an event, {h['prior_purchases']:,} earlier purchases",
            f"{h['ms_per_event_fresh']} ms an event, none",
            "PostgreSQL, in process (`record_event`)",
        )
    a = results.get("analytics", {}).get("postgres")
    if a:
        ms = a["reports_ms"]
        lines.append(
            f"| analytics | {a['ratio']} | {a['ratio_min']} | {a['ratio_max']} | (orientation) | "
            + ", ".join(f"{k} {v['patron']} ms" for k, v in ms.items())
            + " | "
            + ", ".join(f"{k} {v['twin']} ms" for k, v in ms.items())
            + f" | {a['purchases']:,} purchases of {a['members']:,} members |"
        )
    for rerun in results.get("reruns", []):
        lines.append(f"\nRe-run of {', '.join(rerun['only'])} at {rerun['date']} ({rerun['seconds']} s).")
    return "\n".join(lines)


def write_readme(results: dict[str, Any]) -> None:
    readme = RESULTS.parent / "README.md"
    text = readme.read_text()
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        readme.write_text(head + begin + "\n" + markdown(results) + "\n" + end + rest.split(end, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the bench-quick sizes (about 5 minutes)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per benchmark (>= 3)")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated: {','.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="patron serve --workers for the HTTP benchmarks"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight for http_earn")
    parser.add_argument(
        "--read-concurrency",
        type=int,
        default=4,
        help="requests in flight for balance_read: few enough that its p99 is the read, not the queue",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--readme", action="store_true", help="only rewrite the Results of bench/README.md from --out"
    )
    args = parser.parse_args()
    if args.readme:
        write_readme(json.loads(args.out.read_text()))
        return
    size = SIZES["quick" if args.quick else "full"]
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    url = postgres_url()
    started = time.perf_counter()
    results: dict[str, Any] = (
        json.loads(args.out.read_text()) if args.out.exists() and set(only) != set(BENCHMARKS) else {}
    )
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "size": "quick" if args.quick else "full",
        "sizes": size,
        "rounds": args.rounds,
        "machine": machine(),
        "postgres": postgres_facts(url),
    }
    if "meta" in results:  # a subset merged into an earlier run's figures: keep that run's meta
        meta["only"] = only
        results.setdefault("reruns", []).append(meta)
    else:
        results["meta"] = meta
    log(f"patron bench ({meta['size']}), {args.rounds} rounds, {os.cpu_count()} CPUs; results to {args.out}")
    failed: list[str] = []

    def save() -> None:
        meta["seconds"] = round(time.perf_counter() - started, 1)
        meta["failed"] = failed
        args.out.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")

    def step(name: str, fn: Any) -> None:
        if name not in only:
            return
        t0 = time.perf_counter()
        log(f"\n== {name} == ({time.perf_counter() - started:.0f} s into the run)")
        try:
            fn()
        except Exception:  # one broken benchmark must not lose the others' figures
            failed.append(name)
            log(f"{name} FAILED:\n{traceback.format_exc()}")
        log(f"== {name}: {time.perf_counter() - t0:.0f} s")
        save()

    def ingest() -> None:
        import suite_ingest

        results["ingest"] = {
            "sqlite": suite_ingest.run("sqlite", None, events=size["ingest_events"], rounds=args.rounds)
        }
        save()
        reset_postgres(url)
        results["ingest"]["postgres"] = suite_ingest.run(
            "postgres", url, events=size["ingest_events"], rounds=args.rounds
        )

    def http_earn() -> None:
        import suite_extra
        import suite_http

        reset_postgres(url)
        pairs = suite_extra.pgledger_setup(url, 500)

        def peer(r: int) -> float:
            items = [pairs[(i * 7) % len(pairs)] for i in range(size["http_events"])]
            took, _ = suite_http.processes(url, "peer", items, args.concurrency)
            return len(items) / took

        results["http_earn"] = {
            "postgres": suite_http.http_earn(
                url,
                events=size["http_events"],
                rounds=args.rounds,
                clients=args.concurrency,
                workers=args.workers,
                peer=peer,
            )
        }

    def jobs() -> None:
        import suite_jobs

        reset_postgres(url)
        results["jobs"] = {"postgres": suite_jobs.run(url, members=size["jobs_members"], rounds=args.rounds)}

    def balance_read() -> None:
        import suite_http

        reset_postgres(url)
        results["balance_read"] = {
            "postgres": suite_http.balance_read(
                url,
                reads=size["reads"],
                rounds=args.rounds,
                clients=args.read_concurrency,
                workers=args.workers,
                small=size["postings_small"],
                large=size["postings_large"],
            )
        }

    def extra() -> None:
        import suite_extra

        results["clv"] = suite_extra.clv(size["clv_customers"])
        save()
        reset_postgres(url)
        results["import"] = suite_extra.import_rows(size["import_rows"], url)
        save()
        reset_postgres(url)
        results["prune_outbox"] = suite_extra.prune_outbox(url, size["prune_events"])
        save()
        reset_postgres(url)
        results["earn_history"] = {
            "postgres": suite_extra.earn_history(url, size["history_purchases"], args.rounds)
        }

    step("ingest", ingest)
    step("http_earn", http_earn)
    step("jobs", jobs)
    step("balance_read", balance_read)
    step("extra", extra)

    def analytics() -> None:
        import suite_analytics

        results["analytics"] = {
            "postgres": suite_analytics.run(
                url,
                purchases=size["analytics_purchases"],
                people=size["analytics_members"],
                rounds=args.rounds,
            )
        }

    step("analytics", analytics)
    save()
    log("\n" + table(results))
    if args.out == RESULTS:
        write_readme(results)
    peer = results.get("http_earn", {}).get("postgres", {}).get("peer_pgledger_ratio_to_twin")
    if peer is not None:
        log(f"peer: pgledger's transfer function / the http_earn twin = {peer}")
    log(f"\n{time.perf_counter() - started:.0f} s in all; results in {args.out}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
