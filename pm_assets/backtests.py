"""`backtests`: per ticker and date, the walk-forward performance of the stored signals over the
trailing window after costs, against buy-and-hold of the same days, with the validation verdict."""

import time
from collections.abc import Sequence
from typing import Literal

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_duckdb import DuckDBResource
from pydantic import Field

from pm_assets.inputs import require_partitions
from pm_assets.metadata import add_plot, last_date_keys, preview_markdown, run_metadata
from pm_assets.partitions import STAGE_ASSET_ARGS, PartitionSelection, decode_partition_keys, lookback_mapping
from pm_domain import calendar, plots
from pm_domain.attribution import LLM_VERDICTS
from pm_domain.backtest import ROBUST_VERDICTS, STRESS_DELAY_SESSIONS, STRESSES, BacktestRules, ticker_backtests
from pm_domain.forecasting.engine import price_rows
from pm_domain.outcomes import SessionGrid
from pm_domain.signals import SignalRules, kelly_name
from pm_resources.store import read_rows, replace_partitions

DEFAULT_RULES = BacktestRules()
# A window of W sessions earns returns from T-W+1, which needs the price of T-W and the signal
# of T-W-1 (positions are the signal of two sessions before), and for the verdict under one
# session more of delay (pm_domain.backtest.STRESSES) the signal of T-W-2, so that its window
# has the same sessions.
SIGNAL_LOOKBACK_SESSIONS = DEFAULT_RULES.window_sessions + DEFAULT_RULES.position_lag + STRESS_DELAY_SESSIONS
PRICE_LOOKBACK_SESSIONS = DEFAULT_RULES.window_sessions + 1
SIGNAL_COLUMNS = ["ticker", "date", "action", "confidence", "position_size", "horizon", "forecast_action",
                  "kelly_fraction", "rules", "knowledge_cutoff", "after_cutoff"]
METRICS_TABLE_COLUMNS = ["ticker", "date", "sessions", "total_return", "annual_return", "buy_hold_total_return",
                         "sharpe", "sortino", "max_drawdown", "calmar", "alpha", "beta", "hit_rate", "calls",
                         "profit_factor", "trades", "exposure", "brier_score", "sharpe_ci_lower",
                         "sharpe_ci_upper", "probabilistic_sharpe", "verdict", "robust_verdict"]
ATTRIBUTION_TABLE_COLUMNS = ["date", "total_return", "forecast_only_total_return", "sharpe", "forecast_only_sharpe",
                             "llm_delta_sharpe", "llm_sharpe_delta_ci_lower", "llm_sharpe_delta_ci_upper",
                             "llm_held_back", "llm_clean_sessions", "llm_verdict", "contaminated_llm_verdict"]


class BacktestsConfig(Config):
    window_sessions: int = Field(default=DEFAULT_RULES.window_sessions, ge=2, description=(
        f"trailing sessions per backtest; the declared lineage is the default {DEFAULT_RULES.window_sessions}"))
    cost_bps: float = Field(default=DEFAULT_RULES.cost_bps, ge=0.0, le=500.0,
                            description="cost in basis points per unit of position changed")
    sizing: Literal["unit", "signal"] = Field(default=DEFAULT_RULES.sizing, description=(
        f"unit: +1 BUY / -1 SELL / 0 HOLD; signal: times the signal's {kelly_name(SignalRules().kelly_share)} "
        "position_size"))
    risk_free_rate: float = Field(default=DEFAULT_RULES.risk_free_rate, ge=-0.05, le=0.5, description="annual")
    bootstrap_replications: int = Field(default=DEFAULT_RULES.bootstrap_replications, ge=100, le=20_000)
    bootstrap_block: float = Field(default=DEFAULT_RULES.bootstrap_block, ge=1.0, le=100.0,
                                   description="mean block length of the stationary bootstrap, sessions")
    min_annual_return: float = Field(default=DEFAULT_RULES.min_annual_return)
    min_sessions: int = Field(default=DEFAULT_RULES.min_sessions, ge=2)
    min_probabilistic_sharpe: float = Field(default=DEFAULT_RULES.min_probabilistic_sharpe, ge=0.0, le=1.0)
    delay_sessions: int = Field(default=DEFAULT_RULES.delay_sessions, ge=0, le=20, description=(
        "sessions of delay beyond entering at the close after the signal; the declared lineage is 0"))

    def rules(self) -> BacktestRules:
        return BacktestRules(**self.model_dump())


