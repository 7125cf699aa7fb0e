"""Walk-forward backtests of stored signals: a daily ledger, trailing-window metrics after costs
against buy-and-hold of the same days, and the validation verdict.

Timing (no look-ahead): the signal of session t uses the close of t, is entered at the close of
t+1 and so first earns the return of session t+2. The position over session d is therefore the
signal of d-2: p_d = e_{d-2}, with e = +1 BUY, -1 SELL, 0 HOLD ("unit" sizing) or that sign times
the signal's position_size ("signal" sizing). HOLD means flat: each day's signal sets the next
position, stops and targets are not simulated (daily closes cannot see intraday levels).

Net return of session d: n_d = p_d r_d - c |p_d - p_{d-1}|, c = cost_bps / 10,000 per unit of
position changed, charged on the first day the new position earns. A backtest window starts
flat, so its first day pays c |p_first|.

The window of the backtest dated T is the last `window_sessions` exchange sessions ending at T,
from the first session with a position (the signals' start) on. Sessions are counted on the
exchange calendar: a missing price or signal inside the window is not skipped, it makes the row
null with a reason.

The modules, in reading order:
- rules.py: BacktestRules, the stored columns, why a window has no metrics, the verdict, STRESSES;
- ledger.py: the daily ledgers (a ticker's, the portfolio book's) and the scored calls;
- reference.py: one window at a time, each metric a pm_domain.performance function on its days;
- fast.py: the same numbers for every window at once, what production runs;
- walk_forward.py: the backtests asset's per-ticker loop, with the stressed verdicts.
"""

from .fast import backtest_with_attribution, verdict_statuses, window_metrics, window_series
from .ledger import (
    backtest_core,
    clean_from_index,
    cutoff_note,
    ledger_and_calls,
    portfolio_ledger,
    scored_calls,
    signal_exposure,
    strategy_returns,
    ticker_ledger,
)
from .rules import (
    BACKTEST_SCHEMA,
    CONTAMINATED_COLUMNS,
    METRIC_COLUMNS,
    PORTFOLIO_WEIGHTINGS,
    POSITION_LAG_SESSIONS,
    ROBUST_SCHEMA,
    ROBUST_VERDICTS,
    STRESS_DELAY_SESSIONS,
    STRESS_EXTRA_DELAYS,
    STRESSES,
    BacktestRules,
    Stress,
    robust_verdict,
    verdict,
)
from .walk_forward import ticker_backtests, with_robust_verdicts

__all__ = [
    "BACKTEST_SCHEMA", "CONTAMINATED_COLUMNS", "METRIC_COLUMNS", "PORTFOLIO_WEIGHTINGS", "POSITION_LAG_SESSIONS",
    "ROBUST_SCHEMA", "ROBUST_VERDICTS", "STRESS_DELAY_SESSIONS", "STRESS_EXTRA_DELAYS", "STRESSES", "BacktestRules",
    "Stress", "backtest_core", "backtest_with_attribution", "clean_from_index", "cutoff_note", "ledger_and_calls",
    "portfolio_ledger", "robust_verdict", "scored_calls", "signal_exposure", "strategy_returns", "ticker_backtests",
    "ticker_ledger", "verdict", "verdict_statuses", "window_metrics", "window_series", "with_robust_verdicts",
]
