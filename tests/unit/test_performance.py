"""Tests of pm_domain.performance.

Every metric empyrical defines is compared with empyrical (empyrical-reloaded) to 1e-9 on real
daily returns: the S&P 500 (arch.data.sp500, 1999-2018) as the strategy and the NASDAQ composite
(arch.data.nasdaq) as the benchmark, aligned on their common dates. Where empyrical gives +-inf
(a zero denominator) ours must give NaN; that is the one documented difference.

The module's conventions are checked too: time along the LAST axis, 1-D or 2-D input (one row
per window, each row equal to the 1-D result); NaN is a missing day whose result equals that of
the series with the day removed.
"""

from __future__ import annotations

import math
import warnings

import empyrical as ep
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pm_domain import performance as pf

RISK_FREE = 0.0001  # daily, about 2.5% a year
TOLERANCE = 1e-9
WINDOW = 252


# --- data and helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def index_returns() -> pd.DataFrame:
    """Daily simple returns of the S&P 500 ("returns") and the NASDAQ ("benchmark"), 1999-2018,
    on the dates both have."""
    from arch.data import nasdaq, sp500

    sp = sp500.load()["Adj Close"].pct_change().dropna()
    nq = nasdaq.load()["Adj Close"].pct_change().dropna()
    common = sp.index.intersection(nq.index)
    return pd.DataFrame({"returns": sp.loc[common], "benchmark": nq.loc[common]})


WINDOWS = {
    "all_1999_2018": lambda f: f,
    "crisis_2008": lambda f: f.loc["2008"],
    "last_252_days": lambda f: f.iloc[-252:],
    "30_days_from_2008_10_01": lambda f: f.loc["2008-10-01":].iloc[:30],
    "30_days_from_2009_03_10": lambda f: f.loc["2009-03-10":].iloc[:30],  # rally: huge CAGR
}


