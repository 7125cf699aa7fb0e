"""The portfolio the day's signals ask for: one weight per ticker with a signal on the date.

A signal is traded when none of its validation layers in `WeightRules.untradeable_layers` failed
(the row says which failed and why); HOLD, and SELL while shorts are off, are flat. Traded
signals are weighted by `method`, then capped per ticker (|w| <= max_weight) and in gross
(sum |w| <= max_gross, scaled down together); cash is the remainder, 1 - sum w.

- signal_kelly: the signal's own half-Kelly position size with its direction, as
  portfolio_backtests' position_size weighting uses it;
- equal: the direction over the number of tickers with a signal that day (portfolio_backtests'
  equal weighting);
- inverse_volatility, hierarchical_risk_parity, minimum_variance: skfolio's estimators, fitted on
  the traded tickers' close-to-close returns over the `window_sessions` sessions ending at the
  date, with the direction applied. No price after the date enters.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from pm_domain import settings
from pm_domain.outcomes import DIRECTION
from pm_domain.signal_validation import LAYERS

WeightMethod = Literal["signal_kelly", "equal", "inverse_volatility", "hierarchical_risk_parity", "minimum_variance"]
WEIGHT_METHODS: tuple[str, ...] = settings.PAPER_WEIGHT_METHODS
SKFOLIO_METHODS = WEIGHT_METHODS[2:]
# Fewer returns than this in the window and a skfolio method cannot be fitted: the row says so.
MIN_FIT_SESSIONS = 20

TARGET_SCHEMA = {
    "date": pl.Date, "ticker": pl.String, "action": pl.String, "method": pl.String, "traded": pl.Boolean,
    "raw_weight": pl.Float64, "weight": pl.Float64, "caps_applied": pl.String, "reason": pl.String,
    "cash_weight": pl.Float64, "gross_exposure": pl.Float64, "position_size": pl.Float64,
    "signal_id": pl.String, "prompt_hash": pl.String, "llm_model": pl.String, "model_digest": pl.String,
    "fit_sessions": pl.Int64,
}


@dataclass(frozen=True)
class WeightRules:
    method: WeightMethod = "signal_kelly"
    max_weight: float = 0.25  # the signals' own Kelly cap
    max_gross: float = 1.0
    allow_shorts: bool = False
    window_sessions: int = 252
    untradeable_layers: tuple[str, ...] = LAYERS

    def __post_init__(self) -> None:
        if self.method not in WEIGHT_METHODS:
            raise ValueError(f"method must be one of {', '.join(WEIGHT_METHODS)}, got {self.method!r}")
        if not 0 < self.max_weight <= 1:
            raise ValueError(f"max_weight must be in (0, 1], got {self.max_weight}")
        if not 0 < self.max_gross <= 2:
            raise ValueError(f"max_gross must be in (0, 2], got {self.max_gross}")
        if self.window_sessions < MIN_FIT_SESSIONS + 1:
            raise ValueError(f"window_sessions must be at least {MIN_FIT_SESSIONS + 1}, got {self.window_sessions}")
        unknown = set(self.untradeable_layers) - set(LAYERS)
        if unknown:
            raise ValueError(f"untradeable_layers: unknown layer(s) {sorted(unknown)}; layers are {', '.join(LAYERS)}")


def not_traded_reasons(signals: pl.DataFrame, rules: WeightRules) -> pl.Expr:
    """Why a signal row is not traded: its failed layers, HOLD, or a SELL with shorts off; null
    when it is traded."""
    failed = [pl.when(pl.col(f"validation_{layer}") == "fail")
              .then(pl.format("validation_{} failed: {}", pl.lit(layer), pl.col(f"validation_{layer}_reason").fill_null("")))
              for layer in rules.untradeable_layers if f"validation_{layer}" in signals.columns]
    failures = pl.concat_str(failed, separator="; ", ignore_nulls=True).replace("", None) if failed else pl.lit(None, pl.String)
    return (pl.when(failures.is_not_null()).then(failures)
            .when(pl.col("action") == "HOLD").then(pl.lit("HOLD: flat"))
            .when((pl.col("action") == "SELL") & pl.lit(not rules.allow_shorts)).then(pl.lit("SELL with shorts off: flat"))
            .otherwise(pl.lit(None, pl.String)))


def fit_weights(returns: np.ndarray, method: str) -> np.ndarray:
    """skfolio's long-only weights (summing to 1) over the columns of `returns` (sessions x assets)."""
    from skfolio import RiskMeasure
    from skfolio.optimization import HierarchicalRiskParity, InverseVolatility, MeanRisk, ObjectiveFunction

    if returns.shape[1] == 1:
        return np.ones(1)
    estimator = {
        "inverse_volatility": InverseVolatility,
        "hierarchical_risk_parity": lambda: HierarchicalRiskParity(risk_measure=RiskMeasure.VARIANCE),
        "minimum_variance": lambda: MeanRisk(objective_function=ObjectiveFunction.MINIMIZE_RISK,
                                             risk_measure=RiskMeasure.VARIANCE),
    }[method]()
    return np.asarray(estimator.fit(returns).weights_, dtype=np.float64)


