"""The one module that writes to DuckDB, and the helpers that read from it.

Every write replaces exactly the partitions (ticker x date) a run covers, inside one transaction:
a re-run never duplicates a row, and a failure (or a killed process) leaves the previous rows.
Values always travel as bound parameters or registered Arrow tables; identifiers (table and
column names) come from code and are checked against a strict pattern.

The same statements write both kinds of store (pm_resources/connections.py): a DuckDB file, and
the cluster's DuckLake, where writers of one table take turns at a lock in the lake's catalog
(connections.table_write_lock) and a commit that still conflicts has changed nothing and is
retried from the start, a bounded number of times. Tables carry no
PRIMARY KEY: a lake cannot have one, and on a file DuckDB 1.5.5 took 158 ms against 85 ms to
replace 3,750 keyed rows (it checks the key's index on every insert). A key stays unique because
every write refuses a frame that repeats one and deletes what it replaces first (DELETE then
INSERT, never INSERT OR REPLACE, which needs a key), inside one transaction. Tables made by an
older version keep their key, which these statements respect.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import duckdb
import polars as pl
import pyarrow as pa

from pm_resources.connections import table_write_lock

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
COMMIT_ATTEMPTS = 8  # a conflicting commit is tried again up to 7 times, after a growing pause
RETRY_PAUSE_SECONDS = 0.05


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
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, (pl.Float64, pl.String)):
        return "DOUBLE[]" if isinstance(dtype.inner, pl.Float64) else "VARCHAR[]"
    raise StoreError(f"no DuckDB column type for polars dtype {dtype}")


def _ensure_table(conn: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    columns = ", ".join(f"{identifier(c)} {_duckdb_type(t)}" for c, t in frame.schema.items())
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")  # no PRIMARY KEY: see the module's docstring
    existing = {row[0] for row in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database() "
        "AND table_name = ?", [table]
    ).fetchall()}
    for column, dtype in frame.schema.items():
        if column not in existing:  # a newer version of an asset added a column
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {identifier(column)} {_duckdb_type(dtype)}")


def create_table(conn: duckdb.DuckDBPyConnection, table: str, schema: dict[str, pl.DataType]) -> None:
    """Create `table` empty with the columns of `schema` (or add the columns it lacks)."""
    _ensure_table(conn, identifier(table), pl.DataFrame(schema=schema))


@dataclass(frozen=True)
class PartitionRows:
    """Rows that replace a table's rows for the run's tickers x dates.

    The key is (ticker, date) plus any further `key_columns` a table needs (ts_forecasts:
    horizon); a table of the whole universe (portfolio_backtests) is keyed by date and replaces
    the run's dates only. `scope` narrows what is replaced to rows with these column values, for a table
    several stages share (llm_calls: one stage's calls)."""

    table: str
    frame: pl.DataFrame
    key_columns: tuple[str, ...] = KEY_COLUMNS
    scope: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyedRows:
    """Rows upserted by key regardless of partitions (the LLM response cache)."""

    table: str
    frame: pl.DataFrame
    key_columns: tuple[str, ...]


@dataclass(frozen=True)
class RecentRows:
    """Rows upserted by key, after which each ticker keeps only the rows whose `date_column` lies
    within `keep_days` of its newest (the fits ts_forecasts keeps for the next nights)."""

    table: str
    frame: pl.DataFrame
    key_columns: tuple[str, ...]
    date_column: str
    keep_days: int


@dataclass(frozen=True)
class LedgerRows:
    """Rows written once and never replaced (the paper book's placed orders and amendments): a
    key already stored keeps its row, whatever the new row says."""

    table: str
    frame: pl.DataFrame
    key_columns: tuple[str, ...]


@dataclass(frozen=True)
class ScopedRows:
    """Rows that replace every row of `table` whose `scope_column` is one of `scope_values`: the
    slice of a table an unpartitioned asset owns (memorization_probe: the models it probed), so a
    re-run replaces its slice and leaves the others. Every row must lie inside the scope."""

    table: str
    frame: pl.DataFrame
    key_columns: tuple[str, ...]
    scope_column: str
    scope_values: tuple[str, ...]


def _check_scoped_rows(rows: ScopedRows) -> None:
    table = identifier(rows.table)
    missing = [c for c in (*rows.key_columns, rows.scope_column) if c not in rows.frame.columns]
    if missing:
        raise StoreError(f"{table}: rows lack key or scope column(s) {missing}")
    if rows.frame.height and not rows.frame[rows.scope_column].is_in(list(rows.scope_values)).all():
        raise StoreError(f"{table}: rows outside the scope {rows.scope_column} in {list(rows.scope_values)}")


def _by_ticker(key_columns: Sequence[str]) -> bool:
    """A table keyed (ticker, date, ...) holds per-ticker partitions; one keyed by date first
    holds whole dates, whatever other columns its key has."""
    return tuple(key_columns[:2]) == KEY_COLUMNS


def _check_partition_rows(rows: PartitionRows, tickers: Sequence[str], dates: Sequence[dt.date]) -> None:
    table, frame, key_columns = identifier(rows.table), rows.frame, rows.key_columns
    if tuple(key_columns[:2]) != KEY_COLUMNS and key_columns[:1] != ("date",):
        raise StoreError(f"{table}: a row key starts with {KEY_COLUMNS} or date, got {tuple(key_columns)}")
    missing = [c for c in (*key_columns, *rows.scope) if c not in frame.columns]
    if missing:
        raise StoreError(f"{table}: rows lack key column(s) {missing}")
    if not frame.height:
        return
    by_ticker = _by_ticker(key_columns)
    outside = frame.filter(
        (~pl.col("ticker").is_in(list(tickers)) if by_ticker else pl.lit(False)) | ~pl.col("date").is_in(list(dates))
    )
    if outside.height:
        first = outside.row(0, named=True)
        raise StoreError(
            f"{table}: {outside.height} row(s) fall outside the run's partitions, first "
            f"{first['ticker'] if by_ticker else 'the row'} on {first['date']}"
        )
    for column, value in rows.scope.items():
        if frame.filter(pl.col(column) != value).height:
            raise StoreError(f"{table}: rows outside the scope {column} = {value!r}")
    if frame.select(pl.struct(*key_columns).is_duplicated().any()).item():
        raise StoreError(f"{table}: rows repeat a ({', '.join(key_columns)}) key")


def write_partitions(
    conn: duckdb.DuckDBPyConnection,
    tickers: Sequence[str],
    dates: Sequence[dt.date],
    partition_rows: Sequence[PartitionRows],
    keyed_rows: Sequence[KeyedRows] = (),
    ledger_rows: Sequence[LedgerRows] = (),
    scoped_rows: Sequence[ScopedRows] = (),
    recent_rows: Sequence[RecentRows] = (),
) -> None:
    """Replace the run's partitions in every table of `partition_rows`, upsert `keyed_rows` and
    `recent_rows` (pruning the latter), and replace the slices of `scoped_rows`, all in one
    transaction: a stage's rows and its side tables land together or not at all.

    A frame may hold fewer rows than tickers x dates (a partition can legitimately be empty) but
    never a row outside them, and never two rows for one key.
    """
    for rows in partition_rows:
        _check_partition_rows(rows, tickers, dates)
    for rows in scoped_rows:
        _check_scoped_rows(rows)
    for rows in [*keyed_rows, *ledger_rows, *scoped_rows, *recent_rows]:
        identifier(rows.table)
        if rows.frame.height and rows.frame.select(pl.struct(*rows.key_columns).is_duplicated().any()).item():
            raise StoreError(f"{rows.table}: rows repeat a ({', '.join(rows.key_columns)}) key")
    conn.register("_pm_ticker_keys", pa.table({"ticker": pa.array(list(tickers), pa.string())}))
    conn.register("_pm_date_keys", pa.table({"date": pa.array(list(dates), pa.date32())}))

    def statements() -> None:
        for rows in partition_rows:
            _replace(conn, rows)
        for rows in keyed_rows:
            _upsert(conn, rows)
        for rows in ledger_rows:
            _append_new(conn, rows)
        for rows in scoped_rows:
            _replace_scoped(conn, rows)
        for rows in recent_rows:
            _upsert_recent(conn, rows)

    tables = sorted({rows.table for rows in [*partition_rows, *keyed_rows, *ledger_rows, *scoped_rows, *recent_rows]})
    try:
        in_transaction(conn, tables, statements, lambda: _what(tables, tickers, dates))
    finally:
        for name in ("_pm_ticker_keys", "_pm_date_keys", "_pm_incoming"):
            try:
                conn.unregister(name)
            except duckdb.Error:
                pass


def _what(tables: Sequence[str], tickers: Sequence[str], dates: Sequence[dt.date]) -> str:
    """The tables and range a write covers, for the line that says it gave up."""
    names = ", ".join(tables)
    if not dates:
        return names
    span = f"{min(dates)}..{max(dates)}"
    if not tickers:
        return f"{names} on {span}"
    ordered = sorted(tickers)
    who = ordered[0] if len(ordered) == 1 else f"{ordered[0]}..{ordered[-1]} ({len(ordered)} tickers)"
    return f"{names} for {who} on {span}"


def _conflicted(exc: duckdb.Error) -> bool:
    """A commit that lost to a concurrent writer (DuckLake's optimistic commit, or two connections
    of one DuckDB writing the same rows): nothing was written, and the same work may be tried again."""
    return isinstance(exc, duckdb.TransactionException) and "conflict" in str(exc).lower()


def in_transaction(conn: duckdb.DuckDBPyConnection, tables: Sequence[str], statements, what) -> None:
    """Run `statements()`, which write `tables`, in one transaction, holding the lake's lock on
    each of those tables throughout; on a commit conflict roll back and run them again, up to
    COMMIT_ATTEMPTS times, then raise StoreError naming `what()` (the tables and range)."""
    with table_write_lock(conn, tables):
        _attempt_commits(conn, statements, what)


def _attempt_commits(conn: duckdb.DuckDBPyConnection, statements, what) -> None:
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            conn.execute("BEGIN TRANSACTION")
            statements()
            conn.execute("COMMIT")
            return
        except BaseException as exc:
            try:
                conn.execute("ROLLBACK")
            except duckdb.Error:  # a failed COMMIT has already ended the transaction
                pass
            if not (isinstance(exc, duckdb.Error) and _conflicted(exc)):
                raise
            if attempt == COMMIT_ATTEMPTS:
                raise StoreError(f"{what()}: gave up after {attempt} commits conflicted with other writers "
                                 f"({str(exc).strip().splitlines()[-1].strip()})") from exc
        time.sleep(RETRY_PAUSE_SECONDS * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))


