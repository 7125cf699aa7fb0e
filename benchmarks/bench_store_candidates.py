"""Three candidate shared stores on the project's write pattern, in one run of this script: the
numbers behind choosing DuckLake for the cluster (docs/deploy.md).

W writer processes at once (1, 2, 4; spawned, started together by a barrier), each owning 5
tickers, replace their tickers' rows for the same 250 sessions x 3 horizons (3,750 rows of 23
columns, ts_forecasts' shape) ROUNDS times, all in one table: each replace deletes the writer's
ticker range and inserts the new rows atomically, and a commit that lost to another writer is
tried again with the project's bounded policy (pm_resources/store.py: 8 attempts, a pause of
0.05 s x 2^k, jittered). The stores:

- DuckLake on PostgreSQL: the project's own code (store_connection + write_partitions), its
  catalog a database of a throwaway large-backfill instance's PostgreSQL, its Parquet files on disk;
- Delta Lake (delta-rs, `deltalake`) in a local folder: write_deltalake with a predicate overwrite
  (`ticker IN (...)`); delta-rs commits by an atomic rename of the next log file;
- Iceberg (`pyiceberg`) with its SQL catalog in the same PostgreSQL and the warehouse in a local
  folder: table.overwrite with an `In("ticker", ...)` filter; the catalog swaps the metadata
  pointer only if nobody moved it since the writer read it.

Per store and W: wall seconds from the first writer's start to the last writer's end, rows/s and
partitions/s (a partition is a ticker x session) over all writers, commits the benchmark retried
(a conflict the library raised to its caller), writes that gave up after 8 attempts, and whether
the final table is exactly right: 5 x W x 250 x 3 rows, no key twice, every row holding its
writer's last round's values. Each library also retries a commit itself before raising, as
configured by default and left so, as a user would run it: delta-rs rebases a commit that lost a
race but conflicts with nothing (each commit records how many times: summed as "in-library"),
pyiceberg tries again up to 4 times (logging a warning each time: counted), DuckLake up to 10
times (ducklake_max_retry_count; it reports no count: "-").

Then the median of 5 reads of one ticker's 750 rows, each opening the table afresh in the warm main
process (DuckLake: the project's connection and read_rows; Delta: its Arrow dataset queried by
DuckDB; Iceberg: a filtered scan to Arrow). Every store gets the same frames (built before the
barrier, as is each process's connection or catalog) and a fresh table per W.

    make bench-store-candidates             # installs the store-candidates extra; W = 1, 2, 4 x 20 rounds
    .venv/bin/python benchmarks/bench_store_candidates.py --writers 1,2 --rounds 2 --stores ducklake,delta
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import logging
import multiprocessing
import os
import random
import statistics
import sys
import time
import urllib.parse
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Imported here, so in every writer before its barrier: importing pm_resources takes seconds, which
# the first write would otherwise pay inside the timed span.
from pm_resources.store import COMMIT_ATTEMPTS, RETRY_PAUSE_SECONDS  # noqa: E402

TABLE = "bench_writes"
KEY = ("ticker", "date", "horizon")
TICKERS_PER_WRITER = 5
SESSIONS = 250
HORIZONS = (1, 5, 20)
VALUE_COLUMNS = 20
READS = 5
STORES = {"ducklake": "DuckLake (PostgreSQL)", "delta": "Delta Lake (delta-rs)", "iceberg": "Iceberg (SQL catalog)"}


def writer_tickers(writer: int) -> list[str]:
    return [f"W{writer}T{i}" for i in range(TICKERS_PER_WRITER)]


def bench_dates() -> list[dt.date]:
    from pm_domain import calendar

    return [calendar.shift_trading_days(dt.date(2018, 12, 31), -i) for i in range(SESSIONS)][::-1]


def round_frame(tickers: list[str], dates: list[dt.date], round_: int):
    """A writer's rows for one round: every value carries the round (value_i = 1000 x round + i),
    so the final table shows whether each writer's last round is the one that stayed."""
    import polars as pl

    keys = pl.DataFrame({"ticker": tickers}).join(pl.DataFrame({"date": dates}), how="cross").join(
        pl.DataFrame({"horizon": list(HORIZONS)}), how="cross")
    return keys.with_columns(*(pl.lit(1000.0 * round_ + i).alias(f"value_{i}") for i in range(VALUE_COLUMNS)))


def arrow_schema():
    """The plain Arrow types Delta and Iceberg are given (polars hands strings over as large_string)."""
    import pyarrow as pa

    return pa.schema([("ticker", pa.string()), ("date", pa.date32()), ("horizon", pa.int64()),
                      *((f"value_{i}", pa.float64()) for i in range(VALUE_COLUMNS))])


