"""The daily ledgers a backtest reads, for both paths: per session the price, the asset's return,
the position (the signal of POSITION_LAG_SESSIONS + delay sessions before), its turnover and
gross return, for one ticker or all tickers as one book; the scored calls; and where the sessions
after the LLM's knowledge cutoff begin."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import polars as pl

from pm_domain import performance as perf
from pm_domain.outcomes import DIRECTION, SessionGrid, direction, signal_outcomes

from .rules import PORTFOLIO_WEIGHTINGS, POSITION_LAG_SESSIONS, BacktestRules


def strategy_returns(positions: np.ndarray, asset_returns: np.ndarray, cost_rate: float) -> np.ndarray:
    """n_d = p_d r_d - c |p_d - p_{d-1}| along the last axis, starting flat (p_{-1} = 0)."""
    previous = np.concatenate([np.zeros(positions.shape[:-1] + (1,)), positions[..., :-1]], axis=-1)
    return positions * asset_returns - cost_rate * np.abs(positions - previous)


def backtest_core(signals: np.ndarray, prices: np.ndarray, cost_rate: float,
                  delay_sessions: int = 0) -> dict[str, np.ndarray]:
    """The vectorised core for a (tickers x sessions) block without gaps: signals e (+1/0/-1 or
    sizes) and prices P, positions p_d = e_{d-2-delay}, net returns, equity, Sharpe and max
    drawdown per ticker. What the assets do per window, as one pass for the benchmark."""
    asset_returns = prices[:, 1:] / prices[:, :-1] - 1.0
    positions = np.zeros_like(asset_returns)
    lag = POSITION_LAG_SESSIONS + delay_sessions
    positions[:, lag - 1:] = signals[:, : max(asset_returns.shape[1] - lag + 1, 0)]
    net = strategy_returns(positions, asset_returns, cost_rate)
    return {"net_returns": net, "equity": perf.equity_curve(net), "sharpe": perf.sharpe_ratio(net),
            "max_drawdown": perf.max_drawdown(net)}


def signal_exposure(sizing: str) -> pl.Expr:
    """e_t: the signal's direction, times its position_size under "signal" sizing."""
    sign = direction(pl.col("action")).cast(pl.Float64)
    return (sign * pl.col("position_size").fill_null(0.0) if sizing == "signal" else sign).alias("exposure")


def ticker_ledger(signals: pl.DataFrame, prices: pl.DataFrame, grid: SessionGrid, sizing: str,
                  delay_sessions: int = 0) -> pl.DataFrame:
    """Per ticker and session of `grid`: price, asset_return r_d, the day's exposure e_d, the
    position p_d = e_{d-2-delay_sessions}, turnover |p_d - p_{d-1}| and entry_turnover |p_d| (a
    window's first day). Null where a price or signal is missing: gaps stay visible."""
    unknown = set(signals["action"].unique().to_list()) - set(DIRECTION)
    if unknown:
        raise ValueError(f"llm_signals hold unknown action(s) {sorted(unknown)}: expected BUY, SELL or HOLD")
    tickers = sorted(set(signals["ticker"].to_list()) | set(prices["ticker"].to_list()))
    frame = (
        pl.DataFrame({"ticker": tickers}, schema={"ticker": pl.String}).join(grid.frame, how="cross")
        .join(prices.select("ticker", "date", "price"), on=["ticker", "date"], how="left")
        .join(signals.select("ticker", "date", "action", "confidence", "position_size"),
              on=["ticker", "date"], how="left")
        .sort("ticker", "session")
        .with_columns(signal_exposure(sizing))
    )
    return frame.with_columns(
        (pl.col("price") / pl.col("price").shift(1) - 1.0).over("ticker").alias("asset_return"),
        pl.col("exposure").shift(POSITION_LAG_SESSIONS + delay_sessions).over("ticker").alias("position"),
    ).with_columns(
        (pl.col("position") - pl.col("position").shift(1)).abs().over("ticker").alias("turnover"),
        pl.col("position").abs().alias("entry_turnover"),
        (pl.col("position") * pl.col("asset_return")).alias("gross_return"),
    )


