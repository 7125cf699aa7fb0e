"""Trading signals, time-series first: the forecast proposes, the LLM may confirm or veto.

A signal for date t uses data up to the close of t and trades at t+1; `entry_price` is the close
of t, the reference the stop and target distances are measured from.

Rule (defaults from the previous system, all in `SignalRules`):
- confidence = Phi(|mu| / sigma), the forecast distribution's probability that the H-session
  move has the forecast's sign (mu, sigma: ensemble log-return forecast and its sigma);
- BUY (SELL) when mu > 0 (< 0), confidence >= 0.55, |exp(mu) - 1| - round-trip cost >= 0.3% and
  risk score <= 0.7; otherwise HOLD, with the rule that held it back;
- stop distance = max(2 x ATR14 / close, 1.5%); target distance = max(2 x stop, expected move);
- size = half-Kelly, f* = p - (1 - p) / b with b = target / stop and p the ticker's measured
  directional hit rate so far (never the confidence), capped at 25%; 0 with under 20 outcomes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
from scipy.stats import norm

LLMRole = Literal["off", "veto", "confirm"]


@dataclass(frozen=True)
class SignalRules:
    horizon: int = 5
    min_confidence: float = 0.55
    min_net_return: float = 0.003
    max_risk_score: float = 0.7
    round_trip_cost: float = 0.001  # 10 bps: commission plus half-spread, both ways
    atr_stop_multiple: float = 2.0
    min_stop: float = 0.015
    min_reward_risk: float = 2.0
    kelly_share: float = 0.5
    max_position: float = 0.25
    min_hit_observations: int = 20
    hit_window: int = 250
    llm_role: LLMRole = "veto"
    veto_confidence: float = 0.6


def directional_hit_rates(
    forecasts: pl.DataFrame, prices: pl.DataFrame, dates: Sequence[dt.date], horizon: int, window: int
) -> pl.DataFrame:
    """Per (ticker, date t): the share of the last `window` forecasts whose sign matched the
    realised `horizon`-session log return, over origins o whose outcome was known at t
    (o + horizon sessions <= t). Zero forecasts are not calls and are skipped.

    forecasts: ticker, date, expected_log_return at this horizon; prices: ticker, date, price.
    Returns ticker, date, hit_rate (null without outcomes), hit_observations.
    """
    rows = []
    for ticker, history in prices.sort("date").partition_by("ticker", as_dict=True).items():
        ticker = ticker[0]
        days = history["date"].to_list()
        position = {day: i for i, day in enumerate(days)}
        log_price = np.log(history["price"].to_numpy())
        calls = forecasts.filter((pl.col("ticker") == ticker) & (pl.col("expected_log_return") != 0))
        origin_index = np.array([position.get(d, -1) for d in calls["date"].to_list()], dtype=int)
        keep = (origin_index >= 0) & (origin_index + horizon < len(days))
        origin_index, expected = origin_index[keep], calls["expected_log_return"].to_numpy()[keep]
        realised = log_price[origin_index + horizon] - log_price[origin_index]
        known_outcome = np.isfinite(realised)  # a missing price is no outcome, not a miss
        origin_index, expected, realised = origin_index[known_outcome], expected[known_outcome], realised[known_outcome]
        hits = (np.sign(expected) == np.sign(realised)).astype(float)
        known_at = origin_index + horizon  # the session whose close reveals the outcome
        order = np.argsort(known_at, kind="stable")
        known_at, hits = known_at[order], hits[order]
        for day in dates:
            if day not in position:
                continue
            known = hits[: np.searchsorted(known_at, position[day], side="right")][-window:]
            rows.append((ticker, day, float(known.mean()) if known.size else None, int(known.size)))
    return pl.DataFrame(rows, schema={"ticker": pl.String, "date": pl.Date, "hit_rate": pl.Float64,
                                      "hit_observations": pl.Int64}, orient="row")


def forecast_signals(frame: pl.DataFrame, rules: SignalRules) -> pl.DataFrame:
    """Add the forecast's own signal. Needs: expected_log_return, sigma (at rules.horizon), close,
    atr_14, risk_score. Adds forecast_action, forecast_confidence, expected_return,
    expected_return_net, stop_distance, target_distance, reward_risk, hold_reason."""
    mu, sigma = pl.col("expected_log_return"), pl.col("sigma")
    z = (mu.abs() / sigma).fill_nan(None)
    frame = frame.with_columns(
        pl.Series("forecast_confidence", norm.cdf(frame.select(z).to_series().to_numpy().astype(float))),
        (mu.exp() - 1).alias("expected_return"),
    ).with_columns(
        pl.col("forecast_confidence").fill_nan(None),
        (pl.col("expected_return").abs() - rules.round_trip_cost).alias("expected_return_net"),
        pl.max_horizontal(rules.atr_stop_multiple * pl.col("atr_14") / pl.col("close"),
                          pl.lit(rules.min_stop)).alias("stop_distance"),
    ).with_columns(
        pl.max_horizontal(rules.min_reward_risk * pl.col("stop_distance"),
                          pl.col("expected_return").abs()).alias("target_distance"),
    ).with_columns((pl.col("target_distance") / pl.col("stop_distance")).alias("reward_risk"))
    hold_reason = (
        pl.when(mu.is_null() | sigma.is_null()).then(pl.lit("no ensemble forecast"))
        .when(pl.col("forecast_confidence") < rules.min_confidence)
        .then(pl.format("confidence {} < {}", pl.col("forecast_confidence").round(3), pl.lit(rules.min_confidence)))
        .when(pl.col("expected_return_net") < rules.min_net_return)
        .then(pl.format("expected return net of costs {} < {}", pl.col("expected_return_net").round(4), pl.lit(rules.min_net_return)))
        .when(pl.col("atr_14").is_null()).then(pl.lit("no ATR14 to set the stop"))
        .when(pl.col("risk_score").is_null()).then(pl.lit("no risk score"))
        .when(pl.col("risk_score") > rules.max_risk_score)
        .then(pl.format("risk score {} > {}", pl.col("risk_score").round(3), pl.lit(rules.max_risk_score)))
    )
    return frame.with_columns(hold_reason.alias("hold_reason")).with_columns(
        pl.when(pl.col("hold_reason").is_not_null()).then(pl.lit("HOLD"))
        .when(mu > 0).then(pl.lit("BUY")).otherwise(pl.lit("SELL")).alias("forecast_action")
    )


def route(frame: pl.DataFrame, rules: SignalRules) -> pl.DataFrame:
    """The final action and who decided it. Needs forecast_action and llm_action, llm_confidence,
    llm_source. The LLM can only hold a trade back, never open or reverse one, and a reply from
    the fallback is no opinion at all.

    veto: a BUY/SELL becomes HOLD when the LLM says otherwise with confidence >= veto_confidence
      (decided_by llm_veto); without an LLM opinion the forecast decides.
    confirm: a BUY/SELL stands only when the LLM says the same; with no LLM opinion (fallback) it
      is not confirmed and becomes HOLD (decided_by unconfirmed).
    off: the LLM's reply is stored but not used."""
    llm_heard = pl.col("llm_source").is_in(["ollama", "cache"]) & (rules.llm_role != "off")
    trade = pl.col("forecast_action") != "HOLD"
    agrees = (pl.col("llm_action") == pl.col("forecast_action")).fill_null(False)
    if rules.llm_role == "confirm":
        vetoed = trade & llm_heard & ~agrees
        unconfirmed = trade & ~llm_heard
    else:
        vetoed = trade & llm_heard & ~agrees & (pl.col("llm_confidence") >= rules.veto_confidence).fill_null(False)
        unconfirmed = pl.lit(False)
    return frame.with_columns(
        pl.when(vetoed | unconfirmed).then(pl.lit("HOLD")).otherwise(pl.col("forecast_action")).alias("action"),
        pl.when(vetoed).then(pl.lit("llm_veto"))
        .when(unconfirmed).then(pl.lit("unconfirmed"))
        .when(llm_heard & trade & agrees).then(pl.lit("forecast+llm"))
        .otherwise(pl.lit("forecast")).alias("decided_by"),
    )