def pause(attempt: int) -> None:
    """The project's pause before attempt `attempt + 1` (pm_resources/store.py's in_transaction)."""
    time.sleep(RETRY_PAUSE_SECONDS * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))


# ---- the three stores: open (once per process), write one round, read one ticker, read all -----

class _CountingConnection:
    """A DuckDB connection that counts the transactions begun through it, so write_partitions runs
    exactly as the project runs it while the benchmark sees how often its in_transaction retried."""

    def __init__(self, conn):
        self._conn = conn
        self.begins = 0

    def execute(self, sql, *args, **kwargs):
        if sql.strip().upper().startswith("BEGIN"):
            self.begins += 1
        return self._conn.execute(sql, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._conn, name)


class DuckLakeStore:
    def __init__(self, target: dict):
        from pm_resources.database import store_connection

        self.lake = target["lake"]
        with store_connection(self.lake) as conn:  # attaches the lake once per process (about 0.4 s)
            conn.execute("SELECT 1").fetchall()

    def write(self, tickers, dates, frame, arrow) -> tuple[int, bool]:
        """One replace; (retried commits, gave up)."""
        from pm_resources.database import store_connection
        from pm_resources.store import PartitionRows, StoreError, write_partitions

        with store_connection(self.lake) as conn:
            counted = _CountingConnection(conn)
            try:
                write_partitions(counted, tickers, dates, [PartitionRows(TABLE, frame, key_columns=KEY)])
            except StoreError as exc:
                if "gave up" not in str(exc):
                    raise
                return counted.begins - 1, True
            return counted.begins - 1, False

    def read_ticker(self, ticker: str, dates):
        from pm_resources.database import store_connection
        from pm_resources.store import read_rows

        with store_connection(self.lake) as conn:
            return read_rows(conn, TABLE, [ticker], end=max(dates), start=min(dates)).to_arrow()

    def read_all(self):
        from pm_resources.database import store_connection
        from pm_resources.store import query

        with store_connection(self.lake) as conn:
            return query(conn, f"SELECT * FROM {TABLE}").to_arrow()


class DeltaStore:
    def __init__(self, target: dict):
        from deltalake import DeltaTable

        self.path = target["path"]
        DeltaTable(self.path)  # imports delta-rs and starts its runtime once per process

    def write(self, tickers, dates, frame, arrow) -> tuple[int, bool]:
        from deltalake import write_deltalake
        from deltalake.exceptions import CommitFailedError

        # The tickers are the benchmark's own W{w}T{i} names: nothing to quote.
        predicate = "ticker IN (" + ", ".join(f"'{t}'" for t in tickers) + ")"
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                write_deltalake(self.path, arrow, mode="overwrite", predicate=predicate)
                return attempt - 1, False
            except CommitFailedError:
                if attempt == COMMIT_ATTEMPTS:
                    return attempt - 1, True
            pause(attempt)
        raise AssertionError("unreachable")

    def read_ticker(self, ticker: str, dates):
        import duckdb
        from deltalake import DeltaTable

        conn = duckdb.connect()
        try:
            conn.register("delta_rows", DeltaTable(self.path).to_pyarrow_dataset())
            return conn.sql("SELECT * FROM delta_rows WHERE ticker = ? AND date BETWEEN ? AND ? ORDER BY ticker, date",
                            params=[ticker, min(dates), max(dates)]).to_arrow_table()
        finally:
            conn.close()

    def read_all(self):
        from deltalake import DeltaTable

        return DeltaTable(self.path).to_pyarrow_dataset().to_table()

    def library_retries(self) -> int:
        """delta-rs's own retries over the whole run: each commit records how many it took."""
        from deltalake import DeltaTable

        return sum(int((entry.get("operationMetrics") or {}).get("num_retries", 0))
                   for entry in DeltaTable(self.path).history())