def _replace(conn: duckdb.DuckDBPyConnection, rows: PartitionRows) -> None:
    _ensure_table(conn, rows.table, rows.frame)
    scope_sql = "".join(f" AND {identifier(column)} = ?" for column in rows.scope)
    ticker_sql = "ticker IN (SELECT ticker FROM _pm_ticker_keys) AND " if _by_ticker(rows.key_columns) else ""
    conn.execute(
        f"DELETE FROM {rows.table} WHERE {ticker_sql}date IN (SELECT date FROM _pm_date_keys){scope_sql}",
        list(rows.scope.values()),
    )
    if rows.frame.height:
        conn.register("_pm_incoming", rows.frame.to_arrow())
        conn.execute(f"INSERT INTO {rows.table} BY NAME SELECT * FROM _pm_incoming")
        conn.unregister("_pm_incoming")


def _replace_scoped(conn: duckdb.DuckDBPyConnection, rows: ScopedRows) -> None:
    _ensure_table(conn, rows.table, rows.frame)
    conn.execute(f"DELETE FROM {rows.table} WHERE {identifier(rows.scope_column)} IN (SELECT unnest(?::VARCHAR[]))",
                 [list(rows.scope_values)])
    if rows.frame.height:
        conn.register("_pm_incoming", rows.frame.to_arrow())
        conn.execute(f"INSERT INTO {rows.table} BY NAME SELECT * FROM _pm_incoming")
        conn.unregister("_pm_incoming")