def kelly_fraction(hit_rate: float, reward_risk: float) -> float:
    """Kelly f* = p - (1 - p) / b for a bet that wins b per unit lost with probability p."""
    return hit_rate - (1.0 - hit_rate) / reward_risk


def size_positions(frame: pl.DataFrame, rules: SignalRules) -> pl.DataFrame:
    """position_size = clip(kelly_share x f*, 0, max_position) for BUY/SELL, 0 for HOLD; p is the
    measured hit rate, and with fewer than min_hit_observations outcomes the size is 0."""
    enough = (pl.col("hit_observations") >= rules.min_hit_observations).fill_null(False)
    kelly = pl.col("hit_rate") - (1 - pl.col("hit_rate")) / pl.col("reward_risk")
    return frame.with_columns(
        pl.when(enough).then(kelly).alias("kelly_fraction"),
        pl.when(pl.col("action") == "HOLD").then(0.0)
        .when(~enough).then(0.0)
        .otherwise((rules.kelly_share * kelly).clip(0.0, rules.max_position)).alias("position_size"),
        pl.when(pl.col("action") == "HOLD").then(pl.lit("no position"))
        .when(~enough).then(pl.format("no size: {} outcomes < {}", pl.col("hit_observations"), pl.lit(rules.min_hit_observations)))
        .otherwise(pl.format("half-Kelly, p = {} over {} outcomes, b = {}", pl.col("hit_rate").round(3),
                             pl.col("hit_observations"), pl.col("reward_risk").round(2))).alias("sizing_basis"),
    )


