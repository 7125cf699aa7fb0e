"""Data-quality rules for stored rows, as plain functions: the asset checks only report them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from pm_domain.features import LONGEST_WINDOW
from pm_domain.risk import MIN_RETURNS


@dataclass(frozen=True)
class RuleOutcome:
    """The verdict of one rule over a set of rows."""

    name: str
    passed: bool
    description: str
    failing_rows: int = 0
    examples: list[str] = field(default_factory=list)


# What each rule asks of the rows: the rule's outcome and its asset check's description in the UI.
# Numbers that are another module's rule are formatted from it, never restated.
RULE_DESCRIPTIONS = {
    "positive_prices": "open, high, low, close (and adj_close when present) > 0",
    "high_is_highest": "high >= max(open, close)",
    "low_is_lowest": "low <= min(open, close)",
    "non_negative_volume": "volume >= 0",
    "unique_keys": "one row per (ticker, date)",
    "no_missing_trading_days": "a row for every trading day of the run's range, for every ticker",
    "indicators_in_range": "RSI in [0, 100], ATR >= 0, Bollinger lower <= upper",
    "warmed_up": f"SMA 50 and the other indicators exist (at least {LONGEST_WINDOW} sessions of history)",
    "ensemble_complete": "every (ticker, date, horizon) has a finite ensemble forecast inside a non-empty 90% interval",
    "all_models_fitted": "SARIMAX, SAMOSSA and MSSA-RL all produced a forecast",
    "risk_complete": f"risk score in [0, 1] with a level, historical and model VaR present (needs {MIN_RETURNS}+ returns)",
}


def _examples(rows: pl.DataFrame, limit: int = 5) -> list[str]:
    return [f"{r['ticker']} {r['date']}" for r in rows.head(limit).iter_rows(named=True)]


def _rule(name: str, frame: pl.DataFrame, bad: pl.Expr) -> RuleOutcome:
    failing = frame.filter(bad) if frame.height else frame
    return RuleOutcome(name, failing.height == 0, RULE_DESCRIPTIONS[name], failing.height, _examples(failing))


def missing_keys(
    frame: pl.DataFrame, tickers: Sequence[str], dates: Sequence[dt.date]
) -> pl.DataFrame:
    """The (ticker, date) pairs of tickers x dates that have no row in `frame`, in key order."""
    expected = pl.DataFrame({"ticker": list(tickers)}, schema={"ticker": pl.String}).join(
        pl.DataFrame({"date": list(dates)}, schema={"date": pl.Date}), how="cross"
    )
    return expected.join(frame.select("ticker", "date"), on=["ticker", "date"], how="anti").sort(
        "ticker", "date"
    )


def price_rules(
    stored: pl.DataFrame, tickers: Sequence[str], dates: Sequence[dt.date]
) -> list[RuleOutcome]:
    """Every rule the prices of a run must satisfy; each failure means the data is wrong."""
    price_columns = ["open", "high", "low", "close"]
    outcomes = [
        _rule("positive_prices", stored,
              pl.any_horizontal([pl.col(c) <= 0 for c in price_columns])
              | (pl.col("adj_close").is_not_null() & (pl.col("adj_close") <= 0))),
        _rule("high_is_highest", stored,
              pl.col("high") < pl.max_horizontal("open", "close")),
        _rule("low_is_lowest", stored,
              pl.col("low") > pl.min_horizontal("open", "close")),
        _rule("non_negative_volume", stored, pl.col("volume") < 0),
    ]
    duplicated = stored.filter(pl.struct("ticker", "date").is_duplicated()) if stored.height else stored
    outcomes.append(RuleOutcome(
        "unique_keys", duplicated.height == 0, RULE_DESCRIPTIONS["unique_keys"], duplicated.height,
        _examples(duplicated),
    ))
    missing = missing_keys(stored, tickers, dates)
    outcomes.append(RuleOutcome(
        "no_missing_trading_days", missing.height == 0,
        RULE_DESCRIPTIONS["no_missing_trading_days"], missing.height,
        _examples(missing),
    ))
    return outcomes


def feature_rules(features: pl.DataFrame) -> list[RuleOutcome]:
    """Sanity rules for indicators; a failure points at a bug or at too short a history."""
    return [
        _rule("indicators_in_range", features,
              (pl.col("rsi_14") < 0) | (pl.col("rsi_14") > 100) | (pl.col("atr_14") < 0)
              | (pl.col("bb_lower") > pl.col("bb_upper"))),
        _rule("warmed_up", features, pl.col("sma_50").is_null() | pl.col("macd_signal").is_null()),
    ]


def forecast_rules(rows: pl.DataFrame) -> list[RuleOutcome]:
    """ensemble_complete: every row has a finite ensemble, sigma > 0 and lower < expected < upper.
    all_models_fitted: no model failed or was skipped (a warning: the row still stands)."""
    finite = [pl.col(c).is_null() | ~pl.col(c).is_finite()
              for c in ("expected_log_return", "sigma", "lower_90", "upper_90")]
    incomplete = pl.any_horizontal(finite) | (pl.col("sigma") <= 0) | ~(
        (pl.col("lower_90") < pl.col("expected_log_return")) & (pl.col("expected_log_return") < pl.col("upper_90"))
    )
    return [
        _rule("ensemble_complete", rows, incomplete.fill_null(True)),
        _rule("all_models_fitted", rows, pl.col("models_failed").is_not_null()),
    ]


def risk_rules(rows: pl.DataFrame) -> list[RuleOutcome]:
    """risk_complete: every row has a risk score in [0, 1], a level, a historical and a model VaR."""
    return [
        _rule("risk_complete", rows,
              (pl.col("risk_score").is_null() | ~pl.col("risk_score").is_between(0.0, 1.0)
               | (pl.col("risk_level") == "unknown") | pl.col("var_95_hist").is_null()
               | pl.col("var_95_model_log").is_null()).fill_null(True)),
    ]
