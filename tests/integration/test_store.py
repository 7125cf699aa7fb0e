"""The store's writes and reads, each on both stores: a DuckDB file and a DuckLake on PostgreSQL
(the cluster's). `make test` runs this file on both; `make test-lake` runs every integration test
on a lake."""

import datetime as dt

import duckdb
import polars as pl
import pytest

from pm_resources.connections import connect as store_connect
from pm_resources.store import StoreError, identifier, query, read_rows, replace_partitions

DAYS = [dt.date(2018, 12, 27), dt.date(2018, 12, 28)]


@pytest.fixture(params=["file", "lake"])
def db_path(request, tmp_path):
    """This module's tests run on both stores, whatever PM_TEST_STORE says."""
    from tests.support.stores import forget, lake_store

    database = lake_store(tmp_path / "lake") if request.param == "lake" else str(tmp_path / "pm.duckdb")
    yield database
    forget(database)


def _frame(tickers, days, value=1.0):
    return pl.DataFrame({"ticker": [t for t in tickers for _ in days], "date": days * len(tickers),
                         "value": value}, schema_overrides={"value": pl.Float64})


def test_replace_is_idempotent_and_touches_only_the_run_partitions(db_path):
    conn = store_connect(db_path)
    replace_partitions(conn, "t", _frame(["A", "B"], DAYS), ["A", "B"], DAYS)
    replace_partitions(conn, "t", _frame(["A"], DAYS, 2.0), ["A"], DAYS)
    replace_partitions(conn, "t", _frame(["A"], DAYS, 2.0), ["A"], DAYS)
    rows = query(conn, "SELECT ticker, sum(value) AS total, count(*) AS n FROM t GROUP BY 1 ORDER BY 1")
    assert rows.rows() == [("A", 4.0, 2), ("B", 2.0, 2)]


def test_empty_partition_replaces_old_rows(db_path):
    conn = store_connect(db_path)
    replace_partitions(conn, "t", _frame(["A"], DAYS), ["A"], DAYS)
    replace_partitions(conn, "t", _frame(["A"], DAYS[:1]), ["A"], DAYS)
    assert read_rows(conn, "t", ["A"], DAYS[-1])["date"].to_list() == DAYS[:1]


def test_rows_outside_the_run_or_duplicated_are_refused_before_any_write(db_path):
    conn = store_connect(db_path)
    replace_partitions(conn, "t", _frame(["A"], DAYS), ["A"], DAYS)
    with pytest.raises(StoreError, match="outside the run's partitions, first B"):
        replace_partitions(conn, "t", _frame(["A", "B"], DAYS, 9.0), ["A"], DAYS)
    with pytest.raises(StoreError, match="repeat"):
        replace_partitions(conn, "t", pl.concat([_frame(["A"], DAYS), _frame(["A"], DAYS)]), ["A"], DAYS)
    assert query(conn, "SELECT sum(value) FROM t").item() == 2.0


def test_failed_insert_rolls_back_the_delete(db_path):
    path = db_path
    with store_connect(path) as conn:
        replace_partitions(conn, "t", _frame(["A"], DAYS), ["A"], DAYS)
        bad = _frame(["A"], DAYS).with_columns(pl.lit("not a number").alias("value"))
        with pytest.raises(duckdb.Error):
            replace_partitions(conn, "t", bad, ["A"], DAYS)
    with store_connect(path) as conn:
        assert query(conn, "SELECT count(*) AS n, sum(value) AS s FROM t").row(0) == (2, 2.0)


def test_new_columns_are_added_for_newer_asset_versions(db_path):
    conn = store_connect(db_path)
    replace_partitions(conn, "t", _frame(["A"], DAYS), ["A"], DAYS)
    replace_partitions(conn, "t", _frame(["B"], DAYS).with_columns(pl.lit(3.0).alias("extra")), ["B"], DAYS)
    assert query(conn, "SELECT count(extra) FROM t").item() == 2


@pytest.mark.parametrize("name", ["prices; DROP TABLE x", "Prices", "a-b", "1abc", ""])
def test_identifiers_are_checked(name):
    with pytest.raises(StoreError, match="refusing SQL identifier"):
        identifier(name)


def test_read_rows_of_a_missing_table_is_empty(db_path):
    assert read_rows(store_connect(db_path), "nothing_here", ["A"], DAYS[-1]).is_empty()


