import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from scipy import integrate, stats

from pm_domain import risk

SQRT_252 = math.sqrt(252)


def price_frame(n: int, seed: int, start: dt.date = dt.date(2021, 1, 4), vol: float = 0.015) -> pl.DataFrame:
    """n weekday sessions of a geometric random walk starting at 100."""
    days = np.busday_offset(np.datetime64(start, "D"), np.arange(n), roll="forward")
    steps = np.random.default_rng(seed).normal(0.0003, vol, n - 1)
    prices = 100 * np.exp(np.concatenate(([0.0], np.cumsum(steps))))
    return pl.DataFrame({"date": days, "price": prices}).with_columns(pl.col("date").cast(pl.Date))


@pytest.fixture(scope="module")
def prices():
    return price_frame(760, seed=1, vol=0.02)


@pytest.fixture(scope="module")
def benchmark():
    return price_frame(760, seed=2, vol=0.01)


# --- historical VaR / CVaR -------------------------------------------------------------------

SMALL = np.array([0.03, -0.05, 0.01, 0.0, -0.02])  # sorted: -0.05, -0.02, 0, 0.01, 0.03


def test_historical_var_interpolates_linearly_between_order_statistics():
    assert risk.historical_var(SMALL, level=0.75) == pytest.approx(0.02)  # position 4 * 0.25 = 1
    assert risk.historical_var(SMALL, level=0.90) == pytest.approx(0.038)  # -0.05 + 0.4 * 0.03


def test_historical_cvar_averages_returns_at_or_below_minus_var():
    assert risk.historical_cvar(SMALL, level=0.75) == pytest.approx(0.035)  # mean(-0.05, -0.02)
    assert risk.historical_cvar(SMALL, level=0.90) == pytest.approx(0.05)


def test_historical_measures_of_a_large_normal_sample_match_the_normal_closed_form():
    sample = np.random.default_rng(0).normal(0.001, 0.02, 400_000)
    assert risk.historical_var(sample) == pytest.approx(risk.garch_var(0.001, 0.02), rel=0.01)
    assert risk.historical_cvar(sample) == pytest.approx(risk.garch_cvar(0.001, 0.02), rel=0.01)


def test_cvar_is_at_least_var():
    sample = np.random.default_rng(3).standard_t(4, 500) * 0.01
    for level in (0.9, 0.95, 0.99):
        assert risk.historical_cvar(sample, level) >= risk.historical_var(sample, level)


# --- GARCH VaR / CVaR ------------------------------------------------------------------------

def test_garch_normal_closed_form():
    assert risk.garch_var(0.0, 1.0) == pytest.approx(1.6448536269514722, abs=1e-12)
    assert risk.garch_cvar(0.0, 1.0) == pytest.approx(2.0627128075074257, abs=1e-12)
    # location-scale: VaR(mu, sigma) = -mu + sigma * VaR(0, 1)
    assert risk.garch_var(0.001, 0.02, nu=math.nan) == pytest.approx(-0.001 + 0.02 * 1.6448536269514722)
    assert risk.garch_cvar(0.001, 0.02, level=0.99) == pytest.approx(
        -0.001 + 0.02 * stats.norm.pdf(stats.norm.ppf(0.01)) / 0.01)


def test_garch_student_t_matches_numerical_integration_of_the_standardised_density():
    nu, a, mu, sigma = 5.0, 0.05, 0.0005, 0.015
    scale = math.sqrt((nu - 2) / nu)
    q = stats.t.ppf(a, nu)
    tail_mean = integrate.quad(lambda x: x * stats.t.pdf(x, nu), -np.inf, q)[0] / a
    assert risk.garch_var(mu, sigma, nu) == pytest.approx(-(mu + sigma * scale * q), rel=1e-12)
    assert risk.garch_cvar(mu, sigma, nu) == pytest.approx(-(mu + sigma * scale * tail_mean), rel=1e-8)


def test_garch_student_t_tends_to_the_normal_as_nu_grows():
    assert risk.garch_var(0.0, 1.0, nu=1e7) == pytest.approx(risk.garch_var(0.0, 1.0), rel=1e-5)
    assert risk.garch_cvar(0.0, 1.0, nu=1e7) == pytest.approx(risk.garch_cvar(0.0, 1.0), rel=1e-5)


