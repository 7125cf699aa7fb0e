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


def raw_weights(day_rows: pl.DataFrame, closes: pl.DataFrame, rules: WeightRules) -> tuple[np.ndarray, int | None, str | None]:
    """Signed weights before the caps for one date's rows (0 where not traded), the sessions a
    skfolio method was fitted on, and why it could not be (then every row is flat)."""
    direction = day_rows["action"].replace_strict(DIRECTION, default=0, return_dtype=pl.Float64).to_numpy()
    traded = day_rows["reason"].is_null().to_numpy()
    sign = np.where(traded, direction, 0.0)
    if rules.method == "signal_kelly":
        return sign * day_rows["position_size"].fill_null(0.0).to_numpy(), None, None
    if rules.method == "equal":
        return sign / max(day_rows.height, 1), None, None
    tickers = [t for t, keep in zip(day_rows["ticker"].to_list(), traded & (sign != 0), strict=True) if keep]
    if not tickers:
        return np.zeros(day_rows.height), None, None
    returns = trailing_returns(closes, tickers, day_rows["date"][0], rules.window_sessions)
    if len(returns) < MIN_FIT_SESSIONS:
        return np.zeros(day_rows.height), len(returns), (
            f"{rules.method} needs {MIN_FIT_SESSIONS}+ sessions of returns for {', '.join(tickers)}; has {len(returns)}")
    fitted = dict(zip(tickers, fit_weights(returns, rules.method), strict=True))
    magnitude = np.array([fitted.get(t, 0.0) for t in day_rows["ticker"].to_list()])
    return sign * magnitude, len(returns), None


def apply_caps(raw: np.ndarray, rules: WeightRules) -> tuple[np.ndarray, list[str | None]]:
    """Per-ticker cap, then the gross cap (all weights scaled together); what each row had applied."""
    notes: list[list[str]] = [[] for _ in raw]
    capped = np.clip(raw, -rules.max_weight, rules.max_weight)
    for i in np.flatnonzero(np.abs(raw) > rules.max_weight + 1e-12):
        notes[i].append(f"capped at {rules.max_weight:.0%} per ticker")
    gross = float(np.abs(capped).sum())
    if gross > rules.max_gross + 1e-12:
        capped = capped * rules.max_gross / gross
        for i in np.flatnonzero(capped != 0):
            notes[i].append(f"scaled to {rules.max_gross:.0%} gross from {gross:.1%}")
    return capped, ["; ".join(n) or None for n in notes]


def target_weights(signals: pl.DataFrame, closes: pl.DataFrame, rules: WeightRules) -> pl.DataFrame:
    """One row per signal (ticker, date): the weight the book targets and why (TARGET_SCHEMA).

    `signals` are llm_signals rows (with model_digest when known); `closes` (ticker, date, close)
    must not reach past the signals' dates for the fit to stay free of look-ahead: rows after
    each date are ignored anyway."""
    if not signals.height:
        return pl.DataFrame(schema=TARGET_SCHEMA)
    rows = signals.with_columns(not_traded_reasons(signals, rules).alias("reason"))
    frames = []
    for day_rows in rows.sort("date", "ticker").partition_by("date", maintain_order=True):
        raw, fit_sessions, failure = raw_weights(day_rows, closes, rules)
        weights, caps = apply_caps(raw, rules)
        reason = day_rows["reason"]
        if failure is not None:
            reason = reason.fill_null(failure)
        frames.append(day_rows.with_columns(
            pl.lit(rules.method).alias("method"), reason.alias("reason"),
            pl.Series("raw_weight", raw), pl.Series("weight", weights), pl.Series("caps_applied", caps, pl.String),
            pl.lit(1.0 - float(weights.sum())).alias("cash_weight"), pl.lit(float(np.abs(weights).sum())).alias("gross_exposure"),
            pl.lit(fit_sessions, pl.Int64).alias("fit_sessions"),
        ))
    out = pl.concat(frames).with_columns(
        pl.col("reason").is_null().alias("traded"),
        pl.concat_str(pl.col("ticker"), pl.col("date").cast(pl.String), separator="|").alias("signal_id"),
    )
    for column, dtype in TARGET_SCHEMA.items():
        if column not in out.columns:
            out = out.with_columns(pl.lit(None, dtype).alias(column))
    return out.select([pl.col(c).cast(t) for c, t in TARGET_SCHEMA.items()])


def caps_violations(targets: pl.DataFrame, rules: WeightRules) -> pl.DataFrame:
    """Dates whose weights break a cap or the long-only rule (what the blocking check counts)."""
    return targets.group_by("date").agg(
        (pl.col("weight").abs() > rules.max_weight + 1e-9).any().alias("over_ticker_cap"),
        (pl.col("weight").abs().sum() > rules.max_gross + 1e-9).alias("over_gross_cap"),
        ((pl.col("weight") < 0).any() & pl.lit(not rules.allow_shorts)).alias("short_while_long_only"),
    ).filter(pl.col("over_ticker_cap") | pl.col("over_gross_cap") | pl.col("short_while_long_only")).sort("date")