def window(frame: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    part = WINDOWS[name](frame)
    assert len(part) >= 30
    return part["returns"].to_numpy(), part["benchmark"].to_numpy()


def assert_matches(ours, reference, tolerance: float = TOLERANCE) -> None:
    """Equal to `tolerance`, absolute for values up to 1 and relative above (a 30-day CAGR can be
    in the hundreds); NaN only where the reference is NaN."""
    np.testing.assert_allclose(ours, reference, rtol=tolerance, atol=tolerance)


def as_documented(empyrical_value):
    """What ours must give where empyrical gives `empyrical_value`: the same, but NaN for +-inf."""
    value = np.asarray(empyrical_value, dtype=float)
    return np.where(np.isinf(value), np.nan, value)


def windows_2d(series: np.ndarray, length: int = WINDOW) -> np.ndarray:
    """(windows x days): every `length`-day window of `series`, one per row."""
    return np.lib.stride_tricks.sliding_window_view(series, length)


def with_nan_holes(series: np.ndarray, holes: int, seed: int) -> np.ndarray:
    """A copy of `series` with `holes` NaN at random (seeded) positions."""
    holed = series.astype(float).copy()
    holed[np.random.default_rng(seed).choice(len(series), holes, replace=False)] = np.nan
    return holed


# Each metric as (ours, empyrical), both taking (returns, benchmark) 1-D arrays.
VERSUS_EMPYRICAL = {
    "total_return": (lambda r, b: pf.total_return(r), lambda r, b: ep.cum_returns_final(r)),
    "annual_return": (lambda r, b: pf.annual_return(r), lambda r, b: ep.annual_return(r)),
    "annual_volatility": (lambda r, b: pf.annual_volatility(r), lambda r, b: ep.annual_volatility(r)),
    "sharpe_ratio": (lambda r, b: pf.sharpe_ratio(r, RISK_FREE), lambda r, b: ep.sharpe_ratio(r, RISK_FREE)),
    "sortino_ratio": (lambda r, b: pf.sortino_ratio(r, RISK_FREE), lambda r, b: ep.sortino_ratio(r, RISK_FREE)),
    "downside_deviation": (lambda r, b: pf.downside_deviation(r, RISK_FREE),
                           lambda r, b: ep.downside_risk(r, RISK_FREE)),
    "max_drawdown": (lambda r, b: pf.max_drawdown(r), lambda r, b: ep.max_drawdown(r)),
    "calmar_ratio": (lambda r, b: pf.calmar_ratio(r), lambda r, b: ep.calmar_ratio(r)),
    "beta": (lambda r, b: pf.beta(r, b, RISK_FREE), lambda r, b: ep.beta(r, b, RISK_FREE)),
    "alpha": (lambda r, b: pf.alpha(r, b, RISK_FREE), lambda r, b: ep.alpha(r, b, RISK_FREE)),
}

# Metrics empyrical does not define, as functions of (returns, benchmark) too. hit_rate, exposure
# and brier_score get returns here only to check the array conventions (2-D rows, NaN days).
OURS_ONLY = {
    "profit_factor": lambda r, b: pf.profit_factor(r),
    "probabilistic_sharpe_ratio": lambda r, b: pf.probabilistic_sharpe_ratio(r),
    "observations": lambda r, b: pf.observations(r),
    "hit_rate": lambda r, b: pf.hit_rate(r),
    "exposure": lambda r, b: pf.exposure(r),
    "brier_score": lambda r, b: pf.brier_score(r, b),
}

# --- equal to empyrical on real index returns ------------------------------------------------


@pytest.mark.parametrize("window_name", list(WINDOWS))
@pytest.mark.parametrize("metric", list(VERSUS_EMPYRICAL))
def test_metric_equals_empyrical_on_index_returns(index_returns, metric, window_name):
    returns, benchmark = window(index_returns, window_name)
    ours, reference = VERSUS_EMPYRICAL[metric]
    value = ours(returns, benchmark)
    assert isinstance(value, float)
    assert math.isfinite(value)
    assert_matches(value, reference(returns, benchmark))


@pytest.mark.parametrize("window_name", list(WINDOWS))
def test_equity_curve_and_drawdown_series_equal_empyrical(index_returns, window_name):
    returns, _ = window(index_returns, window_name)
    assert_matches(pf.equity_curve(returns), ep.cum_returns(returns, starting_value=1.0))
    assert_matches(pf.drawdown_series(returns), ep.stats.drawdown_series(returns))


def test_risk_free_rate_changes_sharpe_and_sortino(index_returns):
    """Guards against a risk-free argument that is silently ignored (the empyrical comparison
    would still pass if both ignored it)."""
    returns, benchmark = window(index_returns, "crisis_2008")
    assert pf.sharpe_ratio(returns, RISK_FREE) < pf.sharpe_ratio(returns)
    assert pf.sortino_ratio(returns, RISK_FREE) < pf.sortino_ratio(returns)
    assert pf.alpha(returns, benchmark, RISK_FREE) != pf.alpha(returns, benchmark)
    assert_matches(pf.beta(returns, benchmark, RISK_FREE), pf.beta(returns, benchmark))  # rf cancels


# --- 2-D input: one row per window -----------------------------------------------------------


@pytest.fixture(scope="module")
def rolling_windows(index_returns) -> tuple[np.ndarray, np.ndarray]:
    """Every 252-day window of 1999-2018 (about 4,800 rows), strategy and benchmark."""
    return windows_2d(index_returns["returns"].to_numpy()), windows_2d(index_returns["benchmark"].to_numpy())


@pytest.mark.parametrize("metric", list(VERSUS_EMPYRICAL))
def test_each_row_of_2d_input_equals_1d_result_and_empyrical(rolling_windows, metric):
    returns, benchmark = rolling_windows
    ours, reference = VERSUS_EMPYRICAL[metric]
    by_row = ours(returns, benchmark)
    assert isinstance(by_row, np.ndarray) and by_row.shape == (len(returns),)
    one_at_a_time = np.array([ours(r, b) for r, b in zip(returns, benchmark, strict=True)])
    assert_matches(by_row, one_at_a_time, tolerance=1e-12)
    empyrical_by_row = np.array([reference(r, b) for r, b in zip(returns, benchmark, strict=True)])
    assert_matches(by_row, as_documented(empyrical_by_row))


@pytest.mark.parametrize("metric", list(OURS_ONLY))
def test_each_row_of_2d_input_equals_1d_result_for_metrics_empyrical_lacks(rolling_windows, metric):
    returns, benchmark = rolling_windows
    returns, benchmark = returns[::10], benchmark[::10]
    by_row = OURS_ONLY[metric](returns, benchmark)
    one_at_a_time = np.array([OURS_ONLY[metric](r, b) for r, b in zip(returns, benchmark, strict=True)])
    assert by_row.shape == (len(returns),)
    assert_matches(by_row, one_at_a_time, tolerance=1e-12)


def test_2d_result_follows_the_last_axis_not_the_first(rolling_windows):
    """A (windows x days) array is read row by row: transposing it changes the answer."""
    returns, _ = rolling_windows
    block = returns[:300:100, :30]  # 3 windows x 30 days
    assert pf.sharpe_ratio(block).shape == (3,)
    assert pf.sharpe_ratio(block.T).shape == (30,)
    assert_matches(pf.sharpe_ratio(block), [pf.sharpe_ratio(row) for row in block])


# --- edge cases: flat, constant, one day, empty ----------------------------------------------


def test_all_flat_returns_give_nan_ratios_and_zero_levels():
    flat = np.zeros(WINDOW)
    # empyrical: 0/0 is NaN for Sharpe and Sortino; Calmar is NaN without a drawdown.
    for ours, reference in [(pf.sharpe_ratio, ep.sharpe_ratio), (pf.sortino_ratio, ep.sortino_ratio),
                            (pf.calmar_ratio, ep.calmar_ratio)]:
        assert np.isnan(reference(flat))
        assert np.isnan(ours(flat))
    assert np.isnan(pf.profit_factor(flat))
    assert np.isnan(pf.probabilistic_sharpe_ratio(flat))
    assert pf.total_return(flat) == 0.0 == ep.cum_returns_final(flat)
    assert pf.annual_return(flat) == 0.0
    assert pf.max_drawdown(flat) == 0.0 == ep.max_drawdown(flat)
    assert pf.annual_volatility(flat) == 0.0 == ep.annual_volatility(flat)
    assert pf.downside_deviation(flat) == 0.0


def test_flat_returns_with_positive_risk_free_have_a_defined_negative_sharpe():
    """r - rf is a constant -rf: no dispersion, so still undefined (not -inf)."""
    flat = np.zeros(WINDOW)
    assert ep.sharpe_ratio(flat, RISK_FREE) == -np.inf
    assert np.isnan(pf.sharpe_ratio(flat, RISK_FREE))


def test_constant_positive_returns_give_nan_where_empyrical_gives_inf():
    constant = np.full(WINDOW, 0.001)
    assert ep.sharpe_ratio(constant) == np.inf
    assert np.isnan(pf.sharpe_ratio(constant))
    assert ep.sortino_ratio(constant) == np.inf  # no day below 0: no downside
    assert np.isnan(pf.sortino_ratio(constant))
    assert np.isnan(pf.calmar_ratio(constant))  # no drawdown
    assert np.isnan(pf.profit_factor(constant))  # no loss
    assert pf.annual_volatility(constant) == 0.0
    assert_matches(pf.total_return(constant), 1.001**WINDOW - 1.0)
    assert_matches(pf.annual_return(constant), 1.001**WINDOW - 1.0)  # N = 252: one year


@pytest.mark.parametrize("day", [0.02, -0.03])
def test_a_single_day(day):
    one = np.array([day])
    assert np.isnan(pf.sharpe_ratio(one)) and np.isnan(ep.sharpe_ratio(one))
    assert np.isnan(pf.annual_volatility(one)) and np.isnan(ep.annual_volatility(one))
    assert np.isnan(pf.sortino_ratio(one))
    assert_matches(pf.total_return(one), day)
    assert pf.max_drawdown(one) == pytest.approx(min(day, 0.0), abs=1e-15)
    assert_matches(pf.max_drawdown(one), ep.max_drawdown(one))
    assert pf.observations(one) == 1


# Functions of returns only that take an empty series without raising.
EMPTY_SAFE = ["total_return", "annual_return", "sortino_ratio", "downside_deviation", "max_drawdown",
              "calmar_ratio", "profit_factor", "hit_rate", "exposure"]
# The dispersion metrics once raised on an empty array (numpy's nanmax of a zero-size axis).
EMPTY_DISPERSION = ["annual_volatility", "sharpe_ratio", "probabilistic_sharpe_ratio"]


@pytest.mark.parametrize("name", EMPTY_SAFE)
def test_empty_array_gives_nan(name):
    assert np.isnan(getattr(pf, name)(np.array([])))


@pytest.mark.parametrize("name", EMPTY_DISPERSION)
def test_empty_array_gives_nan_for_dispersion_metrics(name):
    assert np.isnan(getattr(pf, name)(np.array([])))


def test_empty_array_gives_nan_for_paired_metrics_and_zero_counts():
    empty = np.array([])
    assert np.isnan(pf.beta(empty, empty)) and np.isnan(pf.alpha(empty, empty))
    assert np.isnan(pf.brier_score(empty, empty))
    assert pf.observations(empty) == 0
    assert pf.position_changes(empty) == 0


def test_beta_is_nan_for_a_flat_benchmark(index_returns):
    returns, _ = window(index_returns, "last_252_days")
    flat = np.zeros_like(returns)
    assert np.isnan(ep.beta(returns, flat))
    assert np.isnan(pf.beta(returns, flat))
    assert np.isnan(pf.alpha(returns, flat))


# --- NaN: a missing day equals the day removed -----------------------------------------------


@pytest.fixture(scope="module")
def holed(index_returns) -> tuple[np.ndarray, np.ndarray]:
    """The last 500 days with 60 NaN (seeded) in the returns and 40 in the benchmark."""
    returns = index_returns["returns"].to_numpy()[-500:]
    benchmark = index_returns["benchmark"].to_numpy()[-500:]
    return with_nan_holes(returns, 60, seed=11), with_nan_holes(benchmark, 40, seed=12)


@pytest.mark.parametrize("metric", list(VERSUS_EMPYRICAL))
def test_nan_days_give_the_result_of_the_series_without_them(holed, metric):
    returns, benchmark = holed
    ours, reference = VERSUS_EMPYRICAL[metric]
    paired = metric in ("beta", "alpha")  # a day counts when both series are observed
    kept = ~np.isnan(returns) & ~np.isnan(benchmark) if paired else ~np.isnan(returns)
    assert 380 < kept.sum() < 450
    value = ours(returns, benchmark)
    assert_matches(value, ours(returns[kept], benchmark[kept]), tolerance=1e-12)
    assert_matches(value, reference(returns[kept], benchmark[kept]))


@pytest.mark.parametrize("metric", list(OURS_ONLY))
def test_nan_days_give_the_result_without_them_for_metrics_empyrical_lacks(holed, metric):
    returns, benchmark = holed
    kept = ~np.isnan(returns) & ~np.isnan(benchmark)
    paired = np.where(kept, returns, np.nan), np.where(kept, benchmark, np.nan)
    assert_matches(OURS_ONLY[metric](*paired), OURS_ONLY[metric](returns[kept], benchmark[kept]),
                   tolerance=1e-12)


def test_nan_in_2d_rows_each_equal_the_row_without_them(rolling_windows):
    returns = rolling_windows[0][::250].copy()  # about 20 windows
    rng = np.random.default_rng(5)
    returns[rng.random(returns.shape) < 0.1] = np.nan
    for name in ["total_return", "annual_return", "annual_volatility", "sharpe_ratio", "max_drawdown",
                 "calmar_ratio", "sortino_ratio", "profit_factor", "probabilistic_sharpe_ratio"]:
        metric = getattr(pf, name)
        expected = [metric(row[~np.isnan(row)]) for row in returns]
        assert_matches(metric(returns), expected, tolerance=1e-12)


def test_an_all_nan_row_gives_nan_ratios_and_zero_observations(rolling_windows):
    returns, benchmark = rolling_windows[0][:2].copy(), rolling_windows[1][:2]
    returns[1] = np.nan
    metrics = {**{name: pair[0] for name, pair in VERSUS_EMPYRICAL.items()}, **OURS_ONLY}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no "mean of empty slice" warning either
        results = {name: metric(returns, benchmark) for name, metric in metrics.items()}
    assert list(results.pop("observations")) == [WINDOW, 0]
    for name, values in results.items():
        assert np.isnan(values[1]), name
        assert_matches(values[0], metrics[name](returns[0], benchmark[0]), tolerance=1e-12)


# --- profit factor, hit rate, Brier score, exposure, position changes ------------------------


def test_profit_factor_is_gains_over_absolute_losses():
    assert pf.profit_factor(np.array([0.03, -0.01, 0.02, -0.02, 0.0])) == pytest.approx(0.05 / 0.03)
    assert pf.profit_factor(np.array([-0.01, -0.02])) == 0.0


def test_profit_factor_is_nan_without_a_losing_day():
    assert np.isnan(pf.profit_factor(np.array([0.01, 0.0, 0.02])))
    rows = pf.profit_factor(np.array([[0.01, 0.02], [0.01, -0.04]]))
    assert np.isnan(rows[0]) and rows[1] == pytest.approx(0.25)


def test_hit_rate_counts_only_the_calls():
    assert pf.hit_rate(np.array([1.0, 0.0, np.nan, 1.0])) == pytest.approx(2 / 3)
    assert np.isnan(pf.hit_rate(np.array([np.nan, np.nan])))
    assert_matches(pf.hit_rate(np.array([[1.0, 1.0, 0.0, 0.0], [np.nan, 1.0, np.nan, np.nan]])), [0.5, 1.0])


def test_brier_score_by_hand():
    probabilities = np.array([0.6, 0.7, np.nan, 0.5])
    hits = np.array([1.0, 0.0, np.nan, 1.0])
    by_hand = ((0.6 - 1) ** 2 + (0.7 - 0) ** 2 + (0.5 - 1) ** 2) / 3  # (0.16 + 0.49 + 0.25) / 3
    assert by_hand == pytest.approx(0.3)
    assert pf.brier_score(probabilities, hits) == pytest.approx(by_hand)


def test_brier_score_ignores_a_probability_without_a_call():
    """A day with no outcome does not count even if a probability was stated, and vice versa."""
    assert pf.brier_score(np.array([0.6, 0.7, 0.9, 0.5]), np.array([1.0, 0.0, np.nan, 1.0])) == pytest.approx(0.3)
    assert pf.brier_score(np.array([0.6, 0.7, np.nan, 0.5]), np.array([1.0, 0.0, 1.0, 1.0])) == pytest.approx(0.3)


def test_brier_score_of_always_one_half_is_a_quarter():
    hits = np.random.default_rng(3).integers(0, 2, 200).astype(float)
    assert pf.brier_score(np.full(200, 0.5), hits) == pytest.approx(0.25)
    assert pf.brier_score(hits, hits) == 0.0  # certain and right


def test_exposure_is_the_share_of_observed_days_in_a_position():
    assert pf.exposure(np.array([0.0, 1.0, 1.0, -1.0, 0.0])) == pytest.approx(0.6)
    assert pf.exposure(np.array([0.0, np.nan, 0.5])) == pytest.approx(0.5)
    assert_matches(pf.exposure(np.array([[0.0, 0.0], [1.0, -1.0]])), [0.0, 1.0])


def test_position_changes_start_flat_and_count_entries_exits_and_reversals():
    assert pf.position_changes(np.array([0.0, 1.0, 1.0, -1.0, 0.0])) == 3  # enter, reverse, exit
    assert pf.position_changes(np.array([1.0, 1.0])) == 1  # already long on day one: an entry
    assert pf.position_changes(np.array([0.0, 0.0])) == 0
    assert list(pf.position_changes(np.array([[0.0, 1.0, 0.0], [1.0, 0.5, 0.5]]))) == [2, 2]


def test_position_changes_drop_nan_days_like_every_other_metric():
    positions = np.array([1.0, np.nan, 1.0, 0.0])
    assert pf.position_changes(positions) == pf.position_changes(positions[~np.isnan(positions)])  # 2


# --- probabilistic Sharpe ratio --------------------------------------------------------------


def independent_psr(x: np.ndarray, benchmark_sharpe: float = 0.0) -> float:
    """Bailey and Lopez de Prado (2012), from scipy's biased skewness and (non-excess) kurtosis."""
    n = len(x)
    sharpe = x.mean() / x.std(ddof=1)
    g3, g4 = stats.skew(x), stats.kurtosis(x, fisher=False)
    z = (sharpe - benchmark_sharpe) * math.sqrt(n - 1) / math.sqrt(1 - g3 * sharpe + (g4 - 1) / 4 * sharpe**2)
    return float(stats.norm.cdf(z))


@pytest.mark.parametrize("window_name", list(WINDOWS))
def test_probabilistic_sharpe_equals_an_independent_implementation(index_returns, window_name):
    returns, _ = window(index_returns, window_name)
    assert_matches(pf.probabilistic_sharpe_ratio(returns), independent_psr(returns))
    assert_matches(pf.probabilistic_sharpe_ratio(returns, 0.02), independent_psr(returns, 0.02))


def test_probabilistic_sharpe_is_above_half_for_a_positive_mean_and_below_for_a_negative(index_returns):
    rising = index_returns.loc["2013", "returns"].to_numpy()
    falling = index_returns.loc["2008", "returns"].to_numpy()
    assert rising.mean() > 0 > falling.mean()
    assert pf.probabilistic_sharpe_ratio(rising) > 0.5
    assert pf.probabilistic_sharpe_ratio(falling) < 0.5


def test_probabilistic_sharpe_is_one_half_against_its_own_sharpe(index_returns):
    returns, _ = window(index_returns, "crisis_2008")
    own = returns.mean() / returns.std(ddof=1)
    assert pf.probabilistic_sharpe_ratio(returns, own) == pytest.approx(0.5, abs=1e-12)


def with_moments(x: np.ndarray, mean: float, sd: float) -> np.ndarray:
    """`x` shifted and scaled to exactly this sample mean and standard deviation (ddof=1)."""
    return mean + sd * (x - x.mean()) / x.std(ddof=1)


def test_probabilistic_sharpe_grows_with_the_number_of_observations():
    """The same per-day Sharpe (0.1) is more convincing over 1000 days than over 100. Each sample
    is set to exactly mean 0.001 and sd 0.01, so that sampling noise in the Sharpe (the raw first
    100 draws of this seed happen to have a higher Sharpe than all 1000) cannot mask the effect."""
    draws = np.random.default_rng(0).normal(0.001, 0.01, 1000)
    short, long = with_moments(draws[:100], 0.001, 0.01), with_moments(draws, 0.001, 0.01)
    psr_short, psr_long = pf.probabilistic_sharpe_ratio(short), pf.probabilistic_sharpe_ratio(long)
    assert 0.5 < psr_short < psr_long
    assert psr_short == pytest.approx(independent_psr(short), abs=1e-12)


def test_probabilistic_sharpe_is_nan_below_three_observations():
    assert np.isnan(pf.probabilistic_sharpe_ratio(np.array([0.01, -0.02])))
    assert not np.isnan(pf.probabilistic_sharpe_ratio(np.array([0.01, -0.02, 0.005])))


# --- stationary bootstrap --------------------------------------------------------------------


def test_bootstrap_counts_rows_sum_to_n():
    counts = pf.stationary_bootstrap_counts(252, 500, 10, seed=1)
    assert counts.shape == (500, 252)
    assert (counts.sum(axis=1) == 252).all()
    assert (counts >= 0).all() and (counts == np.round(counts)).all()
    assert (counts == 0).any()  # a resample, not the identity


def test_bootstrap_counts_are_deterministic_for_a_seed_and_differ_between_seeds():
    first = pf.stationary_bootstrap_counts(100, 50, 5, seed=7)
    np.testing.assert_array_equal(first, pf.stationary_bootstrap_counts(100, 50, 5, seed=7))
    assert not np.array_equal(first, pf.stationary_bootstrap_counts(100, 50, 5, seed=8))


@pytest.fixture(scope="module")
def normal_series() -> np.ndarray:
    return np.random.default_rng(0).normal(0.001, 0.01, 252)


@pytest.fixture(scope="module")
def counts() -> np.ndarray:
    return pf.stationary_bootstrap_counts(252, 1000, 10, seed=1)


def test_bootstrap_interval_contains_the_point_sharpe(normal_series, counts):
    lower, upper = pf.bootstrap_sharpe_interval(normal_series, counts)
    assert lower < pf.sharpe_ratio(normal_series) < upper


def test_bootstrap_interval_is_the_quantiles_of_resampled_sharpes(normal_series, counts):
    """Recomputed from the resamples themselves: each day repeated as often as counts says."""
    resampled = [pf.sharpe_ratio(np.repeat(normal_series, row.astype(int)), RISK_FREE) for row in counts]
    expected = np.quantile(resampled, [0.05, 0.95])
    assert_matches(pf.bootstrap_sharpe_interval(normal_series, counts, 0.90, RISK_FREE), expected)


def test_bootstrap_interval_is_wider_at_higher_confidence(normal_series, counts):
    lower_90, upper_90 = pf.bootstrap_sharpe_interval(normal_series, counts, confidence=0.90)
    lower_99, upper_99 = pf.bootstrap_sharpe_interval(normal_series, counts, confidence=0.99)
    assert lower_99 < lower_90 < upper_90 < upper_99


def test_bootstrap_interval_of_each_row_equals_the_1d_interval(normal_series, counts):
    other = np.random.default_rng(1).normal(-0.0005, 0.02, 252)
    rows = np.vstack([normal_series, other, 2 * normal_series + 0.001])
    lower, upper = pf.bootstrap_sharpe_interval(rows, counts)
    assert lower.shape == upper.shape == (3,)
    for i, row in enumerate(rows):
        assert_matches((lower[i], upper[i]), pf.bootstrap_sharpe_interval(row, counts), tolerance=1e-12)
    assert lower[1] != lower[0]


def test_bootstrap_interval_rejects_nan_and_a_wrong_length(normal_series, counts):
    with pytest.raises(ValueError, match="NaN"):
        pf.bootstrap_sharpe_interval(with_nan_holes(normal_series, 1, seed=0), counts)
    with pytest.raises(ValueError):
        pf.bootstrap_sharpe_interval(normal_series[:-1], counts)


# --- grouping windows by their number of observations ----------------------------------------


def test_rows_by_observations_groups_and_compacts_in_day_order():
    nan = np.nan
    returns = np.array([
        [0.1, 0.2, 0.3, 0.4],
        [nan, 0.5, nan, 0.6],
        [0.7, 0.8, 0.9, 1.0],
        [nan, nan, nan, nan],
        [1.1, nan, 1.2, nan],
    ])
    groups = {n: (index, compact) for n, index, compact in pf.rows_by_observations(returns)}
    assert sorted(groups) == [0, 2, 4]
    np.testing.assert_array_equal(groups[4][0], [0, 2])
    np.testing.assert_array_equal(groups[4][1], returns[[0, 2]])
    np.testing.assert_array_equal(groups[2][0], [1, 4])
    np.testing.assert_array_equal(groups[2][1], [[0.5, 0.6], [1.1, 1.2]])
    np.testing.assert_array_equal(groups[0][0], [3])
    assert groups[0][1].shape == (1, 0)


def test_rows_by_observations_covers_every_row_once(rolling_windows):
    returns = rolling_windows[0][::100, :50].copy()
    returns[np.random.default_rng(2).random(returns.shape) < 0.2] = np.nan
    seen = np.concatenate([index for _, index, _ in pf.rows_by_observations(returns)])
    assert sorted(seen) == list(range(len(returns)))
    for n, index, compact in pf.rows_by_observations(returns):
        assert compact.shape == (len(index), n)
        assert not np.isnan(compact).any()
        assert_matches(pf.sharpe_ratio(compact), pf.sharpe_ratio(returns[index]), tolerance=1e-12)