def test_a_step_that_raises_inside_the_block_does_not_keep_the_file_locked(db_path):
    from dagster import asset, materialize

    from pm_resources.database import ClosingDuckDBResource

    @asset
    def fails_while_connected(duckdb_resource: ClosingDuckDBResource) -> None:
        with duckdb_resource.get_connection() as conn:
            conn.execute("CREATE TABLE t AS SELECT 1 AS a")
            raise ValueError("bad input")

    result = materialize([fails_while_connected], resources={"duckdb_resource": ClosingDuckDBResource(database=db_path)},
                         raise_on_error=False)
    assert not result.success
    # The failed step's connection is closed: this process can open the file read-only again.
    with store_connect(db_path, read_only=True) as conn:
        assert conn.execute("SELECT a FROM t").fetchall() == [(1,)]


def test_scoped_rows_replace_only_their_slice_and_refuse_rows_outside_it(db_path):
    from pm_resources.store import KeyedRows, ScopedRows, write_partitions

    def probe_rows(model, values):
        return pl.DataFrame({"model": model, "period": [f"p{i}" for i in range(len(values))], "value": values},
                            schema_overrides={"value": pl.Float64})

    conn = store_connect(db_path)
    both = pl.concat([probe_rows("a", [1.0, 2.0]), probe_rows("b", [3.0])])
    write_partitions(conn, [], [], [], scoped_rows=[ScopedRows("probe", both, ("model", "period"), "model", ("a", "b"))])
    cache = pl.DataFrame({"cache_key": ["k"], "content": ["x"]})
    write_partitions(conn, [], [], [], keyed_rows=[KeyedRows("cache", cache, ("cache_key",))],
                     scoped_rows=[ScopedRows("probe", probe_rows("a", [9.0]), ("model", "period"), "model", ("a",))])
    assert query(conn, "SELECT model, period, value FROM probe ORDER BY 1, 2").rows() == [
        ("a", "p0", 9.0), ("b", "p0", 3.0)]  # a's slice replaced whole (its p1 gone), b's untouched
    assert query(conn, "SELECT count(*) AS n FROM cache").item() == 1
    with pytest.raises(StoreError, match="outside the scope"):
        write_partitions(conn, [], [], [], scoped_rows=[ScopedRows("probe", both, ("model", "period"), "model", ("a",))])
    with pytest.raises(StoreError, match="repeat"):
        write_partitions(conn, [], [], [], scoped_rows=[
            ScopedRows("probe", pl.concat([probe_rows("a", [1.0])] * 2), ("model", "period"), "model", ("a",))])
    assert query(conn, "SELECT count(*) AS n FROM probe").item() == 2  # refused writes changed nothing


def test_recent_rows_upsert_then_keep_each_tickers_newest_days_only(db_path):
    from pm_resources.store import RecentRows, write_partitions

    def fits(ticker, days, key):
        return pl.DataFrame({"ticker": [ticker] * len(days), "fit_date": days, "fit_key": [key] * len(days)})

    conn = store_connect(db_path)
    old = [dt.date(2018, 1, 2), dt.date(2018, 6, 1)]
    write_partitions(conn, ["A", "B"], [], [], recent_rows=[
        RecentRows("fits", pl.concat([fits("A", old, "a1"), fits("B", old, "b1")]), ("ticker", "fit_date"), "fit_date", 30)])
    assert query(conn, "SELECT count(*) AS n FROM fits").item() == 2  # each ticker's January fit is 150 days too old
    write_partitions(conn, ["A"], [], [], recent_rows=[
        RecentRows("fits", fits("A", [dt.date(2018, 6, 1), dt.date(2018, 6, 20)], "a2"), ("ticker", "fit_date"),
                   "fit_date", 30)])
    rows = query(conn, "SELECT ticker, fit_date, fit_key FROM fits ORDER BY ALL").rows()
    assert rows == [("A", dt.date(2018, 6, 1), "a2"), ("A", dt.date(2018, 6, 20), "a2"), ("B", dt.date(2018, 6, 1), "b1")]


# -- the shared store: DuckLake on PostgreSQL, whatever the session's mode ---------------------------

@pytest.fixture()
def lake(tmp_path):
    from tests.support.stores import forget, lake_store

    database = lake_store(tmp_path / "lake")
    yield database
    forget(database)


def _conflicting_write(lake, tickers):
    """A write from another connection that commits while the caller's transaction is open. It runs
    in the caller's thread, which re-enters the table locks it holds, so it stands for a writer the
    locks do not hold back (one that ignores them, or a conflict on a table neither names)."""
    with store_connect(lake) as other:
        replace_partitions(other, "t", _frame(tickers, DAYS, 5.0), tickers, DAYS)


