"""What the LLM adds, with known answers: an LLM that vetoes every trade, an oracle that vetoes
exactly the losing trades, and a coin flip (pm_domain.attribution through backtest.ticker_backtests)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from pm_domain import calendar
from pm_domain.attribution import forecast_only_signals, paired_sharpe_difference_interval
from pm_domain.backtest import POSITION_LAG_SESSIONS, BacktestRules, ticker_backtests
from pm_domain.outcomes import SessionGrid
from pm_domain.performance import stationary_bootstrap_counts

FIRST = dt.date(2017, 1, 3)
SESSIONS = 300
RULES = BacktestRules(window_sessions=252, bootstrap_replications=400)
DAYS = calendar.trading_days(FIRST, calendar.shift_trading_days(FIRST, SESSIONS - 1))
END = DAYS[-1]


def market(seed: int) -> pl.DataFrame:
    """A driftless random walk: a forecast that calls it at random has no skill."""
    returns = np.random.default_rng(seed).normal(0.0, 0.01, SESSIONS)
    return pl.DataFrame({"ticker": "AAA", "date": DAYS, "price": 100.0 * np.cumprod(1.0 + returns)})


def proposals(seed: int) -> pl.DataFrame:
    """A BUY or SELL proposal every day, at random; the final action is filled in by each test."""
    rng = np.random.default_rng(seed + 1)
    return pl.DataFrame({"ticker": "AAA", "date": DAYS, "forecast_action": rng.choice(["BUY", "SELL"], SESSIONS),
                         "confidence": 0.6, "position_size": 0.2, "horizon": 1, "kelly_fraction": 0.4,
                         "rules": '{"kelly_share": 0.5, "max_position": 0.25}'},
                        schema_overrides={"horizon": pl.Int64})


def final_signals(proposed: pl.DataFrame, keep: np.ndarray) -> pl.DataFrame:
    """The LLM keeps the trades where `keep` is true and holds the others back."""
    return proposed.with_columns(pl.when(pl.Series(keep)).then(pl.col("forecast_action")).otherwise(pl.lit("HOLD"))
                                 .alias("action"))


def last_row(signals: pl.DataFrame, prices: pl.DataFrame, rules: BacktestRules = RULES) -> dict:
    grid = SessionGrid(DAYS[0], END)
    rows, _ = ticker_backtests(signals, prices, grid, ["AAA"], [END], rules)
    return rows.row(0, named=True)


def test_the_twin_is_the_forecasts_proposal_with_the_rules_size():
    proposed = proposals(0).head(3).with_columns(pl.Series("action", ["HOLD", "BUY", "SELL"]),
                                                 pl.Series("forecast_action", ["BUY", "BUY", "SELL"]))
    twin = forecast_only_signals(proposed.with_columns(position_size=pl.Series([0.0, 0.2, 0.2])))
    assert twin["action"].to_list() == ["BUY", "BUY", "SELL"]
    assert twin["position_size"].to_list() == [0.2, 0.2, 0.2]  # held back: 0.5 x 0.4 (under the 0.25 cap)


def test_an_llm_that_vetoes_every_trade_removes_exactly_the_forecasts_returns():
    prices, proposed = market(1), proposals(1)
    row = last_row(final_signals(proposed, np.zeros(SESSIONS, bool)), prices)
    assert row["total_return"] == 0.0 and row["trades"] == 0
    # final minus forecast-only = minus what the vetoed trades earned, to the last bit
    assert row["llm_delta_total_return"] == -row["forecast_only_total_return"]
    assert row["llm_delta_trades"] == -row["forecast_only_trades"]
    assert row["llm_held_back"] == row["sessions"]  # a trade was held back for every position day
    assert row["llm_verdict"] in ("llm_adds", "llm_removes", "no_difference")


def test_an_oracle_that_vetoes_exactly_the_losing_trades_adds_significantly():
    prices, proposed = market(2), proposals(2)
    # the trade of day t earns the return of session t + 2 (entered at the next close)
    returns = prices["price"].pct_change().to_numpy()
    ahead = np.concatenate([returns[POSITION_LAG_SESSIONS:], np.zeros(POSITION_LAG_SESSIONS)])
    sign = np.where(proposed["forecast_action"].to_numpy() == "BUY", 1.0, -1.0)
    row = last_row(final_signals(proposed, sign * ahead > 0), prices)
    assert row["llm_verdict"] == "llm_adds"
    assert row["llm_sharpe_delta_ci_lower"] > 0 and row["llm_delta_sharpe"] > 3


def test_identical_strategies_make_no_difference():
    prices, proposed = market(3), proposals(3)
    row = last_row(final_signals(proposed, np.ones(SESSIONS, bool)), prices)
    assert row["llm_delta_sharpe"] == 0.0 and row["llm_held_back"] == 0
    assert (row["llm_sharpe_delta_ci_lower"], row["llm_sharpe_delta_ci_upper"]) == (0.0, 0.0)
    assert row["llm_verdict"] == "no_difference"


def coin_flip_false_positive_rate(seeds: range, rules: BacktestRules = RULES) -> float:
    """Share of seeds on which an LLM that vetoes each trade on a coin flip is judged to add or
    remove skill: the verdict's false-positive rate (nominal 1 - interval)."""
    wrong = 0
    for seed in seeds:
        prices, proposed = market(1000 + seed), proposals(1000 + seed)
        keep = np.random.default_rng(5000 + seed).random(SESSIONS) < 0.5
        wrong += last_row(final_signals(proposed, keep), prices, rules)["llm_verdict"] != "no_difference"
    return wrong / len(seeds)