def trailing_returns(closes: pl.DataFrame, tickers: list[str], day: dt.date, sessions: int) -> np.ndarray:
    """Close-to-close returns of `tickers` over the last `sessions` price rows up to `day`
    (sessions x tickers), only sessions where every ticker has one."""
    wide = (closes.filter(pl.col("ticker").is_in(tickers) & (pl.col("date") <= day))
            .pivot(on="ticker", index="date", values="close").sort("date").tail(sessions + 1))
    missing = [t for t in tickers if t not in wide.columns]
    if missing:
        return np.empty((0, len(tickers)))
    levels = wide.select(tickers).to_numpy()
    returns = levels[1:] / levels[:-1] - 1.0
    return returns[np.all(np.isfinite(returns), axis=1)]


def raw_weights(rows: pl.DataFrame, closes: pl.DataFrame, rules: WeightRules) -> pl.DataFrame:
    """`raw_weight` (signed, 0 where not traded) and `fit_sessions` for every row; a skfolio method
    that cannot be fitted on a date leaves it flat and puts why in `reason`."""
    sign = (pl.col("action").replace_strict(DIRECTION, default=0, return_dtype=pl.Float64)
            * pl.col("reason").is_null().cast(pl.Float64))
    if rules.method == "signal_kelly":
        return rows.with_columns((sign * pl.col("position_size").fill_null(0.0)).alias("raw_weight"),
                                 pl.lit(None, pl.Int64).alias("fit_sessions"))
    if rules.method == "equal":
        return rows.with_columns((sign / pl.len().over("date")).alias("raw_weight"), pl.lit(None, pl.Int64).alias("fit_sessions"))
    return pl.concat([_fitted(day_rows.with_columns(sign.alias("sign")), closes, rules).drop("sign")
                      for day_rows in rows.partition_by("date", maintain_order=True)])


def _fitted(day_rows: pl.DataFrame, closes: pl.DataFrame, rules: WeightRules) -> pl.DataFrame:
    """One date's rows weighted by a skfolio method over the tickers it trades."""
    tickers = day_rows.filter(pl.col("sign") != 0)["ticker"].to_list()
    if not tickers:
        return day_rows.with_columns(pl.lit(0.0).alias("raw_weight"), pl.lit(None, pl.Int64).alias("fit_sessions"))
    returns = trailing_returns(closes, tickers, day_rows["date"][0], rules.window_sessions)
    if len(returns) < MIN_FIT_SESSIONS:
        why = f"{rules.method} needs {MIN_FIT_SESSIONS}+ sessions of returns for {', '.join(tickers)}; has {len(returns)}"
        return day_rows.with_columns(pl.lit(0.0).alias("raw_weight"), pl.lit(len(returns), pl.Int64).alias("fit_sessions"),
                                     pl.col("reason").fill_null(why))
    fitted = dict(zip(tickers, fit_weights(returns, rules.method).tolist(), strict=True))
    return day_rows.with_columns(
        (pl.col("sign") * pl.col("ticker").replace_strict(fitted, default=0.0, return_dtype=pl.Float64)).alias("raw_weight"),
        pl.lit(len(returns), pl.Int64).alias("fit_sessions"))


