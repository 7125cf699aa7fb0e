"""The DuckDB resource every asset and sensor writes through."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
from dagster_duckdb import DuckDBResource


class ClosingDuckDBResource(DuckDBResource):
    """`DuckDBResource` whose connection is closed however the block ends.

    dagster-duckdb 0.29 closes the connection only when the `with` block exits normally: a step
    that raised inside it left the connection, and so the file's lock, open in its process until
    the exception was collected (in-process runs: the demo, the CLI, tests)."""

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        manager = super().get_connection()
        conn = manager.__enter__()
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        manager.__exit__(None, None, None)