def read_backtest_inputs(duckdb: DuckDBResource, tickers: list[str], selection: PartitionSelection,
                         rules: BacktestRules) -> tuple[SessionGrid, pl.DataFrame, pl.DataFrame]:
    """The session grid, the signals and the prices (ticker, date, price) the windows ending at
    the selection's dates need, for `tickers`."""
    first = calendar.shift_trading_days(selection.start,
                                        -(rules.window_sessions + rules.position_lag + STRESS_DELAY_SESSIONS))
    with duckdb.get_connection() as conn:
        signals = read_rows(conn, "llm_signals", tickers, selection.end, first)
        prices = read_rows(conn, "prices", tickers, selection.end, first)
    if signals.width and "forecast_action" not in signals.columns:
        # Signals stored before the LLM's own call was kept: no held-back trade is known, so the
        # forecast-only twin equals the final signal (the attribution says no_difference).
        signals = signals.with_columns(pl.col("action").alias("forecast_action"),
                                       pl.lit(None, pl.Float64).alias("kelly_fraction"), pl.lit(None, pl.String).alias("rules"))
    if signals.width and "after_cutoff" not in signals.columns:
        # Signals stored before cutoffs were recorded: what the model knew is unknown, so contaminated.
        signals = signals.with_columns(pl.lit(None, pl.Date).alias("knowledge_cutoff"),
                                       pl.lit(False).alias("after_cutoff"))
    signals = signals.select(SIGNAL_COLUMNS) if signals.width else pl.DataFrame(
        schema={"ticker": pl.String, "date": pl.Date, "action": pl.String, "confidence": pl.Float64,
                "position_size": pl.Float64, "horizon": pl.Int64, "forecast_action": pl.String,
                "kelly_fraction": pl.Float64, "rules": pl.String, "knowledge_cutoff": pl.Date,
                "after_cutoff": pl.Boolean})
    return SessionGrid(first, selection.end), signals, price_rows(prices)


def backtest_metadata(context: AssetExecutionContext, rows: pl.DataFrame, series: dict[str, pl.DataFrame],
                      key_column: str, plot_keys: Sequence[str]) -> dict:
    """The metrics table of the run's last date, and the equity / drawdown plot on `plot_keys`
    (the last date's partitions it draws)."""
    last = rows.filter(pl.col("date") == rows["date"].max())
    verdicts = dict(rows.group_by("verdict").len().iter_rows())
    robust = dict(rows.group_by("robust_verdict").len().iter_rows())
    metadata = {
        "metrics": MetadataValue.md(preview_markdown(last, [key_column, *METRICS_TABLE_COLUMNS[1:]], rows=20)),
        "llm_attribution": MetadataValue.md(preview_markdown(last, [key_column, *ATTRIBUTION_TABLE_COLUMNS], rows=20)),
        **{f"llm_verdict_{v}": int((rows["llm_verdict"] == v).sum()) for v in LLM_VERDICTS},
        "verdicts": MetadataValue.md("\n".join(
            f"- **{r[key_column]}** {r['date']}: {r['verdict']}: {r['verdict_reason']}; robust_verdict "
            f"{r['robust_verdict']}: {r['robust_reason']}" for r in last.head(10).iter_rows(named=True))),
        **{f"verdict_{v}": verdicts.get(v, 0) for v in ("passed", "failed", "insufficient_data")},
        **{f"robust_verdict_{v}": robust.get(v, 0) for v in ROBUST_VERDICTS},
    }
    drawable = {name: frame for name, frame in series.items() if frame.height}
    if drawable:
        metadata |= add_plot(context, "equity_curve", plots.png_markdown(
            plots.equity_drawdown_png(drawable), "strategy equity against buy and hold, and drawdown"), plot_keys)
    return metadata