@pytest.mark.parametrize("nu", [None, 4.0, 8.0])
def test_garch_measures_match_monte_carlo(nu):
    mu, sigma, n = 0.0004, 0.012, 1_000_000
    rng = np.random.default_rng(7)
    z = rng.standard_normal(n) if nu is None else rng.standard_t(nu, n) * math.sqrt((nu - 2) / nu)
    draws = mu + sigma * z
    assert np.std(z) == pytest.approx(1.0, rel=0.01)  # the t really is standardised
    mc_var = -np.quantile(draws, 0.05)
    assert risk.garch_var(mu, sigma, nu) == pytest.approx(mc_var, rel=0.01)
    assert risk.garch_cvar(mu, sigma, nu) == pytest.approx(-draws[draws <= -mc_var].mean(), rel=0.01)


def test_fatter_tails_give_a_larger_99_percent_loss():
    assert risk.garch_var(0, 1, nu=4, level=0.99) > risk.garch_var(0, 1, level=0.99)
    assert risk.garch_cvar(0, 1, nu=4, level=0.99) > risk.garch_cvar(0, 1, level=0.99)


@pytest.mark.parametrize("kwargs", [dict(nu=2.0), dict(nu=1.5), dict(sigma=0.0), dict(sigma=math.nan),
                                    dict(mu=math.nan), dict(level=1.0), dict(level=0.0)])
def test_garch_rejects_invalid_parameters(kwargs):
    args = dict(mu=0.0, sigma=0.01, nu=None, level=0.95) | kwargs
    with pytest.raises(ValueError):
        risk.garch_var(**args)
    with pytest.raises(ValueError):
        risk.garch_cvar(**args)


# --- volatility, drawdown --------------------------------------------------------------------

def test_annualised_volatility_uses_the_last_window_with_ddof_1():
    alternating = np.tile([0.01, -0.01], 10)
    history = np.concatenate(([0.5, -0.5], alternating))  # the wild start lies outside the window
    assert risk.annualised_volatility(history) == pytest.approx(math.sqrt(20 * 1e-4 / 19) * SQRT_252)
    assert math.isnan(risk.annualised_volatility(alternating[:19]))


@pytest.mark.parametrize("returns, expected", [
    ([0.1, -0.2, 0.05], -0.2),  # peak 1.1, trough 0.88
    ([-0.1, 0.05], -0.1),  # the starting 1.0 is the first peak
    ([0.1, -0.5, 0.2, -0.5], 0.33 / 1.1 - 1),
    ([0.01, 0.02], 0.0),
])
def test_max_drawdown_small_examples(returns, expected):
    assert risk.max_drawdown(np.array(returns)) == pytest.approx(expected, abs=1e-12)


# --- beta, alpha -----------------------------------------------------------------------------

def test_beta_and_alpha_of_an_exact_linear_relation():
    b = np.array([0.01, -0.01, 0.02, 0.0, -0.005])
    r = 2 * b + 0.001
    assert risk.beta(r, b) == pytest.approx(2.0, abs=1e-12)
    assert risk.alpha(r, b) == pytest.approx(1.001**252 - 1, abs=1e-12)
    # (r - rf) - 2 (b - rf) = 0.001 + rf
    assert risk.alpha(r, b, risk_free=0.0002) == pytest.approx(1.0012**252 - 1, abs=1e-12)


def test_beta_matches_covariance_over_variance():
    rng = np.random.default_rng(5)
    b = rng.normal(0, 0.01, 300)
    r = 0.7 * b + rng.normal(0, 0.01, 300)
    assert risk.beta(r, b) == pytest.approx(np.cov(r, b)[0, 1] / np.var(b, ddof=1), rel=1e-12)


def test_beta_is_undefined_for_a_flat_benchmark_or_a_single_pair():
    assert math.isnan(risk.beta(np.array([0.01, 0.02, -0.01]), np.zeros(3)))
    assert math.isnan(risk.alpha(np.array([0.01, 0.02, -0.01]), np.zeros(3)))
    assert math.isnan(risk.beta(np.array([0.01]), np.array([0.02])))
    assert math.isnan(risk.alpha(np.array([0.01]), np.array([0.02])))


def test_beta_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        risk.beta(np.zeros(3), np.zeros(4))


def test_agreement_with_empyrical():
    import empyrical  # a dev dependency: the reference, never skipped
    rng = np.random.default_rng(11)
    for _ in range(5):
        b = rng.normal(0.0003, 0.01, 252)
        r = 1.3 * b + rng.normal(0.0001, 0.015, 252)
        assert risk.beta(r, b) == pytest.approx(empyrical.beta(r, b), abs=1e-9)
        assert risk.alpha(r, b) == pytest.approx(empyrical.alpha(r, b), abs=1e-9)
        assert risk.alpha(r, b, 0.0001) == pytest.approx(empyrical.alpha(r, b, 0.0001), abs=1e-9)
        assert risk.max_drawdown(r) == pytest.approx(empyrical.max_drawdown(r), abs=1e-9)
    for returns in ([0.1, -0.2, 0.05], [-0.1, 0.05], [0.01, 0.02]):
        assert risk.max_drawdown(np.array(returns)) == pytest.approx(
            empyrical.max_drawdown(np.array(returns)), abs=1e-9)


