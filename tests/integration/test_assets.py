"""The prices and features assets, materialized in-process against a temporary store."""

import datetime as dt

from pm_assets import features, prices
from pm_domain.calendar import trading_days
from pm_resources.connections import connect as store_connect
from pm_resources.store import query
from tests.support.runs import failure_message, run_assets, table

TICKERS = ["^GSPC", "^IXIC"]


def run(instance, db_path, assets, start, end, tickers=TICKERS, source="sample", csv_dir=None):
    return run_assets(instance, db_path, assets, start, end, tickers, source, csv_dir)


def test_range_materializes_prices_and_features_with_checks_and_plot(instance, db_path):
    result = run(instance, db_path, [prices, features], "2018-06-01", "2018-12-31")
    assert result.success
    days = trading_days(dt.date(2018, 6, 1), dt.date(2018, 12, 31))
    assert table(db_path, "prices").height == 2 * len(days)
    assert table(db_path, "features").height == 2 * len(days)
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} >= {"high_is_highest", "no_missing_trading_days", "indicators_in_range"}
    failed = {e.check_name for e in evaluations if not e.passed}
    assert failed <= {"warmed_up"}  # June has < 50 sessions of history before it in this store
    materializations = result.asset_materializations_for_node("features")
    assert len(materializations) == 2 * len(days)  # one per (date, ticker) partition
    metadata = materializations[0].metadata
    # the plot is stored on the partitions it draws (the last date's), once each, not on all 2 x N
    plotted = {str(m.partition): m.metadata["plot"].value for m in materializations if "plot" in m.metadata}
    assert sorted(plotted) == ["2018-12-31|^GSPC", "2018-12-31|^IXIC"]
    assert plotted["2018-12-31|^GSPC"].startswith("![price with SMA and Bollinger](data:image/png;base64,")
    assert metadata["run_plot"].value == "on partition 2018-12-31|^GSPC, 2018-12-31|^IXIC"
    assert metadata["run_rows_written"].value == 2 * len(days)
    assert metadata["run_partitions"].value == 2 * len(days)  # the run's facts are named as the run's
    # the stage's own work, timed in its body: part of the run's time, the rest is Dagster's
    assert 0 < metadata["run_compute_seconds"].value < 60
    # a single run covered the whole rectangle
    assert len({m.partition for m in result.asset_materializations_for_node("prices")}) == 2 * len(days)


def test_rerun_and_split_runs_give_identical_tables(instance, db_path, tmp_path):
    assert run(instance, db_path, [prices], "2017-01-03", "2018-12-31").success
    assert run(instance, db_path, [features], "2018-10-01", "2018-12-31").success
    once_prices, once_features = table(db_path, "prices"), table(db_path, "features")
    assert run(instance, db_path, [prices, features], "2018-10-01", "2018-12-31").success
    assert table(db_path, "prices").equals(once_prices)
    assert table(db_path, "features").equals(once_features)

    split_db = str(tmp_path / "split.duckdb")
    assert run(instance, split_db, [prices], "2017-01-03", "2018-12-31").success
    for start, end in [("2018-10-01", "2018-11-09"), ("2018-11-12", "2018-12-31")]:
        assert run(instance, split_db, [features], start, end).success
    assert table(split_db, "features").equals(once_features)  # bit-identical, not approximately


def test_source_gap_fails_the_run_and_writes_nothing(instance, db_path):
    assert run(instance, db_path, [prices], "2018-12-03", "2018-12-31").success
    before = table(db_path, "prices")
    result = run(instance, db_path, [prices], "2018-12-03", "2019-01-04")
    assert not result.success
    assert "'sample' has no prices for ^GSPC on 2019-01-02" in failure_message(result)
    assert table(db_path, "prices").equals(before)


def test_features_without_prices_fails_clearly(instance, db_path):
    result = run(instance, db_path, [features], "2018-12-03", "2018-12-31")
    assert not result.success
    assert "prices cover 0 of the 38 partitions" in failure_message(result)
    assert "first missing ^GSPC on 2018-12-03: materialize prices for the range first" in failure_message(result)


def test_session_not_closed_is_refused(instance, db_path, monkeypatch):
    import sys

    monkeypatch.setattr(sys.modules["pm_assets.prices"].calendar, "last_closed_session", lambda now: dt.date(2018, 12, 28))
    result = run(instance, db_path, [prices], "2018-12-27", "2018-12-31")
    assert not result.success
    assert "cannot be ingested before that session closes" in failure_message(result)


def test_blocking_check_stops_features_when_prices_are_wrong(instance, db_path, tmp_path):
    days = trading_days(dt.date(2018, 11, 1), dt.date(2018, 12, 31))
    lines = ["date,open,high,low,close,adj_close,volume"]
    lines += [f"{d},10,{'9' if d == days[-1] else '12'},9,11,11,100" for d in days]  # high < close on the last day
    (tmp_path / "BADCO.csv").write_text("\n".join(lines))
    result = run(instance, db_path, [prices, features], days[0], days[-1], tickers=["BADCO"],
                 source="csv", csv_dir=str(tmp_path))
    failed = {e.check_name: e for e in result.get_asset_check_evaluations() if not e.passed}
    assert "high_is_highest" in failed
    assert failed["high_is_highest"].metadata["examples"].value == f"BADCO {days[-1]}"
    assert not result.asset_materializations_for_node("features")  # blocked downstream


def test_hostile_ticker_added_through_the_ui_fails_before_any_sql(instance, db_path):
    # the UI can add any string as a dynamic partition; the asset validates before touching SQL
    result = run(instance, db_path, [prices], "2018-12-28", "2018-12-31", tickers=["X'); DROP TABLE prices; --"])
    assert not result.success
    assert "invalid ticker" in failure_message(result)
    with store_connect(db_path) as conn:
        assert query(conn, "SELECT count(*) FROM information_schema.tables").item() == 0
