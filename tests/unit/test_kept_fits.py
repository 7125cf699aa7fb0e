"""Fits kept between nights: a kept fit forecasts exactly as a fresh fit of the same window, and
any change to what decided the fit (prices under the window, settings, library versions) refits."""

import dataclasses
import datetime as dt

import numpy as np
import polars as pl
import pytest

from pm_domain import calendar
from pm_domain.forecasting import kept_fits
from pm_domain.forecasting.engine import (
    ForecastConfig,
    fits_to_make,
    forecast_ticker,
    forecast_with_kept_fits,
)
from pm_domain.price_sources import fetch_prices

CONFIG = ForecastConfig(refit_every=20)
SESSIONS = calendar.session_numbers(dt.date(2019, 1, 31))


@pytest.fixture(scope="module")
def gspc() -> pl.DataFrame:
    days = calendar.trading_days(dt.date(2015, 1, 2), dt.date(2018, 12, 31))
    prices = fetch_prices("sample", ["^GSPC"], days)
    return prices.select("ticker", "date", pl.col("adj_close").alias("price"))


def kept_from(forecasts) -> dict[dt.date, kept_fits.KeptFit]:
    return {day: kept_fits.KeptFit(key, models) for day, key, models in
            forecasts.fits.select("fit_date", "fit_key", "models").iter_rows()}


def nights(gspc: pl.DataFrame, refit_day: bool) -> tuple[dt.date, dt.date]:
    """Two consecutive sessions; the second on the refit grid or not."""
    dates = gspc["date"].to_list()
    for yesterday, today in zip(dates[-40:], dates[-39:]):
        if (SESSIONS[today] % CONFIG.refit_every == 0) == refit_day:
            return yesterday, today
    raise AssertionError("no such night")


def history_to(gspc: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    return gspc.filter(pl.col("date") <= day)


def test_encoded_fits_decode_to_the_same_numbers_bit_for_bit():
    returns = np.random.default_rng(7).standard_t(5, 520) * 0.01
    window = np.cumsum(returns) + 4.0
    models = kept_fits.fit_models(window, CONFIG)
    decoded = kept_fits.decode(kept_fits.encode(models))
    assert kept_fits.encode(decoded) == kept_fits.encode(models)
    assert np.array_equal(decoded.mssa_rl.eigenvectors, models.mssa_rl.eigenvectors)
    assert decoded.mssa_rl.maps[5].tail_map.tobytes() == models.mssa_rl.maps[5].tail_map.tobytes()
    assert decoded.sarimax.params.tobytes() == models.sarimax.params.tobytes()
    assert decoded.volatility == models.volatility and decoded.sarimax.order == (1, 1, 0)


@pytest.mark.parametrize("refit_day", [False, True], ids=["between refits", "refit day"])
def test_the_next_night_from_kept_fits_equals_a_fresh_forecast(gspc, refit_day):
    yesterday, today = nights(gspc, refit_day)
    first = forecast_with_kept_fits(history_to(gspc, yesterday), [yesterday], SESSIONS, CONFIG, {})
    assert first.fits_reused == 0 and first.fits.height >= 4  # the warm-up origins span several anchors

    night = forecast_with_kept_fits(history_to(gspc, today), [today], SESSIONS, CONFIG, kept_from(first))
    assert night.fits_made == (1 if refit_day else 0)
    assert night.rows.equals(forecast_ticker(history_to(gspc, today), [today], SESSIONS, CONFIG))


def test_on_a_refit_day_each_model_equals_a_fit_on_that_very_day(gspc):
    _, today = nights(gspc, refit_day=True)
    # A one-error weight window keeps the daily path's warm-up (a fit per origin) to 20 fits.
    short = dataclasses.replace(CONFIG, error_window=1, min_errors=1)
    fast = forecast_ticker(history_to(gspc, today), [today], SESSIONS, short)
    daily = forecast_ticker(history_to(gspc, today), [today], SESSIONS, dataclasses.replace(short, refit_every=1))
    assert (fast["params_fit_date"] == today).all()
    for model in ("forecast_sarimax", "forecast_samossa", "forecast_mssa_rl", "sigma"):
        assert np.allclose(fast[model].to_numpy(), daily[model].to_numpy(), rtol=0, atol=1e-9), model


def test_prices_restated_under_the_window_refit_and_give_the_fresh_forecast(gspc):
    yesterday, today = nights(gspc, refit_day=False)
    first = forecast_with_kept_fits(history_to(gspc, yesterday), [yesterday], SESSIONS, CONFIG, {})
    restated_day = gspc["date"].to_list()[-300]
    restated = history_to(gspc, today).with_columns(
        pl.when(pl.col("date") == restated_day).then(pl.col("price") * 1.01).otherwise(pl.col("price")).alias("price"))
    night = forecast_with_kept_fits(restated, [today], SESSIONS, CONFIG, kept_from(first))
    assert night.fits_made >= 4 and night.fits_reused == 0
    assert night.rows.equals(forecast_ticker(restated, [today], SESSIONS, CONFIG))


def test_settings_and_library_versions_are_part_of_the_key(monkeypatch):
    window = np.cumsum(np.random.default_rng(3).normal(0, 0.01, 500)) + 4.0
    key = kept_fits.fit_key(window, CONFIG)
    assert kept_fits.fit_key(window, dataclasses.replace(CONFIG, sarimax_order=(2, 1, 0))) != key
    assert kept_fits.fit_key(window, dataclasses.replace(CONFIG, refit_every=5)) == key  # a fit is the window's
    installed = kept_fits.library_versions()
    monkeypatch.setattr(kept_fits, "library_versions", lambda: installed | {"statsmodels": "0.0.1"})
    assert kept_fits.fit_key(window, CONFIG) != key


def test_only_the_fits_a_later_night_can_reuse_are_kept(gspc):
    dates = gspc["date"].to_list()
    backfill = forecast_with_kept_fits(gspc, dates[-60:], SESSIONS, CONFIG, {})
    assert backfill.fits_made >= 7
    oldest_needed = dates[-1 - CONFIG.warmup_origins - CONFIG.refit_every]
    assert 0 < backfill.fits.height < backfill.fits_made
    assert backfill.fits["fit_date"].min() >= oldest_needed


def test_fits_to_make_counts_the_anchors_without_a_kept_fit(gspc):
    _, today = nights(gspc, refit_day=False)
    cold = fits_to_make([today], SESSIONS, CONFIG, {})
    assert cold in (4, 5)  # 80 origins over a 20-session grid
    first = forecast_with_kept_fits(history_to(gspc, today), [today], SESSIONS, CONFIG, {})
    assert fits_to_make([today], SESSIONS, CONFIG, kept_from(first)) == 0


def test_a_kept_fit_of_an_unknown_type_is_refused():
    with pytest.raises(ValueError, match="unknown type 'Pickle'"):
        kept_fits.decode('{"type": "Pickle", "fields": {}}')
