import datetime as dt

import duckdb
import polars as pl
import pytest

from pm_resources.store import StoreError, identifier, query, read_rows, replace_partitions

DAYS = [dt.date(2018, 12, 27), dt.date(2018, 12, 28)]


def _frame(tickers, days, value=1.0):
    return pl.DataFrame({"ticker": [t for t in tickers for _ in days], "date": days * len(tickers),
                         "value": value}, schema_overrides={"value": pl.Float64})


def test_replace_is_idempotent_and_touches_only_the_run_partitions():
    conn = duckdb.connect()
    replace_partitions(conn, "t", _frame(["A", "B"], DAYS), ["A", "B"], DAYS)
    replace_partitions(conn, "t", _frame(["A"], DAYS, 2.0), ["A"], DAYS)
    replace_partitions(conn, "t", _frame(["A"], DAYS, 2.0), ["A"], DAYS)
    rows = query(conn, "SELECT ticker, sum(value) AS total, count(*) AS n FROM t GROUP BY 1 ORDER BY 1")
    assert rows.rows() == [("A", 4.0, 2), ("B", 2.0, 2)]


def test_empty_partition_replaces_old_rows():
    conn = duckdb.connect()
    replace_partitions(conn, "t", _frame(["A"], DAYS), ["A"], DAYS)
    replace_partitions(conn, "t", _frame(["A"], DAYS[:1]), ["A"], DAYS)
    assert read_rows(conn, "t", ["A"], DAYS[-1])["date"].to_list() == DAYS[:1]


def test_rows_outside_the_run_or_duplicated_are_refused_before_any_write():
    conn = duckdb.connect()
    replace_partitions(conn, "t", _frame(["A"], DAYS), ["A"], DAYS)
    with pytest.raises(StoreError, match="outside the run's partitions, first B"):
        replace_partitions(conn, "t", _frame(["A", "B"], DAYS, 9.0), ["A"], DAYS)
    with pytest.raises(StoreError, match="repeat"):
        replace_partitions(conn, "t", pl.concat([_frame(["A"], DAYS), _frame(["A"], DAYS)]), ["A"], DAYS)
    assert query(conn, "SELECT sum(value) FROM t").item() == 2.0


def test_failed_insert_rolls_back_the_delete(tmp_path):
    path = str(tmp_path / "x.duckdb")
    with duckdb.connect(path) as conn:
        replace_partitions(conn, "t", _frame(["A"], DAYS), ["A"], DAYS)
        bad = _frame(["A"], DAYS).with_columns(pl.lit("not a number").alias("value"))
        with pytest.raises(duckdb.Error):
            replace_partitions(conn, "t", bad, ["A"], DAYS)
    with duckdb.connect(path) as conn:
        assert query(conn, "SELECT count(*) AS n, sum(value) AS s FROM t").row(0) == (2, 2.0)


def test_new_columns_are_added_for_newer_asset_versions():
    conn = duckdb.connect()
    replace_partitions(conn, "t", _frame(["A"], DAYS), ["A"], DAYS)
    replace_partitions(conn, "t", _frame(["B"], DAYS).with_columns(pl.lit(3.0).alias("extra")), ["B"], DAYS)
    assert query(conn, "SELECT count(extra) FROM t").item() == 2


@pytest.mark.parametrize("name", ["prices; DROP TABLE x", "Prices", "a-b", "1abc", ""])
def test_identifiers_are_checked(name):
    with pytest.raises(StoreError, match="refusing SQL identifier"):
        identifier(name)


def test_read_rows_of_a_missing_table_is_empty():
    assert read_rows(duckdb.connect(), "nothing_here", ["A"], DAYS[-1]).is_empty()


def test_a_step_that_raises_inside_the_block_does_not_keep_the_file_locked(db_path):
    import duckdb
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
    with duckdb.connect(db_path, read_only=True) as conn:
        assert conn.execute("SELECT a FROM t").fetchall() == [(1,)]


def test_scoped_rows_replace_only_their_slice_and_refuse_rows_outside_it():
    from pm_resources.store import KeyedRows, ScopedRows, write_partitions

    def probe_rows(model, values):
        return pl.DataFrame({"model": model, "period": [f"p{i}" for i in range(len(values))], "value": values},
                            schema_overrides={"value": pl.Float64})

    conn = duckdb.connect()
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


def test_recent_rows_upsert_then_keep_each_tickers_newest_days_only():
    from pm_resources.store import RecentRows, write_partitions

    def fits(ticker, days, key):
        return pl.DataFrame({"ticker": [ticker] * len(days), "fit_date": days, "fit_key": [key] * len(days)})

    conn = duckdb.connect()
    old = [dt.date(2018, 1, 2), dt.date(2018, 6, 1)]
    write_partitions(conn, ["A", "B"], [], [], recent_rows=[
        RecentRows("fits", pl.concat([fits("A", old, "a1"), fits("B", old, "b1")]), ("ticker", "fit_date"), "fit_date", 30)])
    assert query(conn, "SELECT count(*) AS n FROM fits").item() == 2  # each ticker's January fit is 150 days too old
    write_partitions(conn, ["A"], [], [], recent_rows=[
        RecentRows("fits", fits("A", [dt.date(2018, 6, 1), dt.date(2018, 6, 20)], "a2"), ("ticker", "fit_date"),
                   "fit_date", 30)])
    rows = query(conn, "SELECT ticker, fit_date, fit_key FROM fits ORDER BY ALL").rows()
    assert rows == [("A", dt.date(2018, 6, 1), "a2"), ("A", dt.date(2018, 6, 20), "a2"), ("B", dt.date(2018, 6, 1), "b1")]