INPUTS_COMPLETE_HELP = ("warn: every backtest row has its metrics (a window with too few sessions, prices or "
                        "signals is stored as insufficient_data with the reason)")


def insufficient_check(rows: pl.DataFrame, asset_name: str, key_column: str) -> AssetCheckResult:
    missing = rows.filter(pl.col("verdict") == "insufficient_data")
    return AssetCheckResult(
        check_name="backtest_inputs_complete",
        asset_key=asset_name,
        passed=missing.height == 0,
        severity=AssetCheckSeverity.WARN,
        description=f"{missing.height} of {rows.height} backtest row(s) have no metrics: the reason is stored",
        metadata={"examples": "; ".join(f"{r[key_column]} {r['date']}: {r['verdict_reason']}"
                                        for r in missing.head(3).iter_rows(named=True)) or "none"},
    )


@asset(
    **STAGE_ASSET_ARGS,
    group_name="evaluation",
    deps=[
        AssetDep("llm_signals", partition_mapping=lookback_mapping(SIGNAL_LOOKBACK_SESSIONS)),
        AssetDep("prices", partition_mapping=lookback_mapping(PRICE_LOOKBACK_SESSIONS)),
    ],
    check_specs=[AssetCheckSpec("backtest_inputs_complete", asset="backtests", description=INPUTS_COMPLETE_HELP)],
    description=f"Per ticker and date: the stored signals traded over the trailing {DEFAULT_RULES.window_sessions} "
    f"sessions (entered at the close after the signal, {DEFAULT_RULES.cost_bps:g} bps per unit of position "
    "changed) against buy-and-hold of the same days: CAGR, volatility, Sharpe, Sortino, max drawdown, Calmar, "
    f"alpha/beta, hit rate, profit factor, trades, exposure, Brier score, bootstrap {DEFAULT_RULES.interval:.0%} "
    "interval of the Sharpe and probabilistic Sharpe, and the verdict naming each failed criterion, with "
    f"the verdict again under {', '.join(stress.label for stress in STRESSES)} (robust_verdict); beside "
    "them the forecast-only twin (the LLM's veto/confirm off) over the same days, the difference, "
    "and whether the LLM adds, removes or makes no difference (paired bootstrap of the Sharpe).",
)
def backtests(context: AssetExecutionContext, config: BacktestsConfig, duckdb: DuckDBResource) -> MaterializeResult:
    began = time.perf_counter()
    selection = decode_partition_keys(context.partition_keys)
    rules = config.rules()
    grid, signals, prices = read_backtest_inputs(duckdb, list(selection.tickers), selection, rules)
    require_partitions(signals.filter(pl.col("date") >= selection.start), "llm_signals", selection)
    frame, series = ticker_backtests(signals, prices, grid, selection.tickers, selection.dates, rules,
                                     progress=context.log.info)
    rows = frame.with_columns(
        pl.lit(rules.sizing).alias("sizing"), pl.lit(rules.cost_bps).alias("cost_bps"),
        pl.lit(rules.as_json()).alias("rules"),
    ).select("ticker", pl.exclude("ticker"))
    with duckdb.get_connection() as conn:
        replace_partitions(conn, "backtests", rows, selection.tickers, selection.dates)
    context.log.info(f"wrote {rows.height} backtests over {selection.describe()}")
    return MaterializeResult(
        metadata=run_metadata(context, selection, rows, ["ticker", "date", "total_return", "sharpe", "max_drawdown",
                                                "hit_rate", "verdict"], began=began)
        | backtest_metadata(context, rows, series, "ticker",
                            last_date_keys(selection, [t for t in series if series[t].height][:plots.MAX_PANELS])),
        check_results=[insufficient_check(rows, "backtests", "ticker")],
    )