def apply_caps(rows: pl.DataFrame, rules: WeightRules) -> pl.DataFrame:
    """`weight`: the per-ticker cap, then the gross cap per date (all of a date's weights scaled
    together), with what each row had applied (`caps_applied`), `cash_weight` and `gross_exposure`."""
    raw = pl.col("raw_weight")
    capped = rows.with_columns(raw.clip(-rules.max_weight, rules.max_weight).alias("capped"))
    gross = pl.col("capped").abs().sum().over("date")
    scale = pl.when(gross > rules.max_gross + 1e-12).then(rules.max_gross / gross).otherwise(1.0)
    weighted = capped.with_columns(
        (pl.col("capped") * scale).alias("weight"),
        pl.concat_str([
            pl.when(raw.abs() > rules.max_weight + 1e-12).then(pl.lit(f"capped at {rules.max_weight:.0%} per ticker")),
            pl.when((scale < 1.0) & (pl.col("capped") != 0)).then(pl.format(
                "scaled to {}% gross from {}%", pl.lit(round(rules.max_gross * 100)), (gross * 100).round(1))),
        ], separator="; ", ignore_nulls=True).replace("", None).alias("caps_applied"),
    )
    return weighted.with_columns((1.0 - pl.col("weight").sum().over("date")).alias("cash_weight"),
                                 pl.col("weight").abs().sum().over("date").alias("gross_exposure")).drop("capped")


def target_weights(signals: pl.DataFrame, closes: pl.DataFrame, rules: WeightRules) -> pl.DataFrame:
    """One row per signal (ticker, date): the weight the book targets and why (TARGET_SCHEMA).

    `signals` are llm_signals rows (with model_digest when known); `closes` (ticker, date, close)
    feed the skfolio methods, which read only closes up to each date."""
    if not signals.height:
        return pl.DataFrame(schema=TARGET_SCHEMA)
    rows = signals.sort("date", "ticker").with_columns(not_traded_reasons(signals, rules).alias("reason"))
    weighted = apply_caps(raw_weights(rows, closes, rules), rules).with_columns(
        pl.lit(rules.method).alias("method"),
        pl.col("reason").is_null().alias("traded"),
        pl.concat_str(pl.col("ticker"), pl.col("date").cast(pl.String), separator="|").alias("signal_id"),
    )
    for column, dtype in TARGET_SCHEMA.items():
        if column not in weighted.columns:
            weighted = weighted.with_columns(pl.lit(None, dtype).alias(column))
    return weighted.select([pl.col(c).cast(t) for c, t in TARGET_SCHEMA.items()])


def caps_violations(targets: pl.DataFrame, rules: WeightRules) -> pl.DataFrame:
    """Dates whose weights break a cap or the long-only rule (what the blocking check counts)."""
    return targets.group_by("date").agg(
        (pl.col("weight").abs() > rules.max_weight + 1e-9).any().alias("over_ticker_cap"),
        (pl.col("weight").abs().sum() > rules.max_gross + 1e-9).alias("over_gross_cap"),
        ((pl.col("weight") < 0).any() & pl.lit(not rules.allow_shorts)).alias("short_while_long_only"),
    ).filter(pl.col("over_ticker_cap") | pl.col("over_gross_cap") | pl.col("short_while_long_only")).sort("date")