def portfolio_ledger(ledger: pl.DataFrame, weighting: str) -> pl.DataFrame:
    """All tickers as one book, per session: weights w_i = p_i / N_d over the N_d tickers with a
    position and a return that day ("equal"), or w_i = p_i under signal sizing scaled down so
    sum |w_i| <= 1 ("position_size"). Gross return sum w_i r_i; turnover sum |w_i,d - w_i,d-1|;
    the benchmark is the equal-weight buy-and-hold of the same tickers, mean r_i. `position` is
    the gross exposure sum |w_i|."""
    if weighting not in PORTFOLIO_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {PORTFOLIO_WEIGHTINGS}, got {weighting!r}")
    known = pl.col("position").is_not_null() & pl.col("asset_return").is_not_null()
    weighted = ledger.with_columns(known.alias("known")).with_columns(
        pl.col("known").sum().over("session").alias("tickers_known"),
        pl.when(pl.col("known")).then(pl.col("position")).otherwise(0.0).alias("raw_weight"),
    )
    if weighting == "equal":
        weight = pl.col("raw_weight") / pl.col("tickers_known")
    else:
        gross = pl.col("raw_weight").abs().sum().over("session")
        weight = pl.col("raw_weight") / pl.max_horizontal(gross, pl.lit(1.0))
    weighted = weighted.with_columns(weight.fill_nan(0.0).alias("weight")).sort("ticker", "session").with_columns(
        (pl.col("weight") - pl.col("weight").shift(1).over("ticker").fill_null(0.0)).abs().alias("weight_change"))
    return (
        weighted.group_by("session", "date")
        .agg(
            pl.col("tickers_known").first(),
            (pl.col("weight") * pl.col("asset_return").fill_null(0.0)).sum().alias("gross_return"),
            pl.col("weight_change").sum().alias("turnover"),
            pl.col("weight").abs().sum().alias("entry_turnover"),
            pl.col("asset_return").filter(pl.col("known")).mean().alias("asset_return"),
        )
        .with_columns(
            pl.when(pl.col("tickers_known") > 0).then(pl.col("entry_turnover")).alias("position"),
            pl.lit("PORTFOLIO").alias("ticker"),
        )
        .with_columns(pl.when(pl.col("tickers_known") > 0).then(pl.col(c)).alias(c)
                      for c in ("gross_return", "turnover", "entry_turnover", "asset_return"))
        .sort("session")
    )


def scored_calls(outcomes: pl.DataFrame, grid: SessionGrid, delay_sessions: int = 0) -> pl.DataFrame:
    """BUY/SELL calls whose hit is known, with the session their position first earns (signal + 2
    + delay_sessions) and the session their outcome is known (the horizon's exit close): ticker,
    position_session, known_session, hit (1.0 / 0.0), confidence."""
    return (
        outcomes.filter(pl.col("hit").is_not_null())
        .with_columns(grid.number("date", "signal_session"), grid.number("horizon_date", "known_session"))
        .filter(pl.col("signal_session").is_not_null() & pl.col("known_session").is_not_null())
        .select("ticker", (pl.col("signal_session") + POSITION_LAG_SESSIONS + delay_sessions).alias("position_session"),
                "known_session", pl.col("hit").cast(pl.Float64), "confidence")
    )


def ledger_and_calls(signals: pl.DataFrame, prices: pl.DataFrame, grid: SessionGrid,
                     sizing: str, delay_sessions: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The ticker ledgers and the scored calls of `signals` (ticker, date, action, confidence,
    position_size, horizon) over `grid`, from prices (ticker, date, price) up to the last date."""
    return (ticker_ledger(signals, prices, grid, sizing, delay_sessions),
            scored_calls(signal_outcomes(signals, prices), grid, delay_sessions))


def cutoff_note(signals: pl.DataFrame) -> str:
    """' (cutoff 2024-08-31)' or ' (cutoff unknown: set PM_LLM_KNOWLEDGE_CUTOFFS)' for a reason."""
    if "knowledge_cutoff" not in signals.columns or signals.is_empty():
        return ""
    cutoffs = signals["knowledge_cutoff"]
    if cutoffs.null_count():
        return " (the model's cutoff is unknown: set PM_LLM_KNOWLEDGE_CUTOFFS)"
    return f" (cutoff {cutoffs.max()})"


def clean_from_index(signals: pl.DataFrame, ledger_dates: Sequence[dt.date], rules: BacktestRules) -> int:
    """The ledger index of the first position set by a signal after the knowledge cutoff, with
    every later signal after it too (a later contaminated signal, e.g. a model swapped back, moves
    it on). Signals without an `after_cutoff` column carry no cutoff and count as clean (index 0);
    the assets always supply it, null (unknown) as contaminated."""
    if "after_cutoff" not in signals.columns:
        return 0
    ordered = signals.sort("date")
    dirty = ordered.filter(~pl.col("after_cutoff").fill_null(False))
    later = ordered if dirty.is_empty() else ordered.filter(pl.col("date") > dirty["date"].max())
    if later.is_empty():
        return len(ledger_dates)
    where = {day: i for i, day in enumerate(ledger_dates)}
    first = later["date"].min()
    return where.get(first, len(ledger_dates)) + rules.position_lag


# --- reading a ledger ------------------------------------------------------------------------------

def ledger_values(ledger: pl.DataFrame, column: str) -> np.ndarray:
    """A ledger column as float64, NaN where it is null."""
    return ledger[column].cast(pl.Float64).fill_null(np.nan).to_numpy()


def require_every_session(ledger: pl.DataFrame) -> None:
    """A ledger must hold every session of its grid, in order: windows are counted in sessions."""
    sessions = ledger["session"].to_numpy()
    if len(sessions) and not np.array_equal(sessions, np.arange(sessions[0], sessions[0] + len(sessions))):
        raise ValueError("a ledger must hold every session of its grid, in order")


def calls_by_ledger_index(calls: pl.DataFrame, ledger: pl.DataFrame) -> pl.DataFrame:
    """`calls` with position_session and known_session counted from the ledger's first session."""
    first_session = int(ledger["session"][0]) if ledger.height else 0
    return calls.with_columns(pl.col("position_session", "known_session") - first_session)
