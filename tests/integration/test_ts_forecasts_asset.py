"""ts_forecasts materialized in-process against a temporary store."""

import datetime as dt

import polars as pl

from pm_assets import features, prices, ts_forecasts
from pm_assets.ts_forecasts import FITS_TABLE
from pm_domain.calendar import trading_days
from pm_resources.connections import connect as store_connect
from pm_resources.store import table_exists
from tests.integration.test_assets import run
from tests.support.runs import failure_message, table


def test_range_materializes_with_checks_weights_plot_and_no_duplicates_on_rerun(instance, db_path):
    assert run(instance, db_path, [prices], "2016-01-04", "2018-12-31").success
    assert run(instance, db_path, [features], "2018-12-03", "2018-12-31").success

    result = run(instance, db_path, [ts_forecasts], "2018-12-17", "2018-12-31")
    assert result.success, failure_message(result)
    days = trading_days(dt.date(2018, 12, 17), dt.date(2018, 12, 31))
    rows = table(db_path, "ts_forecasts")
    assert rows.height == 2 * len(days) * 3
    assert rows.select("ticker", "date", "horizon").is_unique().all()
    assert rows["realised_vol_20d"].is_not_null().all()
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {
        "ensemble_complete": True, "all_models_fitted": True}
    metadata = result.asset_materializations_for_node("ts_forecasts")[0].metadata
    assert "| over | horizon | random_walk |" in metadata["weights"].value
    plotted = [m for m in result.asset_materializations_for_node("ts_forecasts") if "plot" in m.metadata]
    assert sorted(str(m.partition) for m in plotted) == [f"{days[-1]}|^GSPC", f"{days[-1]}|^IXIC"]  # any order
    assert plotted[0].metadata["plot"].value.startswith("![price with the 5-session forecast fan](data:image/png;base64,")

    rerun = run(instance, db_path, [ts_forecasts], "2018-12-17", "2018-12-31")
    assert rerun.success
    again = table(db_path, "ts_forecasts")
    assert again.height == rows.height
    assert again.drop("model_versions").equals(rows.drop("model_versions"))


def test_missing_features_fail_with_a_clear_message_and_write_nothing(instance, db_path):
    assert run(instance, db_path, [prices], "2016-01-04", "2018-12-31", tickers=["^GSPC"]).success
    result = run(instance, db_path, [ts_forecasts], "2018-12-28", "2018-12-31", tickers=["^GSPC"])
    assert not result.success
    assert "features cover 0 of the 2 partitions" in failure_message(result)
    assert "materialize features" in failure_message(result)
    with store_connect(db_path, read_only=True) as conn:
        assert not table_exists(conn, "ts_forecasts")


def test_prices_missing_from_the_lookback_fail_unless_short_history_is_allowed(instance, db_path):
    assert run(instance, db_path, [prices, features], "2018-06-01", "2018-12-31", tickers=["^GSPC"]).success
    result = run(instance, db_path, [ts_forecasts], "2018-12-28", "2018-12-31", tickers=["^GSPC"])
    assert not result.success
    assert "prices for ^GSPC start on 2018-06-01, but these forecasts read from 2016-" in failure_message(result)

    allowed = materialize_with_config(instance, db_path, {"allow_short_history": True}, "2018-12-28", "2018-12-31")
    assert allowed.success
    rows = table(db_path, "ts_forecasts")
    assert rows["fit_sessions"].max() < 200 and rows["models_failed"].str.contains("min_history").all()


def materialize_with_config(instance, db_path, config, start, end):
    from dagster import materialize
    from dagster_duckdb import DuckDBResource

    from tests.support.runs import range_tags

    return materialize([ts_forecasts], instance=instance, resources={"duckdb": DuckDBResource(database=db_path)},
                       tags=range_tags(["^GSPC"], start, end), raise_on_error=False,
                       run_config={"ops": {"ts_forecasts": {"config": config}}})


def test_the_next_night_reuses_kept_fits_and_writes_what_a_fresh_run_writes(instance, db_path):
    assert run(instance, db_path, [prices], "2016-01-04", "2018-12-31", tickers=["^GSPC"]).success
    assert run(instance, db_path, [features], "2018-12-27", "2018-12-28", tickers=["^GSPC"]).success
    first = run(instance, db_path, [ts_forecasts], "2018-12-27", "2018-12-27", tickers=["^GSPC"])
    assert first.success, failure_message(first)
    with store_connect(db_path, read_only=True) as conn:
        fit_dates = [row[0] for row in conn.execute(f"SELECT fit_date FROM {FITS_TABLE}").fetchall()]
    assert len(fit_dates) >= 4 and max(fit_dates) <= dt.date(2018, 12, 27)

    night = run(instance, db_path, [ts_forecasts], "2018-12-28", "2018-12-28", tickers=["^GSPC"])
    assert night.success, failure_message(night)
    metadata = night.asset_materializations_for_node("ts_forecasts")[0].metadata
    assert metadata["fits_reused"].value >= 4 and metadata["fits_made"].value <= 1
    kept_night = table(db_path, "ts_forecasts").filter(pl.col("date") == dt.date(2018, 12, 28))

    with store_connect(db_path) as conn:
        conn.execute(f"DROP TABLE {FITS_TABLE}")
    fresh = run(instance, db_path, [ts_forecasts], "2018-12-28", "2018-12-28", tickers=["^GSPC"])
    assert fresh.asset_materializations_for_node("ts_forecasts")[0].metadata["fits_reused"].value == 0
    fresh_night = table(db_path, "ts_forecasts").filter(pl.col("date") == dt.date(2018, 12, 28))
    assert fresh_night.equals(kept_night)