def _upsert(conn: duckdb.DuckDBPyConnection, rows: KeyedRows) -> None:
    _insert_keyed(conn, rows, replace=True)


def _upsert_recent(conn: duckdb.DuckDBPyConnection, rows: RecentRows) -> None:
    _insert_keyed(conn, KeyedRows(rows.table, rows.frame, rows.key_columns), replace=True)
    column = identifier(rows.date_column)
    conn.execute(
        f"DELETE FROM {rows.table} AS kept WHERE ticker IN (SELECT ticker FROM _pm_ticker_keys) AND {column} < "
        f"(SELECT max(newest.{column}) FROM {rows.table} AS newest WHERE newest.ticker = kept.ticker) - ?::INTEGER",
        [rows.keep_days])


def _append_new(conn: duckdb.DuckDBPyConnection, rows: LedgerRows) -> None:
    _insert_keyed(conn, rows, replace=False)


def _insert_keyed(conn: duckdb.DuckDBPyConnection, rows: KeyedRows | LedgerRows, replace: bool) -> None:
    """Write `rows` by key: `replace`, the new row wins a key already stored; else the stored one
    does. Spelled as DELETE/anti-join rather than INSERT OR REPLACE/IGNORE, which need a key."""
    keys = [identifier(c) for c in rows.key_columns]
    _ensure_table(conn, rows.table, rows.frame)
    if not rows.frame.height:
        return
    conn.register("_pm_incoming", rows.frame.to_arrow())
    same_key = " AND ".join(f"{rows.table}.{k} = incoming.{k}" for k in keys)
    if replace:
        conn.execute(f"DELETE FROM {rows.table} USING _pm_incoming AS incoming WHERE {same_key}")
        conn.execute(f"INSERT INTO {rows.table} BY NAME SELECT * FROM _pm_incoming")
    else:
        conn.execute(f"INSERT INTO {rows.table} BY NAME SELECT incoming.* FROM _pm_incoming AS incoming "
                     f"ANTI JOIN {rows.table} USING ({', '.join(keys)})")
    conn.unregister("_pm_incoming")