def test_lake_tables_have_no_keys_yet_a_rewrite_replaces_rather_than_duplicates(lake):
    from pm_resources.store import KeyedRows, LedgerRows, write_partitions

    conn = store_connect(lake)
    assert conn.execute("SELECT type FROM duckdb_databases() WHERE database_name = current_database()").fetchall() == [
        ("ducklake",)]
    replace_partitions(conn, "t", _frame(["A", "B"], DAYS), ["A", "B"], DAYS)
    replace_partitions(conn, "t", _frame(["A"], DAYS, 2.0), ["A"], DAYS)
    cache = pl.DataFrame({"cache_key": ["k", "j"], "content": ["old", "old"]})
    write_partitions(conn, [], [], [], keyed_rows=[KeyedRows("cache", cache, ("cache_key",))])
    write_partitions(conn, [], [], [], keyed_rows=[KeyedRows("cache", cache.head(1).with_columns(content=pl.lit("new")),
                                                             ("cache_key",))],
                     ledger_rows=[LedgerRows("orders", cache, ("cache_key",))])
    write_partitions(conn, [], [], [], ledger_rows=[LedgerRows("orders", cache.with_columns(content=pl.lit("amended")),
                                                               ("cache_key",))])
    assert query(conn, "SELECT ticker, sum(value) AS s, count(*) AS n FROM t GROUP BY 1 ORDER BY 1").rows() == [
        ("A", 4.0, 2), ("B", 2.0, 2)]
    assert query(conn, "SELECT cache_key, content FROM cache ORDER BY 1").rows() == [("j", "old"), ("k", "new")]
    assert query(conn, "SELECT cache_key, content FROM orders ORDER BY 1").rows() == [("j", "old"), ("k", "old")]


def test_a_commit_that_conflicts_is_retried_from_the_start_and_both_writes_land(lake):
    from pm_resources import store

    conn = store_connect(lake)
    replace_partitions(conn, "t", _frame(["A", "B"], DAYS), ["A", "B"], DAYS)
    attempts = []

    def statements():
        attempts.append(1)
        conn.execute("DELETE FROM t WHERE ticker = 'A'")
        if len(attempts) == 1:
            _conflicting_write(lake, ["B"])  # commits first: this transaction's COMMIT conflicts
        conn.execute("INSERT INTO t SELECT 'A', d, 3.0 FROM (SELECT DISTINCT date AS d FROM t)")

    store.in_transaction(conn, ["t"], statements, lambda: "t")
    assert len(attempts) == 2
    assert query(conn, "SELECT ticker, sum(value) AS s FROM t GROUP BY 1 ORDER BY 1").rows() == [("A", 6.0), ("B", 10.0)]


def test_a_writer_that_keeps_conflicting_gives_up_with_one_line_naming_table_and_range(lake, monkeypatch):
    from pm_resources import store

    monkeypatch.setattr(store, "COMMIT_ATTEMPTS", 3)
    monkeypatch.setattr(store, "RETRY_PAUSE_SECONDS", 0.0)
    conn = store_connect(lake)
    replace_partitions(conn, "t", _frame(["A", "B"], DAYS), ["A", "B"], DAYS)
    real_replace = store._replace

    def replace_while_another_writes(writing, rows):
        real_replace(writing, rows)
        if writing is conn:  # not the other writer's own replace
            _conflicting_write(lake, ["B"])

    monkeypatch.setattr(store, "_replace", replace_while_another_writes)
    with pytest.raises(StoreError) as raised:
        replace_partitions(conn, "t", _frame(["A"], DAYS, 7.0), ["A"], DAYS)
    message = str(raised.value)
    assert message.startswith("t for A on 2018-12-27..2018-12-28: gave up after 3 commits conflicted") and "\n" not in message
    assert query(conn, "SELECT sum(value) FROM t WHERE ticker = 'A'").item() == 2.0  # A's rows as they were


def _waiting_for_a_table_lock(lake: str) -> int:
    import psycopg2

    from pm_resources.connections import lake_catalog

    with psycopg2.connect(lake_catalog(lake)) as catalog, catalog.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        return cursor.fetchone()[0]