class _CountRetries(logging.Handler):
    """Counts pyiceberg's own commit retries (it logs a warning before each)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record):
        if "retrying" in record.getMessage():
            self.count += 1


class IcebergStore:
    def __init__(self, target: dict):
        from pyiceberg.catalog.sql import SqlCatalog

        for module in ("pyiceberg.exceptions", "pyiceberg.expressions"):  # write's imports, paid before the barrier
            importlib.import_module(module)

        # init_catalog_tables off: the main process created the catalog's tables, and writers racing
        # to create them would measure that race instead.
        self.catalog = SqlCatalog("bench", uri=target["uri"], warehouse=target["warehouse"],
                                  init_catalog_tables="false")
        self.identifier = target["identifier"]
        self.catalog.load_table(self.identifier)  # the catalog's engine connects once per process
        self.library_retries = _CountRetries()
        logging.getLogger("pyiceberg.table").addHandler(self.library_retries)
        # A writer's first overwrite finds nothing to delete in the fresh table, as it should.
        warnings.filterwarnings("ignore", message="Delete operation did not match any records")

    def write(self, tickers, dates, frame, arrow) -> tuple[int, bool]:
        from pyiceberg.exceptions import CommitFailedException, ValidationException
        from pyiceberg.expressions import In

        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                # Loaded afresh each attempt: a failed transaction cannot be reused, and the retry must
                # start from the table as the winner left it.
                self.catalog.load_table(self.identifier).overwrite(arrow, overwrite_filter=In("ticker", tickers))
                return attempt - 1, False
            except (CommitFailedException, ValidationException):  # neither landed: safe to run again
                if attempt == COMMIT_ATTEMPTS:
                    return attempt - 1, True
            pause(attempt)
        raise AssertionError("unreachable")

    def read_ticker(self, ticker: str, dates):
        from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThanOrEqual

        row_filter = And(EqualTo("ticker", ticker), GreaterThanOrEqual("date", min(dates)),
                         LessThanOrEqual("date", max(dates)))
        return self.catalog.load_table(self.identifier).scan(row_filter=row_filter).to_arrow()

    def read_all(self):
        return self.catalog.load_table(self.identifier).scan().to_arrow()


STORE_CLASSES = {"ducklake": DuckLakeStore, "delta": DeltaStore, "iceberg": IcebergStore}


# ---- a fresh table per store and W ------------------------------------------------------------

def fresh_table(store: str, targets: dict, writers: int) -> dict:
    """Create the store's empty table for this W (before the writers start, so they do not race to
    create it) and return what a writer needs to open it."""
    base = targets[store]
    if store == "ducklake":
        import polars as pl

        from pm_resources.database import store_connection
        from pm_resources.store import create_table

        with store_connection(base["lake"]) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
            create_table(conn, TABLE, dict(pl.from_arrow(arrow_schema().empty_table()).schema))
        return base
    if store == "delta":
        from deltalake import DeltaTable

        path = str(Path(base["root"]) / f"{TABLE}_w{writers}")
        DeltaTable.create(path, schema=arrow_schema())
        return {"path": path}
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("bench", uri=base["uri"], warehouse=base["warehouse"])  # creates the catalog's tables
    catalog.create_namespace_if_not_exists("bench")
    identifier = f"bench.{TABLE}_w{writers}"
    catalog.create_table(identifier, schema=arrow_schema())
    return {**base, "identifier": identifier}


# ---- the writers ----------------------------------------------------------------------------------

def _writer(store: str, target: dict, writer: int, rounds: int, barrier) -> dict:
    """Replace this writer's tickers `rounds` times; its timings and counts."""
    tickers, dates = writer_tickers(writer), bench_dates()
    frames = [round_frame(tickers, dates, r) for r in range(rounds)]
    arrows = [frame.to_arrow().cast(arrow_schema()) for frame in frames]
    opened = STORE_CLASSES[store](target)
    barrier.wait()
    began = time.perf_counter()
    retried = failed = 0
    for frame, arrow in zip(frames, arrows):
        retries, gave_up = opened.write(tickers, dates, frame, arrow)
        retried += retries
        failed += gave_up
    ended = time.perf_counter()
    library = opened.library_retries.count if isinstance(opened, IcebergStore) else None
    return {"began": began, "ended": ended, "rows": sum(f.height for f in frames),
            "partitions": rounds * len(tickers) * len(dates), "retried": retried, "failed": failed,
            "library_retries": library}


def check_rows(arrow, writers: int, rounds: int) -> str:
    """'rows ok' when the table is exactly every writer's last round, else what is wrong."""
    import polars as pl

    dates = bench_dates()
    expected = pl.concat([round_frame(writer_tickers(w), dates, rounds - 1) for w in range(writers)])
    found = pl.from_arrow(arrow)
    if set(found.columns) != set(expected.columns):
        return f"ROWS WRONG: columns {sorted(found.columns)}"
    found = found.select(expected.columns).cast(dict(expected.schema))
    duplicates = found.height - found.select(KEY).n_unique()
    same = found.sort(KEY).equals(expected.sort(KEY))
    if same and not duplicates:
        return "rows ok"
    return f"ROWS WRONG: {found.height} rows (want {expected.height}), {duplicates} repeated keys"