def price_levels(frame: pl.DataFrame) -> pl.DataFrame:
    """entry = close of t; BUY: stop below, target above; SELL the mirror; HOLD: none."""
    side = pl.when(pl.col("action") == "BUY").then(1.0).when(pl.col("action") == "SELL").then(-1.0)
    return frame.with_columns(pl.col("close").alias("entry_price")).with_columns(
        (pl.col("entry_price") * (1 - side * pl.col("stop_distance"))).alias("stop_price"),
        (pl.col("entry_price") * (1 + side * pl.col("target_distance"))).alias("target_price"),
    )


def rule_reasoning(frame: pl.DataFrame, rules: SignalRules) -> pl.DataFrame:
    """The rule's own account of the signal, with the numbers it used."""
    move = pl.format("{}-session forecast {}% (net of costs {}%), P(direction) {}",
                     pl.lit(rules.horizon), (pl.col("expected_return") * 100).round(2),
                     (pl.col("expected_return_net") * 100).round(2), pl.col("forecast_confidence").round(3))
    return frame.with_columns(
        pl.when(pl.col("forecast_action") == "HOLD")
        # Without a forecast there is no move to report, but the reason still stands.
        .then(pl.concat_str([pl.format("HOLD: {}.", pl.col("hold_reason")), pl.format("{}.", move)],
                            separator=" ", ignore_nulls=True))
        .otherwise(pl.format("{}: {}, risk score {}; stop {}%, target {}% (reward/risk {}).",
                             pl.col("forecast_action"), move, pl.col("risk_score").round(3),
                             (pl.col("stop_distance") * 100).round(2),
                             (pl.col("target_distance") * 100).round(2), pl.col("reward_risk").round(2)))
        .alias("rule_reasoning")
    )


def decide(proposals: pl.DataFrame, rules: SignalRules) -> pl.DataFrame:
    """From the forecast's proposals (forecast_signals) joined with the LLM's opinion: routing,
    sizing, price levels, reasoning and the final confidence."""
    frame = size_positions(route(rule_reasoning(proposals, rules), rules), rules)
    frame = price_levels(frame)
    return frame.with_columns(
        pl.when(pl.col("decided_by").is_in(["forecast", "unconfirmed"]) | pl.col("llm_action").is_null())
        .then(pl.col("rule_reasoning"))
        .otherwise(pl.format("{} LLM ({}, confidence {}): {}", pl.col("rule_reasoning"),
                             pl.col("llm_action"), pl.col("llm_confidence").round(2), pl.col("llm_reasoning")))
        .alias("reasoning"),
        # The confidence of the final call: the forecast's probability of its direction, or, for
        # a trade the LLM held back, the LLM's confidence in its contrary call.
        pl.when(pl.col("action") == pl.col("forecast_action")).then(pl.col("forecast_confidence"))
        .otherwise(pl.col("llm_confidence")).alias("confidence"),
    )


def unchanged_sessions(prices: pl.DataFrame) -> pl.DataFrame:
    """Per (ticker, date): how many sessions in a row, ending at date, the close did not move
    (0 when it moved today). A feed that stopped updating shows as a growing count."""
    same = (pl.col("close") == pl.col("close").shift(1).over("ticker")).fill_null(False)
    return (
        prices.sort("ticker", "date")
        .with_columns(same.alias("_same"))
        .with_columns((~pl.col("_same")).cum_sum().over("ticker").alias("_run"))
        .with_columns(pl.col("_same").cast(pl.Int64).cum_sum().over("ticker", "_run").alias("unchanged_sessions"))
        .select("ticker", "date", "unchanged_sessions")
    )