def test_a_coin_flip_llm_is_mostly_judged_to_make_no_difference():
    # 60 seeds here (about 1 s each); benchmarks/bench_attribution.py measures 200.
    assert coin_flip_false_positive_rate(range(60)) <= 0.25


def test_the_paired_interval_resamples_both_strategies_on_the_same_days():
    rng = np.random.default_rng(9)
    a = rng.normal(0.001, 0.01, (1, 200))
    counts = stationary_bootstrap_counts(200, 300, 10.0, 42)
    lower, upper = paired_sharpe_difference_interval(a, a, counts, 0.9)
    assert (lower[0], upper[0]) == (0.0, 0.0)  # the same series: every resample's difference is 0
    flat = np.zeros((1, 200))
    lower, upper = paired_sharpe_difference_interval(a, flat, counts, 0.9)
    assert lower[0] > 0 or upper[0] > 0  # a flat twin has Sharpe 0, so the difference is defined


@pytest.mark.parametrize("missing", ["kelly_fraction", "rules"])
def test_the_twin_size_is_zero_without_a_measured_kelly_fraction(missing):
    proposed = proposals(0).head(1).with_columns(pl.lit("HOLD").alias("action"))
    proposed = proposed.with_columns(pl.lit(None, proposed.schema[missing]).alias(missing))
    size = forecast_only_signals(proposed)["position_size"][0]
    assert size == (0.0 if missing == "kelly_fraction" else 0.2)  # no rules: the defaults 0.5 and 0.25


# --- the LLM as a forecaster ------------------------------------------------------------------

def test_reliability_bins_stated_probability_against_the_realised_hit_rate():
    from pm_domain.performance import reliability

    table = reliability([0.55, 0.58, 0.72, 1.0, np.nan], [1.0, 0.0, 1.0, 1.0, 1.0], bins=10)
    assert table["bin_lower"].tolist() == [0.5, 0.7, 0.9]  # 1.0 falls in the last bin; NaN is dropped
    assert table["calls"].tolist() == [2, 1, 1]
    assert table["mean_probability"] == pytest.approx([0.565, 0.72, 1.0])
    assert table["hit_rate"].tolist() == [0.5, 1.0, 1.0]


