"""`target_weights`: per trading day, the portfolio the day's validated signals ask for
(pm_domain/paper/weights.py): one weight per ticker, the method, the caps applied and why a
signal was not traded."""

import time
from typing import Literal

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MultiToSingleDimensionPartitionMapping,
    asset,
)
from dagster_duckdb import DuckDBResource
from pydantic import Field

from pm_assets.inputs import require_partitions
from pm_assets.metadata import run_metadata
from pm_assets.partitions import TICKERS_PARTITIONS_NAME, UNIVERSE_ASSET_ARGS, PartitionSelection, universe_selection
from pm_domain import calendar, settings
from pm_domain.paper.weights import WEIGHT_METHODS, WeightRules, caps_violations, target_weights as weigh
from pm_domain.signal_validation import LAYERS
from pm_resources.store import PartitionRows, query, read_rows, table_exists, write_partitions

PAPER_GROUP = "paper"
DEFAULT_RULES = WeightRules()  # the config's defaults, but the method (PM_PAPER_WEIGHTS)
SAME_DATE = MultiToSingleDimensionPartitionMapping(partition_dimension_name="date")


class TargetWeightsConfig(Config):
    method: Literal["signal_kelly", "equal", "inverse_volatility", "hierarchical_risk_parity",
                    "minimum_variance"] = Field(default=settings.paper_weight_method(), description=(
        ", ".join(WEIGHT_METHODS) + "; the default is PM_PAPER_WEIGHTS (signal_kelly unless set)"))
    max_weight: float = Field(default=DEFAULT_RULES.max_weight, gt=0, le=1, description="per-ticker cap on |weight|")
    max_gross: float = Field(default=DEFAULT_RULES.max_gross, gt=0, le=2, description="cap on the sum of |weight|")
    allow_shorts: bool = Field(default=DEFAULT_RULES.allow_shorts, description="off: a SELL signal is flat")
    window_sessions: int = Field(default=DEFAULT_RULES.window_sessions, ge=21, le=2520,
                                 description="returns the skfolio methods are fitted on")
    untradeable_layers: list[str] = Field(default=list(LAYERS), description="a signal failing one of these layers is not traded")

    def rules(self) -> WeightRules:
        return WeightRules(self.method, self.max_weight, self.max_gross, self.allow_shorts, self.window_sessions,
                           tuple(self.untradeable_layers))


CAPS_HELP = ("blocks: a weight above the per-ticker cap, weights summing above the gross cap, or a short "
             "while shorts are off")


@asset(
    **UNIVERSE_ASSET_ARGS,
    group_name=PAPER_GROUP,
    deps=[AssetDep("llm_signals", partition_mapping=SAME_DATE), AssetDep("prices", partition_mapping=SAME_DATE)],
    check_specs=[AssetCheckSpec("weights_within_caps", asset="target_weights", blocking=True, description=CAPS_HELP)],
    description="Per trading day: the weight per ticker the day's signals ask for (signal_kelly by default; equal, "
    "or skfolio's inverse_volatility, hierarchical_risk_parity, minimum_variance fitted on the trailing "
    f"returns up to the date), capped per ticker ({DEFAULT_RULES.max_weight:.0%}) and in gross "
    f"({DEFAULT_RULES.max_gross:.0%}), long-only by default, cash the "
    "remainder. A signal failing a validation layer is not traded and the row says why.",
)
def target_weights(context: AssetExecutionContext, config: TargetWeightsConfig, duckdb: DuckDBResource) -> MaterializeResult:
    began = time.perf_counter()
    rules = config.rules()
    selection = universe_selection(context.partition_keys, context.instance.get_dynamic_partitions(TICKERS_PARTITIONS_NAME))
    tickers, dates = selection.tickers, selection.dates
    signals, closes = read_weight_inputs(duckdb, selection, rules.window_sessions)
    require_partitions(signals, "llm_signals", selection)
    rows = weigh(signals, closes, rules)
    with duckdb.get_connection() as conn:
        write_partitions(conn, tickers, dates, [PartitionRows("target_weights", rows, ("date", "ticker"))])
    last = rows.filter(pl.col("date") == selection.end)
    context.log.info(f"{rows['traded'].sum()} of {rows.height} signals traded over {len(dates)} date(s); "
                     f"{selection.end}: gross {last['gross_exposure'].max() or 0:.1%}, cash {last['cash_weight'].max() or 1:.1%}")
    violations = caps_violations(rows, rules)
    return MaterializeResult(
        metadata=run_metadata(context, selection, rows, ["date", "ticker", "action", "weight", "caps_applied", "reason"], began=began)
        | {"traded_signals": int(rows["traded"].sum()), "method": rules.method},
        check_results=[AssetCheckResult(
            check_name="weights_within_caps", passed=violations.height == 0,
            description=f"{violations.height} date(s) break a cap",
            metadata={"examples": ", ".join(str(d) for d in violations["date"].head(3).to_list()) or "none"})],
    )


def read_weight_inputs(duckdb: DuckDBResource, selection: PartitionSelection,
                       window_sessions: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The run's llm_signals (with the signal model's digest where llm_calls knows it) and the
    closes from `window_sessions` sessions before the run's first date to its last."""
    first_close = calendar.shift_trading_days(selection.start, -(window_sessions + 1))
    with duckdb.get_connection() as conn:
        signals = read_rows(conn, "llm_signals", selection.tickers, selection.end, selection.start)
        prices = read_rows(conn, "prices", selection.tickers, selection.end, first_close)
        digests = query(conn, "SELECT ticker, date, any_value(model_digest) AS model_digest FROM llm_calls "
                              "WHERE stage = 'signal' AND date BETWEEN ? AND ? GROUP BY ticker, date",
                        [selection.start, selection.end]) if table_exists(conn, "llm_calls") else None
    if signals.height:
        signals = (signals.join(digests, on=["ticker", "date"], how="left") if digests is not None and digests.height
                   else signals.with_columns(pl.lit(None, pl.String).alias("model_digest")))
    closes = prices.select("ticker", "date", "close") if prices.height else pl.DataFrame(
        schema={"ticker": pl.String, "date": pl.Date, "close": pl.Float64})
    return signals, closes