# --- input checks ----------------------------------------------------------------------------

WITH_NAN = np.array([0.01, math.nan, -0.02] * 10)


@pytest.mark.parametrize("call", [
    lambda: risk.historical_var(WITH_NAN),
    lambda: risk.historical_cvar(WITH_NAN),
    lambda: risk.annualised_volatility(WITH_NAN),
    lambda: risk.max_drawdown(WITH_NAN),
    lambda: risk.beta(WITH_NAN, np.zeros(30)),
    lambda: risk.beta(np.zeros(30), WITH_NAN),
    lambda: risk.alpha(WITH_NAN, np.zeros(30)),
])
def test_nan_input_raises_and_says_nan(call):
    with pytest.raises(ValueError, match="NaN"):
        call()


def test_infinite_and_2d_input_raise():
    with pytest.raises(ValueError, match="infinite"):
        risk.max_drawdown(np.array([0.1, math.inf]))
    with pytest.raises(ValueError, match="1-D"):
        risk.historical_var(np.zeros((5, 2)))


def test_too_short_input_gives_nan():
    empty = np.array([])
    assert math.isnan(risk.historical_var(empty))
    assert math.isnan(risk.historical_cvar(empty))
    assert math.isnan(risk.max_drawdown(empty))
    assert math.isnan(risk.annualised_volatility(np.zeros(5), window=20))


# --- score and level -------------------------------------------------------------------------

def test_risk_score_hand_computed():
    assert risk.risk_score(0.30, -0.20, 0.025, 2.0) == pytest.approx(0.85 * 0.5 + 0.15 * 1.0)
    assert risk.risk_score(0.0, 0.0, 0.0, 0.0) == 0.0
    assert risk.risk_score(5.0, -0.9, 0.5, -7.0) == 1.0  # every component clipped at 1
    assert risk.risk_score(0.1, 0.0, -0.01, 0.0) == pytest.approx(0.35 * (0.1 / 0.6))  # a gain VaR clips to 0


def test_risk_score_drops_missing_components_and_renormalises():
    assert risk.risk_score(0.30, -0.20, 0.025, None) == pytest.approx(0.5)
    assert risk.risk_score(0.30, -0.20, 0.025, math.nan) == pytest.approx(0.5)
    assert risk.risk_score(math.nan, None, 0.05, None) == pytest.approx(1.0)
    assert math.isnan(risk.risk_score(None, math.nan, None, None))


def test_risk_score_rises_with_volatility_and_stays_in_the_unit_interval():
    scores = [risk.risk_score(v, -0.15, 0.02, 1.0) for v in np.linspace(0.0, 1.0, 41)]
    assert all(b >= a for a, b in zip(scores, scores[1:]))
    assert scores[-1] > scores[0]
    assert all(0.0 <= s <= 1.0 for s in scores)


@pytest.mark.parametrize("score, level", [
    (0.0, "low"), (0.2499, "low"), (0.25, "medium"), (0.4999, "medium"), (0.5, "high"),
    (0.7499, "high"), (0.75, "extreme"), (1.0, "extreme"), (math.nan, "unknown"), (None, "unknown"),
])
def test_risk_level_thresholds(score, level):
    assert risk.risk_level(score) == level


# --- assess ----------------------------------------------------------------------------------

def test_assess_matches_the_scalar_functions_on_the_window_up_to_each_date(prices, benchmark):
    t = prices["date"][500]
    row = risk.assess(prices, benchmark, [t]).row(0, named=True)
    p = prices["price"].to_numpy()[:501]
    q = benchmark["price"].to_numpy()[:501]
    r, rb = p[1:] / p[:-1] - 1, q[1:] / q[:-1] - 1
    assert row["risk_observations"] == 250
    assert row["var_95_hist"] == -np.quantile(r[-250:], 0.05)
    assert row["cvar_95_hist"] == risk.historical_cvar(r[-250:])
    assert row["volatility_20d"] == pytest.approx(np.std(np.diff(np.log(p))[-20:], ddof=1) * SQRT_252, rel=1e-12)
    assert row["max_drawdown_252d"] == risk.max_drawdown(r[-252:])
    assert row["beta"] == pytest.approx(np.cov(r[-252:], rb[-252:])[0, 1] / np.var(rb[-252:], ddof=1), rel=1e-12)
    score = risk.risk_score(row["volatility_20d"], row["max_drawdown_252d"], row["var_95_hist"], row["beta"])
    assert row["risk_score"] == score
    assert row["risk_level"] == risk.risk_level(score)


