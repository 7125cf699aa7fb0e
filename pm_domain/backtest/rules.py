"""What a backtest is and how it is judged, for both paths (reference.py and fast.py): the rules,
the stored columns, why a window has no metrics, the verdict, and the stresses a verdict is
recomputed under."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import polars as pl

from pm_domain import performance as perf
from pm_domain.outcomes import ENTRY_LAG_SESSIONS

# The position over session d is the signal of d - POSITION_LAG_SESSIONS: entered at the next
# close, earning from the session after.
POSITION_LAG_SESSIONS = ENTRY_LAG_SESSIONS + 1
PORTFOLIO_WEIGHTINGS = ("equal", "position_size")

METRIC_COLUMNS = [
    "total_return", "annual_return", "volatility", "sharpe", "sortino", "max_drawdown", "calmar",
    "alpha", "beta", "buy_hold_total_return", "buy_hold_annual_return", "buy_hold_sharpe",
    "buy_hold_max_drawdown", "excess_return", "hit_rate", "calls", "profit_factor", "trades",
    "exposure", "brier_score", "sharpe_ci_lower", "sharpe_ci_upper", "probabilistic_sharpe",
]
COUNT_COLUMNS = ("calls", "trades")
BACKTEST_SCHEMA = {
    "date": pl.Date, "window_start": pl.Date, "sessions": pl.Int64,
    **{c: (pl.Int64 if c in COUNT_COLUMNS else pl.Float64) for c in METRIC_COLUMNS},
    "verdict": pl.String, "verdict_failed": pl.List(pl.String), "verdict_reason": pl.String,
    "position": pl.Float64, "asset_return": pl.Float64, "net_return": pl.Float64,
}
# What the LLM's Sharpe difference over a window's sessions before its knowledge cutoff is stored as.
CONTAMINATED_COLUMNS = ("llm_delta_sharpe", "llm_sharpe_delta_ci_lower", "llm_sharpe_delta_ci_upper", "llm_verdict")


@dataclass(frozen=True)
class BacktestRules:
    window_sessions: int = 252
    # Per unit of position changed: a 0.1% round trip (SignalRules.round_trip_cost) is 5 bps in
    # and 5 bps out.
    cost_bps: float = 5.0
    sizing: Literal["unit", "signal"] = "unit"
    risk_free_rate: float = 0.0  # annual, as a daily rate rf / 252 in Sharpe, Sortino and alpha
    bootstrap_replications: int = 1000
    bootstrap_block: float = 10.0  # mean block length in sessions
    bootstrap_seed: int = 42
    interval: float = 0.90
    # The old system's criteria, and the two statistics it lacked.
    min_annual_return: float = 0.10
    min_sessions: int = 30
    min_probabilistic_sharpe: float = 0.95
    # Extra sessions between a signal and its entry: p_d = e_{d - POSITION_LAG_SESSIONS - delay_sessions}
    # (the verdict is also recomputed with one session more: STRESSES).
    delay_sessions: int = 0

    def __post_init__(self) -> None:
        if self.window_sessions < 2:
            raise ValueError(f"window_sessions must be at least 2, got {self.window_sessions}")
        if self.delay_sessions < 0:
            raise ValueError(f"delay_sessions must be >= 0, got {self.delay_sessions}")
        if self.sizing not in ("unit", "signal"):
            raise ValueError(f"sizing must be 'unit' or 'signal', got {self.sizing!r}")
        if not 0 < self.interval < 1:
            raise ValueError(f"interval must be in (0, 1), got {self.interval}")

    @property
    def cost_rate(self) -> float:
        return self.cost_bps / 10_000

    @property
    def daily_risk_free(self) -> float:
        return self.risk_free_rate / perf.TRADING_DAYS_PER_YEAR

    @property
    def position_lag(self) -> int:
        """Sessions from a signal to the first session its position earns."""
        return POSITION_LAG_SESSIONS + self.delay_sessions

    def as_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


# --- why a window has no metrics ----------------------------------------------------------------

def no_signal_reason(start: dt.date, end: dt.date, rules: BacktestRules) -> str:
    return (f"no signal in the {rules.window_sessions}-session window {start}..{end} "
            f"(a position needs a signal {rules.position_lag} sessions earlier)")


def missing_signals_reason(count: int, first_gap: dt.date, rules: BacktestRules) -> str:
    return (f"signals missing for {count} session(s) inside the window, first for the position "
            f"of {first_gap} (materialize llm_signals {rules.position_lag} sessions before)")


def missing_prices_reason(count: int, first_gap: dt.date) -> str:
    return (f"prices missing: no return for {count} session(s) inside the window, first "
            f"{first_gap} (a gap in prices; materialize prices for it)")


def no_clean_session_reason(cutoff_note: str) -> str:
    return f"no session after the LLM's knowledge cutoff in the window{cutoff_note}"


NO_CONTAMINATED_SESSION = "no session on or before the LLM's knowledge cutoff in the window"


# --- the verdict ---------------------------------------------------------------------------------

def verdict(row: dict, reason: str | None, rules: BacktestRules) -> tuple[str, list[str], str]:
    """("passed" | "failed" | "insufficient_data", the failed criteria, why). A criterion whose
    metric is undefined fails: no verdict is given on a number that does not exist."""
    if reason is not None:
        return "insufficient_data", ["data"], reason

    def pct(value: float | None) -> str:
        return "undefined" if value is None else f"{value:.2%}"

    def num(value: float | None) -> str:
        return "undefined" if value is None else f"{value:.3f}"

    def above(value: float | None, bound: float) -> bool:
        return value is not None and value > bound

    criteria = [
        ("annual_return", above(row["annual_return"], rules.min_annual_return),
         f"annual return {pct(row['annual_return'])} <= {rules.min_annual_return:.0%}"),
        ("beats_buy_and_hold", above(row["excess_return"], 0.0),
         f"total return {pct(row['total_return'])} <= buy-and-hold {pct(row['buy_hold_total_return'])}"),
        ("min_sessions", row["sessions"] >= rules.min_sessions,
         f"{row['sessions']} sessions < {rules.min_sessions}"),
        ("sharpe_positive", above(row["sharpe"], 0.0), f"Sharpe {num(row['sharpe'])} <= 0"),
        ("sharpe_interval_positive", above(row["sharpe_ci_lower"], 0.0),
         f"{rules.interval:.0%} bootstrap interval of the Sharpe starts at {num(row['sharpe_ci_lower'])} <= 0"),
        ("probabilistic_sharpe", row["probabilistic_sharpe"] is not None
         and row["probabilistic_sharpe"] >= rules.min_probabilistic_sharpe,
         f"probabilistic Sharpe {num(row['probabilistic_sharpe'])} < {rules.min_probabilistic_sharpe}"),
    ]
    failed = [(name, why) for name, passed, why in criteria if not passed]
    if not failed:
        return "passed", [], "every criterion met"
    return "failed", [name for name, _ in failed], "; ".join(why for _, why in failed)


# --- stressed verdicts: costs and delay that bite -----------------------------------------------

@dataclass(frozen=True)
class Stress:
    """Harsher rules a backtest's verdict is recomputed under, for the same end dates: the cost
    times `cost_multiplier`, and `extra_delay_sessions` more sessions between signal and entry."""

    column: str
    label: str
    cost_multiplier: float = 1.0
    extra_delay_sessions: int = 0

    def rules(self, rules: BacktestRules) -> BacktestRules:
        return dataclasses.replace(rules, cost_bps=rules.cost_bps * self.cost_multiplier,
                                   delay_sessions=rules.delay_sessions + self.extra_delay_sessions)


# What a passed verdict must also survive to be robust: the one place docs/backtests.md follows.
STRESSES = (
    Stress("verdict_cost_2x", "2x cost", cost_multiplier=2.0),
    Stress("verdict_cost_5x", "5x cost", cost_multiplier=5.0),
    Stress("verdict_delay_1", "+1 session delay", extra_delay_sessions=1),
)
# The delays beyond the rules' own a stress needs a ledger for (0: the rules' own ledger), and
# the most of them: the signals' lookback covers it so a delayed window keeps the same days.
STRESS_EXTRA_DELAYS = tuple(sorted({0, *(stress.extra_delay_sessions for stress in STRESSES)}))
STRESS_DELAY_SESSIONS = max(STRESS_EXTRA_DELAYS)
ROBUST_VERDICTS = ("robust", "fragile", "failed", "insufficient_data")
ROBUST_SCHEMA = {**{stress.column: pl.String for stress in STRESSES},
                 "robust_verdict": pl.String, "robust_reason": pl.String}


def robust_verdict(base: str, stressed: Sequence[str]) -> tuple[str, str]:
    """(robust_verdict, robust_reason) of a backtest from its verdict and its verdicts under
    STRESSES (in that order): "robust" when it passed and passed every stress, "fragile" when it
    passed and failed at least one, "failed" when it failed unstressed, else "insufficient_data"
    (no data unstressed, or a passed verdict no stress failed but one lacked data for)."""
    if base == "insufficient_data":
        return "insufficient_data", "no verdict to stress: insufficient data"
    named = {status: [stress.label for stress, got in zip(STRESSES, stressed, strict=True) if got == status]
             for status in ("passed", "failed", "insufficient_data")}
    summary = "; ".join(f"{word} {', '.join(named[status])}" for status, word in
                        (("passed", "survives"), ("failed", "fails"), ("insufficient_data", "no data for"))
                        if named[status])
    if base == "failed":
        return "failed", f"failed before any stress ({summary})"
    if named["failed"]:
        return "fragile", summary
    if named["insufficient_data"]:
        return "insufficient_data", summary
    return "robust", summary