def test_a_second_writer_of_the_same_empty_partitions_waits_for_the_first_and_replaces_its_rows(lake, monkeypatch):
    """Both DELETEs would match no row, which DuckLake does not see as a conflict: without the
    table lock both INSERTs commit and the partitions hold every row twice."""
    import threading
    import time

    from pm_resources import store

    conn = store_connect(lake)
    replace_partitions(conn, "t", _frame(["A"], DAYS), ["A"], DAYS)
    conn.execute("DELETE FROM t")  # the table exists and is empty, as after `clear` or on a first run
    second = threading.Thread(target=_conflicting_write_in_its_own_thread, args=(lake,))
    real_replace = store._replace
    waited = []

    def replace_then_let_the_second_writer_start(writing, rows):
        real_replace(writing, rows)
        if writing is conn:
            second.start()
            deadline = time.monotonic() + 30
            while not _waiting_for_a_table_lock(lake) and time.monotonic() < deadline:
                time.sleep(0.05)
            waited.append(_waiting_for_a_table_lock(lake))

    monkeypatch.setattr(store, "_replace", replace_then_let_the_second_writer_start)
    replace_partitions(conn, "t", _frame(["A"], DAYS, 2.0), ["A"], DAYS)
    second.join(timeout=60)
    assert waited == [1]  # the second writer was held at the lock while the first was mid-write
    assert query(conn, "SELECT ticker, date, value FROM t ORDER BY ALL").rows() == [
        ("A", DAYS[0], 5.0), ("A", DAYS[1], 5.0)]  # once each: the later writer replaced the earlier


def test_a_writer_held_at_a_table_lock_too_long_fails_with_one_line_naming_the_table(lake, monkeypatch):
    import psycopg2

    from pm_resources import connections

    conn = store_connect(lake)
    replace_partitions(conn, "t", _frame(["A"], DAYS), ["A"], DAYS)
    monkeypatch.setattr(connections, "WRITE_LOCK_WAIT_SECONDS", 1)
    with psycopg2.connect(connections.lake_catalog(lake)) as hung, hung.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [connections._LOCK_SPACE, connections._table_key("t")])
        with pytest.raises(connections.LakeError) as raised:
            replace_partitions(conn, "t", _frame(["A"], DAYS, 9.0), ["A"], DAYS)
    assert str(raised.value) == "t: waited 1 s for another writer of the shared store to finish"
    replace_partitions(conn, "t", _frame(["A"], DAYS, 3.0), ["A"], DAYS)  # the lock gone, the next write goes through
    assert query(conn, "SELECT sum(value) FROM t").item() == 6.0


def _conflicting_write_in_its_own_thread(lake):
    conn = store_connect(lake)
    replace_partitions(conn, "t", _frame(["A"], DAYS, 5.0), ["A"], DAYS)


def _replace_block(lake: str, block: int, tickers_per_block: int, rounds: int) -> int:
    """One writer process: replace its own tickers' rows `rounds` times; returns rows written."""
    conn = store_connect(lake)
    tickers = [f"T{block:02d}{i:02d}" for i in range(tickers_per_block)]
    for round_ in range(rounds):
        replace_partitions(conn, "t", _frame(tickers, DAYS, float(round_)), tickers, DAYS)
    return len(tickers) * len(DAYS) * rounds


def test_four_processes_replacing_their_ranges_at_once_lose_and_duplicate_nothing(lake):
    import multiprocessing

    replace_partitions(store_connect(lake), "t", _frame(["T0000"], DAYS, -1.0), ["T0000"], DAYS)  # the table exists
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        written = pool.starmap(_replace_block, [(lake, block, 5, 6) for block in range(4)])
    assert sum(written) == 4 * 5 * 2 * 6
    rows = query(store_connect(lake), "SELECT ticker, date, value FROM t ORDER BY ALL")
    assert rows.height == 4 * 5 * 2  # every (ticker, date) once: no lost write, no duplicate
    assert set(rows["value"].to_list()) == {5.0}  # each writer's last round is what stays


def _replace_shared_block(lake: str, writer: int, rounds: int, barrier) -> None:
    """Every writer replaces the same range in the same instant, `rounds` times, the range emptied
    in between so that each round's DELETEs match nothing."""
    conn = store_connect(lake)
    tickers = [f"S{i:02d}" for i in range(5)]
    for round_ in range(rounds):
        barrier.wait()
        replace_partitions(conn, "t", _frame(tickers, DAYS, float(writer)), tickers, DAYS)
        barrier.wait()
        if writer == 0 and round_ < rounds - 1:
            conn.execute("DELETE FROM t")


def test_four_processes_replacing_the_same_empty_range_at_once_leave_it_once(lake):
    import multiprocessing

    replace_partitions(store_connect(lake), "t", _frame(["S00"], DAYS, -1.0), ["S00"], DAYS)
    store_connect(lake).execute("DELETE FROM t")
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(4) as pool:
        barrier = manager.Barrier(4, timeout=120)
        pool.starmap(_replace_shared_block, [(lake, writer, 3, barrier) for writer in range(4)])
    rows = query(store_connect(lake), "SELECT ticker, date, count(*) AS n FROM t GROUP BY ALL")
    assert rows.height == 5 * 2 and set(rows["n"].to_list()) == {1}