def test_assess_has_no_look_ahead(prices, benchmark):
    dates = prices["date"][10:400:7].to_list()
    cutoff = dates[-1]
    before = risk.assess(prices, benchmark, dates)

    def alter(frame: pl.DataFrame) -> pl.DataFrame:
        later = frame.filter(pl.col("date") > cutoff)
        changed = later.with_columns(pl.col("price") * np.linspace(0.3, 3.0, later.height))
        extra = price_frame(30, seed=9, start=frame["date"][-1] + dt.timedelta(days=7))
        return pl.concat([frame.filter(pl.col("date") <= cutoff), changed, extra])

    assert risk.assess(alter(prices), alter(benchmark), dates).equals(before)
    truncated = risk.assess(prices.filter(pl.col("date") <= cutoff),
                            benchmark.filter(pl.col("date") <= cutoff), dates)
    assert truncated.equals(before)


def test_assess_leaves_short_histories_null_and_unknown(prices, benchmark):
    out = risk.assess(prices, benchmark, prices["date"][[0, 19, 20, 79, 80]])
    assert out["risk_observations"].to_list() == [0, 19, 20, 79, 80]
    metrics = ["var_95_hist", "cvar_95_hist", "volatility_20d", "max_drawdown_252d", "risk_score"]
    for column in metrics:
        assert out[column].is_null().to_list() == [True, True, False, False, False], column
    assert out["risk_level"].to_list()[:2] == ["unknown", "unknown"]
    assert "unknown" not in out["risk_level"].to_list()[2:]
    # With the same sessions in both series, k returns are k aligned pairs; beta needs 60.
    assert out["beta"].is_null().to_list() == [True, True, True, False, False]


def test_assess_beta_needs_60_pairs(prices, benchmark):
    out = risk.assess(prices, benchmark, prices["date"][[59, 60]])
    assert out["beta"].is_null().to_list() == [True, False]


def test_assess_outputs_nulls_never_nan(prices):
    out = risk.assess(prices, None, prices["date"][[5, 100, 300]])
    assert out["beta"].null_count() == 3
    floats = [c for c, t in out.schema.items() if t == pl.Float64]
    assert not any(out[c].is_nan().any() for c in floats)
    assert out.schema == pl.Schema(risk.ASSESS_SCHEMA)


def test_assess_beta_aligns_prices_on_common_dates_before_differencing(prices):
    gappy = prices.filter(pl.int_range(pl.len()) % 9 != 4)  # the benchmark misses some sessions
    out = risk.assess(prices, gappy, prices["date"][[300, 700]])
    # Same ticker: each aligned pair spans the same interval, so beta is exactly 1.
    assert out["beta"].to_list() == pytest.approx([1.0, 1.0], abs=1e-12)
    assert risk.assess(prices, prices, prices["date"][[300]])["beta"][0] == pytest.approx(1.0, abs=1e-12)


def test_assess_windows_are_respected(prices):
    t = prices["date"][700]
    out = risk.assess(prices, None, [t], var_window=100, drawdown_window=30).row(0, named=True)
    r = prices["price"].to_numpy()[:701]
    r = r[1:] / r[:-1] - 1
    assert out["risk_observations"] == 100
    assert out["var_95_hist"] == risk.historical_var(r[-100:])
    assert out["max_drawdown_252d"] == risk.max_drawdown(r[-30:])


def test_assess_rejects_a_date_missing_from_prices(prices):
    saturday = dt.date(2021, 1, 9)
    with pytest.raises(ValueError, match="2021-01-09"):
        risk.assess(prices, None, [prices["date"][30], saturday])


def test_assess_rejects_bad_price_frames(prices):
    with pytest.raises(ValueError, match="sorted"):
        risk.assess(prices.reverse(), None, [prices["date"][30]])
    with pytest.raises(ValueError, match="NaN"):
        bad = prices.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(math.nan)
                                  .otherwise(pl.col("price")).alias("price"))
        risk.assess(bad, None, [prices["date"][30]])
    with pytest.raises(ValueError, match="positive"):
        risk.assess(prices.with_columns(-pl.col("price")), None, [prices["date"][30]])


def test_assess_of_no_dates_is_an_empty_frame_with_the_schema(prices):
    out = risk.assess(prices, None, [])
    assert out.height == 0 and out.schema == pl.Schema(risk.ASSESS_SCHEMA)
