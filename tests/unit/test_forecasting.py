"""Forecasting models, ensemble and engine: plain modules, no Dagster."""

import datetime as dt

import numpy as np
import polars as pl
import pytest
from arch import arch_model
from arch.univariate import GARCH, StudentsT, ZeroMean
from statsmodels.tsa.statespace.sarimax import SARIMAX

from pm_domain import calendar
from pm_domain.forecasting import evaluation, garch, mssa_rl, samossa, sarimax, ssa
from pm_domain.forecasting.engine import ForecastConfig, ForecastError, forecast_ticker
from pm_domain.forecasting.ensemble import inverse_mse_weights
from pm_domain.price_sources import fetch_prices

FAST = ForecastConfig(refit_every=20)


def sines_and_trend(n: int) -> np.ndarray:
    t = np.arange(n)
    return 2.0 + 0.01 * t + np.sin(2 * np.pi * t / 20) + 0.5 * np.sin(2 * np.pi * t / 50)


def test_ssa_reconstructs_sines_plus_trend_and_continues_them():
    x = sines_and_trend(320)
    basis = ssa.decompose(x[:300], 60)
    eigenvectors = basis.leading(6)  # linear trend: 2, each sine: 2
    assert np.abs(ssa.reconstruct(x[:300], eigenvectors) - x[:300]).max() < 1e-8
    tail = ssa.tail_map(eigenvectors) @ x[300 - 118 : 300]
    forecast = ssa.forecast_map(ssa.recurrence(eigenvectors), 20) @ tail
    assert np.abs(forecast - x[300:320]).max() < 1e-6


def test_tail_map_equals_the_end_of_the_full_reconstruction():
    x = np.random.default_rng(1).normal(size=400).cumsum()
    eigenvectors = ssa.decompose(x, 30).leading(3)
    full = ssa.reconstruct(x, eigenvectors)
    assert np.allclose(ssa.tail_map(eigenvectors) @ x[-58:], full[-29:], atol=1e-10)


def test_rank_for_variance_counts_eigentriples():
    assert ssa.rank_for_variance(np.array([3.0, 1.0, 1.0]), 0.85) == 2  # energy 9, 1, 1
    assert ssa.rank_for_variance(np.array([3.0, 1.0, 1.0]), 0.5) == 1


def test_garch_recovers_simulated_parameters():
    # Seeded: an unseeded simulation made this test pass or fail by luck (alpha 0.05 on one draw).
    model = ZeroMean(None, volatility=GARCH(p=1, q=1), distribution=StudentsT(seed=np.random.default_rng(7)))
    simulated = model.simulate([0.05, 0.08, 0.86, 8.0], 6000, burn=500)
    fit = garch.fit_volatility(simulated["data"].to_numpy() / 100)
    assert fit.model == "garch_t" and fit.fallback_reason is None
    assert fit.alpha == pytest.approx(0.08, abs=0.03)
    assert fit.beta == pytest.approx(0.86, abs=0.05)


def test_garch_falls_back_to_ewma_when_persistence_is_high_and_says_so():
    model = ZeroMean(None, volatility=GARCH(p=1, q=1), distribution=StudentsT(seed=np.random.default_rng(8)))
    simulated = model.simulate([0.01, 0.06, 0.935, 8.0], 4000, burn=500)
    fit = garch.fit_volatility(simulated["data"].to_numpy() / 100)
    assert fit.model == "ewma_0.94" and fit.is_fallback
    assert "persistence" in fit.fallback_reason and fit.persistence >= garch.PERSISTENCE_LIMIT


def test_variance_recursion_matches_arch():
    returns = np.random.default_rng(2).standard_t(6, size=800) / 100
    result = arch_model(returns * 100, mean="Zero", vol="GARCH", p=1, q=1, dist="t").fit(disp="off")
    p = result.params
    fit = garch.VolatilityFit("garch_t", p["omega"] / 1e4, p["alpha[1]"], p["beta[1]"], p["nu"], True, 0.9, None)
    ours = garch.conditional_variance(fit, returns)
    assert np.allclose(ours[:-1], (result.conditional_volatility / 100) ** 2, rtol=1e-8)
    arch_paths = result.forecast(horizon=5, reindex=False).variance.to_numpy()[-1] / 1e4
    assert np.allclose(garch.variance_paths(fit, ours[-1:], 5)[0], arch_paths, rtol=1e-8)