def run_store(store: str, targets: dict, writers: int, rounds: int) -> dict:
    context = multiprocessing.get_context("spawn")
    target = fresh_table(store, targets, writers)
    with context.Manager() as manager:
        barrier = manager.Barrier(writers)
        with context.Pool(writers) as pool:
            results = pool.starmap(_writer, [(store, target, w, rounds, barrier) for w in range(writers)])
    seconds = max(r["ended"] for r in results) - min(r["began"] for r in results)
    opened = STORE_CLASSES[store](target)
    check = check_rows(opened.read_all(), writers, rounds)
    dates = bench_dates()
    reads = []
    for _ in range(READS):
        began = time.perf_counter()
        got = opened.read_ticker("W0T0", dates)
        reads.append(time.perf_counter() - began)
        if got.num_rows != SESSIONS * len(HORIZONS):
            check += f"; a read gave {got.num_rows} rows"
    if store == "delta":
        library = opened.library_retries()
    elif store == "iceberg":
        library = sum(r["library_retries"] for r in results)
    else:
        library = None  # DuckLake retries inside too (ducklake_max_retry_count) but does not say how often
    return {"seconds": seconds, "rows": sum(r["rows"] for r in results) / seconds,
            "partitions": sum(r["partitions"] for r in results) / seconds,
            "retried": sum(r["retried"] for r in results), "failed": sum(r["failed"] for r in results),
            "library": library, "check": check,
            "read_ms": 1000 * statistics.median(reads)}


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:  # --stores ducklake runs without the store-candidates extra
        return "not installed"


# ---- the run ------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", default="1,2,4", help="writer counts to run, comma-separated")
    parser.add_argument("--rounds", type=int, default=20, help="replaces per writer")
    parser.add_argument("--stores", default=",".join(STORES), help=f"some of {','.join(STORES)}")
    args = parser.parse_args()
    writer_counts = [int(n) for n in args.writers.split(",")]
    stores = args.stores.split(",")
    unknown = [s for s in stores if s not in STORES]
    if unknown:
        raise SystemExit(f"unknown store(s) {unknown}: choose from {','.join(STORES)}")

    from pm_jobs.large_instance import lake_database, read_env_file, start, throwaway_home
    from pm_jobs.local_postgres import Cluster

    packages = ", ".join(f"{p} {_version(p)}" for p in ("duckdb", "deltalake", "pyiceberg", "pyarrow", "polars"))
    print(f"bench-store-candidates on {os.cpu_count()} cores ({packages})")
    rows = TICKERS_PER_WRITER * SESSIONS * len(HORIZONS)
    print(f"W writers at once, each replacing its {TICKERS_PER_WRITER} tickers x {SESSIONS} sessions x "
          f"{len(HORIZONS)} horizons ({rows:,} rows, {3 + VALUE_COLUMNS} columns) of one table {args.rounds} times; "
          f"read: one ticker's {SESSIONS * len(HORIZONS)} rows, median of {READS}", flush=True)
    began = time.perf_counter()
    with throwaway_home("pm-bench-cand-") as home:
        start(home, shared_store=True)
        env = read_env_file(home / "instance.env")
        port, password = int(env["DAGSTER_PG_PORT"]), env["DAGSTER_PG_PASSWORD"]
        Cluster(home / "postgres", user="dagster", dbname="iceberg").create_database(port, password)
        # Under throwaway_home's folder, so they go with it; the postgres user need not read them.
        delta_root, warehouse = home.parent / "delta", home.parent / "iceberg"
        delta_root.mkdir()
        warehouse.mkdir()
        targets = {
            "ducklake": {"lake": lake_database(port, password)},
            "delta": {"root": str(delta_root)},
            "iceberg": {"uri": f"postgresql+psycopg2://dagster:{urllib.parse.quote(password, safe='')}"
                               f"@127.0.0.1:{port}/iceberg", "warehouse": warehouse.as_uri()},
        }
        print(f"\n  {'store':<22} {'writers':>7} {'seconds':>8} {'rows/s':>9} {'partitions/s':>13} {'retried':>8} "
              f"{'in-library':>10} {'failed':>6} {'read ms':>8}  final table", flush=True)
        for store in stores:
            for writers in writer_counts:
                try:
                    r = run_store(store, targets, writers, args.rounds)
                except Exception as exc:  # one store's failure is a result too; the others still run
                    first = (str(exc).strip().splitlines() or [""])[0][:160]
                    print(f"  {STORES[store]:<22} {writers:>7}   ERROR {type(exc).__name__}: {first}", flush=True)
                    continue
                library = "-" if r["library"] is None else str(r["library"])
                print(f"  {STORES[store]:<22} {writers:>7} {r['seconds']:8.2f} {r['rows']:9.0f} "
                      f"{r['partitions']:13.0f} {r['retried']:>8} {library:>10} {r['failed']:>6} "
                      f"{r['read_ms']:8.1f}  {r['check']}", flush=True)
    print(f"\nretried: commits the benchmark ran again after the library raised a conflict ({COMMIT_ATTEMPTS} "
          "attempts at most, then failed); in-library: the library's own retries before raising (delta-rs's "
          "num_retries in its log, pyiceberg's logged retries; DuckLake's are not reported: -)", flush=True)
    print(f"whole run {time.perf_counter() - began:.0f} s", flush=True)


if __name__ == "__main__":
    main()