def test_the_llms_own_calls_are_scored_whatever_the_final_signal():
    from pm_domain.outcomes import directional_calls

    signals = pl.DataFrame({"ticker": "AAA", "date": DAYS[:4], "forecast_action": ["BUY", "SELL", "HOLD", "BUY"],
                            "confidence": [0.6, 0.7, 0.5, 0.6], "llm_action": ["SELL", "SELL", "BUY", None],
                            "llm_confidence": [0.9, 0.8, 0.55, None]})
    outcomes = pl.DataFrame({"ticker": "AAA", "date": DAYS[:4], "realised_return_horizon": [0.01, -0.02, 0.03, None]})
    calls = directional_calls(signals, outcomes).sort("caller", "date")
    assert calls.select("caller", "call", "probability", "hit").rows() == [
        ("forecast", "BUY", 0.6, True), ("forecast", "SELL", 0.7, True),  # the HOLD is no call; day 4 unknown
        ("llm", "SELL", 0.9, False), ("llm", "SELL", 0.8, True), ("llm", "BUY", 0.55, True),
    ]


def test_the_reliability_plot_is_a_readable_size():
    from io import BytesIO

    from matplotlib import image

    from pm_domain.performance import reliability
    from pm_domain.plots import reliability_png

    png = reliability_png({"forecast": reliability([0.6, 0.7], [1.0, 0.0]), "LLM": reliability([0.9], [0.0])}, "t")
    height, width = image.imread(BytesIO(png)).shape[:2]
    assert width >= 1000 and height >= 400


def oracle_keep(prices: pl.DataFrame, proposed: pl.DataFrame) -> np.ndarray:
    """Keep exactly the trades whose position (two sessions after the signal) earns."""
    returns = prices["price"].pct_change().fill_null(0.0).to_numpy()
    sign = np.where(proposed["forecast_action"].to_numpy() == "BUY", 1.0, -1.0)
    earned = np.zeros(SESSIONS)
    earned[:-POSITION_LAG_SESSIONS] = sign[:-POSITION_LAG_SESSIONS] * returns[POSITION_LAG_SESSIONS:]
    return earned > 0


def test_a_verdict_is_drawn_only_from_sessions_after_the_knowledge_cutoff():
    prices, proposed = market(4), proposals(4)
    signals = final_signals(proposed, oracle_keep(prices, proposed))
    everything = last_row(signals, prices)  # no cutoff column: every session counts
    assert everything["llm_verdict"] == "llm_adds" and everything["llm_clean_sessions"] == everything["sessions"]

    unknown = last_row(signals.with_columns(pl.lit(None, pl.Date).alias("knowledge_cutoff"),
                                            pl.lit(False).alias("after_cutoff")), prices)
    assert unknown["llm_verdict"] == "insufficient_data" and unknown["llm_clean_sessions"] == 0
    assert "cutoff is unknown" in unknown["llm_verdict_reason"]
    # the same days' figures stand beside it, labelled contaminated, to the last bit
    assert unknown["contaminated_llm_verdict"] == "llm_adds"
    assert unknown["contaminated_llm_delta_sharpe"] == everything["llm_delta_sharpe"]
    assert unknown["verdict"] == everything["verdict"] and unknown["sharpe"] == everything["sharpe"]

    cutoff = DAYS[-101]  # signals after it set the positions of the window's last 98 sessions
    split = last_row(signals.with_columns(pl.lit(cutoff).alias("knowledge_cutoff"),
                                          (pl.col("date") > cutoff).alias("after_cutoff")), prices)
    assert split["llm_clean_sessions"] == 100 - POSITION_LAG_SESSIONS
    assert split["llm_verdict"] == "llm_adds" and split["contaminated_llm_verdict"] == "llm_adds"
    assert split["llm_delta_sharpe"] != split["contaminated_llm_delta_sharpe"]