def test_sarimax_forecasts_from_the_filtered_state_match_statsmodels():
    x = np.log(100) + np.random.default_rng(3).normal(0.0003, 0.01, 400).cumsum()
    fit = sarimax.fit_sarimax(x[:300], (1, 1, 1))
    origins = np.array([320, 399])
    ours = sarimax.forecast_sarimax(fit, x, origins, (1, 5, 20))
    for row, origin in enumerate(origins):
        theirs = SARIMAX(x[: origin + 1], order=(1, 1, 1), trend="c").filter(fit.params).forecast(20)
        assert np.allclose(ours[row], np.asarray(theirs)[[0, 4, 19]] - x[origin], atol=1e-10)


def _sine_returns(n: int, seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(n + 20)
    signal = 0.004 * np.sin(2 * np.pi * t / 25)
    noise = np.random.default_rng(seed).normal(0, 0.001, n + 20)
    return signal[:n] + noise[:n], signal


def test_samossa_recovers_a_periodic_component_in_returns():
    returns, signal = _sine_returns(600)
    fit = samossa.fit_samossa(returns[:500], 60, 0.9, 2, 20)
    origins = np.arange(500, 579)
    forecast = samossa.forecast_samossa(fit, returns, origins, (5,))[:, 0]
    truth = np.array([signal[o + 1 : o + 6].sum() for o in origins])
    assert np.corrcoef(forecast, truth)[0, 1] > 0.95


def test_mssa_rl_learns_a_rank_table_and_tracks_the_signal():
    returns, signal = _sine_returns(600)
    fit = mssa_rl.fit_mssa_rl(returns[:500], 60, 20)
    assert set(fit.rank_table) == {f"{c}/{v}" for c in ("break", "stable") for v in mssa_rl.VOLATILITY_LEVELS}
    assert set(fit.rank_table.values()) <= set(mssa_rl.CANDIDATE_RANKS)
    assert min(fit.rank_table.values()) >= 2  # rank 1 cannot hold a sine
    origins = np.arange(500, 579)
    forecast, regimes, ranks = mssa_rl.forecast_mssa_rl(fit, returns, origins, (1, 5))
    truth = np.array([signal[o + 1 : o + 6].sum() for o in origins])
    assert np.corrcoef(forecast[:, 1], truth)[0, 1] > 0.95
    assert len(regimes) == len(origins) and all(r in fit.rank_table for r in regimes)


def test_cusum_flags_a_mean_shift_not_noise():
    rng = np.random.default_rng(5)
    noise = rng.normal(size=(1, 60))
    shifted = noise + np.r_[np.zeros(30), np.full(30, 1.5)]
    assert mssa_rl.standardised_cusum(noise)[0] < mssa_rl.CUSUM_CRITICAL_5PCT
    assert mssa_rl.standardised_cusum(shifted)[0] > mssa_rl.CUSUM_CRITICAL_5PCT


def test_ensemble_weights_use_only_errors_known_at_the_target():
    rng = np.random.default_rng(6)
    realised = rng.normal(size=200)
    forecasts = np.column_stack([np.zeros(200), realised + rng.normal(scale=0.5, size=200)])
    target, horizon = np.array([150]), 5
    before = inverse_mse_weights(forecasts, realised, horizon, target, 60, 20)
    # Outcomes of origins 146.. are not known at 150 for h = 5: corrupting them changes nothing.
    spoiled = realised.copy()
    spoiled[146:] = 100.0
    after = inverse_mse_weights(forecasts, spoiled, horizon, target, 60, 20)
    assert np.array_equal(before.values, after.values)
    assert before.values[0, 1] > before.values[0, 0]  # the skilled model earns more weight
    # ...while corrupting a known outcome does change them.
    spoiled = realised.copy()
    spoiled[145] = 100.0
    assert not np.array_equal(before.values, inverse_mse_weights(forecasts, spoiled, horizon, target, 60, 20).values)


def test_skill_gate_drops_models_worse_than_the_random_walk():
    realised = np.random.default_rng(7).normal(size=100)
    forecasts = np.column_stack([np.zeros(100), -realised])  # always wrong
    weights = inverse_mse_weights(forecasts, realised, 1, np.array([90]), 60, 20, benchmark=0)
    assert weights.values[0].tolist() == [1.0, 0.0]
    assert "worse than the random walk" in weights.basis[0]


def test_evaluation_measures():
    realised = np.array([0.01, -0.02, 0.03, -0.01])
    assert evaluation.rmse(realised) == pytest.approx(np.sqrt(np.mean(realised**2)))
    assert evaluation.mase(realised / 2, realised) == pytest.approx(0.5)
    assert evaluation.coverage(realised, realised - 0.001, realised + 0.001) == 1.0
    assert evaluation.hit_rate(np.array([1.0, 1.0, 0.0, -1.0]), realised) == pytest.approx(2 / 3)
    rng = np.random.default_rng(8)
    truth = rng.normal(size=500)
    good, bad = truth - rng.normal(scale=0.1, size=500), truth - rng.normal(scale=1.0, size=500)
    dm = evaluation.diebold_mariano(truth - good, truth - bad, 1)
    assert dm.statistic < 0 and dm.p_value < 0.001
    assert evaluation.diebold_mariano(truth, truth, 5).p_value == 1.0


# --- the engine on real sample prices ---------------------------------------------------------

@pytest.fixture(scope="module")
def gspc() -> pl.DataFrame:
    days = calendar.trading_days(dt.date(2015, 1, 2), dt.date(2018, 12, 31))
    prices = fetch_prices("sample", ["^GSPC"], days)
    return prices.select("ticker", "date", pl.col("adj_close").alias("price"))


SESSIONS = calendar.session_numbers(dt.date(2019, 1, 31))


def test_forecast_rows_are_complete_and_labelled(gspc):
    targets = gspc["date"].to_list()[-3:]
    rows = forecast_ticker(gspc, targets, SESSIONS, FAST)
    assert rows.height == 9 and rows["horizon"].to_list() == [1, 5, 20] * 3
    assert rows.select(pl.col("expected_log_return", "sigma", "lower_90", "upper_90").is_null().any()).row(0) == (False,) * 4
    assert (rows["lower_90"] < rows["expected_log_return"]).all() and (rows["sigma"] > 0).all()
    weights = rows.select(pl.sum_horizontal(pl.col("^weight_.*$"))).to_series()
    assert np.allclose(weights.to_numpy(), 1.0)
    assert rows["volatility_model"].is_in(["garch_t", "ewma_0.94"]).all()
    assert rows["models_failed"].is_null().all() and rows["sarimax_ljung_box_p"].is_between(0, 1).all()
    assert rows["model_versions"][0].startswith('{"arch"')


def test_no_look_ahead_changing_later_prices_leaves_forecasts_identical(gspc):
    cut = dt.date(2018, 10, 1)
    targets = [d for d in gspc["date"].to_list() if dt.date(2018, 9, 24) <= d <= cut]
    before = forecast_ticker(gspc.filter(pl.col("date") <= dt.date(2018, 10, 31)), targets, SESSIONS, FAST)
    shocked = gspc.with_columns(
        pl.when(pl.col("date") > cut).then(pl.col("price") * 1.5).otherwise(pl.col("price")).alias("price")
    )
    after = forecast_ticker(shocked, targets, SESSIONS, FAST)
    assert before.equals(after)


def test_same_inputs_give_identical_rows_and_a_date_alone_matches_it_inside_a_range(gspc):
    dates = gspc["date"].to_list()
    first = forecast_ticker(gspc, dates[-25:], SESSIONS, FAST)
    assert first.equals(forecast_ticker(gspc, dates[-25:], SESSIONS, FAST))
    in_range = first.filter(pl.col("date") == dates[-10])
    alone = forecast_ticker(gspc, [dates[-10]], SESSIONS, FAST)
    # Same refit grid, same parameters; only BLAS's blocking of a bigger batch may move the last bit.
    from polars.testing import assert_frame_equal
    assert_frame_equal(alone, in_range, check_exact=False, rel_tol=1e-12, abs_tol=1e-15)


def test_fast_path_stays_close_to_refitting_every_day(gspc):
    targets = gspc["date"].to_list()[-3:]  # each naive date refits every model: ~8 s apiece
    fast = forecast_ticker(gspc, targets, SESSIONS, FAST)
    naive = forecast_ticker(gspc, targets, SESSIONS, ForecastConfig(refit_every=1))
    # Same models, parameters at most 19 sessions older: sigmas agree within a few percent.
    assert np.allclose(fast["sigma"].to_numpy(), naive["sigma"].to_numpy(), rtol=0.15)
    assert (naive["params_fit_date"] == naive["date"]).all()
    assert (fast["params_fit_date"] < fast["date"]).any()  # the fast path did reuse older parameters


def test_short_history_gives_flagged_baselines_not_silence(gspc):
    young = gspc.tail(100)
    rows = forecast_ticker(young, young["date"].to_list()[-2:], SESSIONS, FAST)
    assert rows["forecast_sarimax"].is_null().all() and rows["forecast_random_walk"].is_not_null().all()
    assert rows["models_failed"].str.contains("min_history").all()
    assert rows["volatility_model"].eq("ewma_0.94").all()


def test_constant_prices_fail_with_a_clear_message(gspc):
    flat = gspc.with_columns(pl.lit(100.0).alias("price"))
    with pytest.raises(ForecastError, match=r"\^GSPC: prices are constant"):
        forecast_ticker(flat, flat["date"].to_list()[-1:], SESSIONS, FAST)


def test_gaps_and_bad_prices_fail_with_the_date(gspc):
    dates = gspc["date"].to_list()
    with pytest.raises(ForecastError, match="skip trading days after"):
        forecast_ticker(gspc.filter(pl.col("date") != dates[-50]), dates[-1:], SESSIONS, FAST)
    broken = gspc.with_columns(pl.when(pl.col("date") == dates[-30]).then(0.0).otherwise(pl.col("price")).alias("price"))
    with pytest.raises(ForecastError, match=str(dates[-30])):
        forecast_ticker(broken, dates[-1:], SESSIONS, FAST)


def test_worker_processes_give_the_rows_of_one_process(gspc, monkeypatch):
    from pm_domain.forecasting import engine

    ixic = fetch_prices("sample", ["^IXIC"], gspc["date"].to_list()).select(
        "ticker", "date", pl.col("adj_close").alias("price"))
    histories = {"^GSPC": gspc, "^IXIC": ixic}
    targets = gspc["date"].to_list()[-2:]
    one = engine.forecast_tickers(histories, targets, SESSIONS, FAST, workers=1).rows
    monkeypatch.setattr(engine, "PARALLEL_MIN_PARTITIONS", 0)
    two = engine.forecast_tickers(histories, targets, SESSIONS, FAST, workers=2).rows
    assert one.equals(two) and one["ticker"].unique(maintain_order=True).to_list() == ["^GSPC", "^IXIC"]


def test_a_daemonic_process_forecasts_in_itself(monkeypatch):
    """A Celery worker's pool process is daemonic and may not start children (it failed with
    'daemonic processes are not allowed to have children' on the cluster)."""
    from types import SimpleNamespace

    from pm_domain.forecasting import engine

    assert engine.processes_for(500, 1, workers=2, fits=500) == 2
    monkeypatch.setattr(engine, "current_process", lambda: SimpleNamespace(daemon=True))
    assert engine.processes_for(500, 1, workers=2, fits=500) == 1


def test_skill_gate_compares_a_model_and_the_random_walk_on_the_same_origins():
    realised = np.r_[np.full(30, 0.1), np.full(30, 2.0)]  # calm outcomes, then violent ones
    # The model forecast only the calm origins (and the target), each 0.15 off where the RW is 0.1
    # off: worse than the RW on every shared origin, though its own MSE (0.0225) is far below the
    # RW's over all origins (~2).
    model = np.r_[np.full(30, 0.25), np.full(29, np.nan), 0.25]
    forecasts = np.column_stack([np.zeros(60), model])
    weights = inverse_mse_weights(forecasts, realised, 1, np.array([59]), 60, 20, benchmark=0)
    assert weights.values[0].tolist() == [1.0, 0.0]
    ungated = inverse_mse_weights(forecasts, realised, 1, np.array([59]), 60, 20)
    assert ungated.values[0, 1] > 0.9  # without the gate its small MSE would dominate


def test_realised_log_returns_look_h_sessions_ahead_and_drop_unknown_outcomes():
    history = pl.DataFrame({"ticker": ["X"] * 4, "date": [dt.date(2018, 12, d) for d in (24, 26, 27, 28)],
                            "price": [100.0, 110.0, 121.0, 133.1]})
    realised = evaluation.realised_log_returns({"X": history}, (1, 2)).sort("horizon", "date")
    assert realised.height == 3 + 2
    assert np.allclose(realised["realised"].to_numpy(), [np.log(1.1)] * 3 + [np.log(1.21)] * 2)
