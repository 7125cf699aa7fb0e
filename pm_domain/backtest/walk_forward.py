"""What the backtests asset computes per ticker: the backtest of the final signals with the
forecast-only twin's attribution beside it, and the verdict under each of STRESSES."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import polars as pl

from pm_domain.attribution import forecast_only_signals
from pm_domain.outcomes import SessionGrid

from .fast import backtest_with_attribution, verdict_statuses, window_series
from .ledger import clean_from_index, cutoff_note, ledger_and_calls, ticker_ledger
from .rules import ROBUST_SCHEMA, STRESS_EXTRA_DELAYS, STRESSES, BacktestRules, robust_verdict


def with_robust_verdicts(rows: pl.DataFrame, ledgers: dict[int, pl.DataFrame], end_dates: Sequence[dt.date],
                         rules: BacktestRules) -> pl.DataFrame:
    """`rows` (the backtests of one ledger at `end_dates` under `rules`, with their `verdict`)
    with ROBUST_SCHEMA's columns beside them: the verdict under each of STRESSES for the same end
    dates, robust_verdict and robust_reason. `ledgers[k]` is the ledger built with
    rules.delay_sessions + k sessions of delay, for each k of STRESS_EXTRA_DELAYS."""
    base = rows["verdict"].to_list()
    stressed: dict[str, list[str]] = {}
    for stress in STRESSES:
        stressed_rules = stress.rules(rules)
        # A stress that changes nothing (twice a zero cost) gives the verdict itself.
        stressed[stress.column] = base if stressed_rules == rules else verdict_statuses(
            ledgers[stress.extra_delay_sessions], end_dates, stressed_rules)
    robust = [robust_verdict(status, [stressed[stress.column][i] for stress in STRESSES])
              for i, status in enumerate(base)]
    columns = pl.DataFrame({**stressed, "robust_verdict": [r[0] for r in robust],
                            "robust_reason": [r[1] for r in robust]}, schema=ROBUST_SCHEMA)
    return pl.concat([rows, columns], how="horizontal")


def ticker_backtests(signals: pl.DataFrame, prices: pl.DataFrame, grid: SessionGrid, tickers: Sequence[str],
                     end_dates: Sequence[dt.date], rules: BacktestRules,
                     progress: Callable[[str], None] | None = None) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """Per ticker and end date: the backtest of the final signals with the forecast-only twin's
    attribution beside it (backtest_with_attribution) and the verdicts under STRESSES
    (with_robust_verdicts), and each ticker's window series of the last date with both equity
    curves. `signals` need forecast_action, kelly_fraction and rules too."""
    ledger, calls = ledger_and_calls(signals, prices, grid, rules.sizing, rules.delay_sessions)
    twin_ledger, twin_calls = ledger_and_calls(forecast_only_signals(signals), prices, grid, rules.sizing,
                                               rules.delay_sessions)
    delayed = {extra: ticker_ledger(signals, prices, grid, rules.sizing, rules.delay_sessions + extra)
               for extra in STRESS_EXTRA_DELAYS if extra}
    frames, series = [], {}
    for ticker in tickers:
        final, twin = (frame.filter(pl.col("ticker") == ticker) for frame in (ledger, twin_ledger))
        own_calls, own_twin_calls = (c.filter(pl.col("ticker") == ticker) for c in (calls, twin_calls))
        own_signals = signals.filter(pl.col("ticker") == ticker)
        rows = backtest_with_attribution(final, twin, own_calls, own_twin_calls, end_dates, rules,
                                         clean_from_index(own_signals, final["date"].to_list(), rules),
                                         cutoff_note(own_signals))
        stressed = {0: final} | {extra: frame.filter(pl.col("ticker") == ticker) for extra, frame in delayed.items()}
        frames.append(with_robust_verdicts(rows, stressed, end_dates, rules).with_columns(pl.lit(ticker).alias("ticker")))
        series[ticker] = window_series(final, max(end_dates), rules, twin)
        if progress:
            progress(f"backtests: {ticker} done ({len(end_dates)} windows)")
    return pl.concat(frames), series
