"""The one module that writes to DuckDB, and the helpers that read from it.

Every write replaces exactly the partitions (ticker x date) a run covers, inside one transaction:
a re-run never duplicates a row, and a failure (or a killed process) leaves the previous rows.
Values always travel as bound parameters or registered Arrow tables; identifiers (table and
column names) come from code and are checked against a strict pattern.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

import duckdb
import polars as pl
import pyarrow as pa

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_DUCKDB_TYPES: dict[type[pl.DataType], str] = {
    pl.String: "VARCHAR",
    pl.Date: "DATE",
    pl.Datetime: "TIMESTAMP",
    pl.Float64: "DOUBLE",
    pl.Float32: "FLOAT",
    pl.Int64: "BIGINT",
    pl.Int32: "INTEGER",
    pl.Boolean: "BOOLEAN",
}
KEY_COLUMNS = ("ticker", "date")


class StoreError(RuntimeError):
    """A write was refused before touching the database: the message says why."""


def identifier(name: str) -> str:
    """Return `name` if it is a safe lower-case SQL identifier, else raise StoreError."""
    if not _IDENTIFIER.fullmatch(name):
        raise StoreError(f"refusing SQL identifier {name!r}")
    return name


def _duckdb_type(dtype: pl.DataType) -> str:
    for polars_type, sql_type in _DUCKDB_TYPES.items():
        if isinstance(dtype, polars_type):
            return sql_type
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Float64):
        return "DOUBLE[]"
    raise StoreError(f"no DuckDB column type for polars dtype {dtype}")


def _ensure_table(
    conn: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, key_columns: Sequence[str]
) -> None:
    columns = ", ".join(f"{identifier(c)} {_duckdb_type(t)}" for c, t in frame.schema.items())
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {table} ({columns}, PRIMARY KEY ({', '.join(key_columns)}))"
    )
    existing = {row[0] for row in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
    ).fetchall()}
    for column, dtype in frame.schema.items():
        if column not in existing:  # a newer version of an asset added a column
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {identifier(column)} {_duckdb_type(dtype)}")


def replace_partitions(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    frame: pl.DataFrame,
    tickers: Sequence[str],
    dates: Sequence[dt.date],
    key_columns: Sequence[str] = KEY_COLUMNS,
) -> int:
    """Replace the rows of `table` for tickers x dates with `frame`, atomically. Returns rows written.

    `frame` may hold fewer rows than tickers x dates (a partition can legitimately be empty) but
    never a row outside them, and never two rows for one key. The key is (ticker, date) plus any
    further `key_columns` a stage needs (ts_forecasts: horizon).
    """
    identifier(table)
    if tuple(key_columns[:2]) != KEY_COLUMNS:
        raise StoreError(f"{table}: a row key starts with {KEY_COLUMNS}, got {tuple(key_columns)}")
    missing = [c for c in key_columns if c not in frame.columns]
    if missing:
        raise StoreError(f"{table}: rows lack key column(s) {missing}")
    if frame.height:
        outside = frame.filter(
            ~pl.col("ticker").is_in(list(tickers)) | ~pl.col("date").is_in(list(dates))
        )
        if outside.height:
            first = outside.row(0, named=True)
            raise StoreError(
                f"{table}: {outside.height} row(s) fall outside the run's partitions, first "
                f"{first['ticker']} on {first['date']}"
            )
        if frame.select(pl.struct(*key_columns).is_duplicated().any()).item():
            raise StoreError(f"{table}: rows repeat a ({', '.join(key_columns)}) key")

    ticker_keys = pa.table({"ticker": pa.array(list(tickers), pa.string())})
    date_keys = pa.table({"date": pa.array(list(dates), pa.date32())})
    conn.register("_pm_ticker_keys", ticker_keys)
    conn.register("_pm_date_keys", date_keys)
    conn.register("_pm_incoming", frame.to_arrow())
    try:
        conn.execute("BEGIN TRANSACTION")
        try:
            _ensure_table(conn, table, frame, [identifier(c) for c in key_columns])
            conn.execute(
                f"DELETE FROM {table} WHERE ticker IN (SELECT ticker FROM _pm_ticker_keys) "
                "AND date IN (SELECT date FROM _pm_date_keys)"
            )
            if frame.height:
                conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _pm_incoming")
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except duckdb.Error:  # a failed COMMIT has already ended the transaction
                pass
            raise
    finally:
        for name in ("_pm_ticker_keys", "_pm_date_keys", "_pm_incoming"):
            conn.unregister(name)
    return frame.height


def table_exists(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    rows = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [identifier(table)]
    ).fetchall()  # fetchall, not fetchone: duckdb 2 refuses new work while a result is unread
    return bool(rows[0][0])


def query(conn: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] = ()) -> pl.DataFrame:
    """Run a read query with bound parameters and return a polars frame."""
    return pl.from_arrow(conn.sql(sql, params=list(params)).to_arrow_table())


def read_rows(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    tickers: Sequence[str],
    end: dt.date,
    start: dt.date | None = None,
) -> pl.DataFrame:
    """Rows of `table` for `tickers` with date in [start, end] (start None: from the first row)."""
    identifier(table)
    if not table_exists(conn, table):
        return pl.DataFrame()
    sql = f"SELECT * FROM {table} WHERE ticker IN (SELECT unnest(?::VARCHAR[])) AND date <= ?"
    params: list[object] = [list(tickers), end]
    if start is not None:
        sql += " AND date >= ?"
        params.append(start)
    return query(conn, sql + " ORDER BY ticker, date", params)