def upsert_rows(conn: duckdb.DuckDBPyConnection, rows: KeyedRows) -> int:
    """Insert or replace `rows` by their key in one transaction (event tables of the sensors:
    llm_health, run_failures). Returns rows written."""
    write_partitions(conn, [], [], [], keyed_rows=[rows])
    return rows.frame.height


def build_model(conn: duckdb.DuckDBPyConnection, name: str, sql: str, materialized: str) -> None:
    """(Re)build a SQL model as a table or a view in one transaction: until it commits, readers
    see the previous version, and a failed build leaves that version in place."""
    name = identifier(name)
    if materialized not in ("table", "view"):
        raise StoreError(f"{name}: materialized={materialized!r}: use table or view")

    def statements() -> None:
        # A model switched between view and table replaces the other kind, in the same transaction.
        existing = conn.execute("SELECT table_type FROM information_schema.tables WHERE table_catalog = "
                                "current_database() AND table_schema = 'main' AND table_name = ?", [name]).fetchall()
        other = "TABLE" if materialized == "view" else "VIEW"
        if existing and existing[0][0] == ("BASE TABLE" if other == "TABLE" else "VIEW"):
            conn.execute(f"DROP {other} {name}")
        conn.execute(f"CREATE OR REPLACE {materialized.upper()} {name} AS {sql}")

    in_transaction(conn, [name], statements, lambda: name)


def replace_partitions(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    frame: pl.DataFrame,
    tickers: Sequence[str],
    dates: Sequence[dt.date],
    key_columns: Sequence[str] = KEY_COLUMNS,
) -> int:
    """Replace the rows of `table` for tickers x dates with `frame`, atomically. Returns rows written."""
    write_partitions(conn, tickers, dates, [PartitionRows(table, frame, tuple(key_columns))])
    return frame.height


def read_keyed(conn: duckdb.DuckDBPyConnection, table: str, column: str, values: Sequence[str]) -> pl.DataFrame:
    """Rows of `table` whose `column` is one of `values` (empty frame when the table is new)."""
    if not table_exists(conn, table):
        return pl.DataFrame()
    return query(conn, f"SELECT * FROM {identifier(table)} WHERE {identifier(column)} IN "
                       "(SELECT unnest(?::VARCHAR[]))", [list(values)])


def table_exists(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    rows = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() AND table_name = ?",
        [identifier(table)],
    ).fetchall()  # fetchall, not fetchone: duckdb 2 refused new work while a result was unread
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
