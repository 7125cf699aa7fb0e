"""Trading signals, time-series first: the forecast proposes, the LLM may confirm or veto.

A signal for date t uses data up to the close of t and trades at t+1; `entry_price` is the close
of t, the reference the stop and target distances are measured from.

Rule (defaults from the previous system: every number is a field of `SignalRules`, and
`describe_gates` / `describe_stops_and_size` print them for descriptions and docs):
- confidence = Phi(|mu| / sigma), the forecast distribution's probability that the H-session
  move (H = horizon) has the forecast's sign (mu, sigma: ensemble log-return forecast and its sigma);
- BUY (SELL) when mu > 0 (< 0), confidence >= min_confidence, |exp(mu) - 1| - round_trip_cost >=
  min_net_return and risk score <= max_risk_score; otherwise HOLD, with the rule that held it back;
- stop distance = max(atr_stop_multiple x ATR14 / close, min_stop); target distance =
  max(min_reward_risk x stop, expected move);
- size = kelly_share x Kelly, f* = p - (1 - p) / b, capped at max_position, with p and b measured
  on the ticker's past trading calls (forecasts that passed the confidence and net-return gates)
  whose outcome is known: p their directional hit rate, b the mean realised gain of the hits over
  the mean realised loss of the misses. Never the confidence; 0 with under min_hit_observations
  such outcomes or no measured payoff.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

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


def _percent(value: float) -> str:
    """0.003 -> "0.3%", 0.25 -> "25%"."""
    return f"{value * 100:g}%"


def kelly_name(share: float) -> str:
    """"half-Kelly" for a share of 0.5, else "0.3 x Kelly"."""
    return "half-Kelly" if share == 0.5 else f"{share:g} x Kelly"


def describe_gates(rules: SignalRules | None = None) -> str:
    """The forecast's gates with their numbers: "the 5-session forecast proposes (confidence >=
    0.55, ...)"."""
    r = rules or SignalRules()
    return (f"the {r.horizon}-session forecast proposes (confidence >= {r.min_confidence:g}, return net of "
            f"{_percent(r.round_trip_cost)} round-trip costs >= {_percent(r.min_net_return)}, risk score <= "
            f"{r.max_risk_score:g})")


def describe_stops_and_size(rules: SignalRules | None = None) -> str:
    """Stop, target and size with their numbers: "stop max(2 ATR, 1.5%), ..."."""
    r = rules or SignalRules()
    return (f"stop max({r.atr_stop_multiple:g} ATR, {_percent(r.min_stop)}), target >= {r.min_reward_risk:g}x stop, "
            f"{kelly_name(r.kelly_share)} size from the hit rate measured over the last {r.hit_window} "
            f"calls (cap {_percent(r.max_position)}; 0 under {r.min_hit_observations} outcomes)")


def describe_veto(rules: SignalRules | None = None) -> str:
    """When the LLM's disagreement holds a trade back under `veto`."""
    return f"confidence >= {(rules or SignalRules()).veto_confidence:g}"


def forecast_confidence(frame: pl.DataFrame) -> pl.Series:
    """Phi(|mu| / sigma): the forecast distribution's probability that the move has mu's sign."""
    from scipy.stats import norm  # here, not at the top: docs/scale.md "Process start"
    z = frame.select((pl.col("expected_log_return").abs() / pl.col("sigma")).fill_nan(None)).to_series()
    return pl.Series("forecast_confidence", norm.cdf(z.to_numpy().astype(float))).fill_nan(None)


def forecast_edge(frame: pl.DataFrame, rules: SignalRules) -> pl.DataFrame:
    """Add forecast_confidence, expected_return = exp(mu) - 1 and expected_return_net =
    |expected_return| - round-trip cost: what the rule's confidence and return gates read."""
    return frame.with_columns(
        forecast_confidence(frame),
        (pl.col("expected_log_return").exp() - 1).alias("expected_return"),
    ).with_columns((pl.col("expected_return").abs() - rules.round_trip_cost).alias("expected_return_net"))


def trading_calls(forecasts: pl.DataFrame, rules: SignalRules) -> pl.DataFrame:
    """The forecasts (expected_log_return, sigma) that pass the rule's own gates, confidence and
    expected return net of costs: the past calls whose outcomes measure the ticker's edge."""
    return forecast_edge(forecasts, rules).filter(
        (pl.col("forecast_confidence") >= rules.min_confidence)
        & (pl.col("expected_return_net") >= rules.min_net_return))


def directional_hit_rates(
    forecasts: pl.DataFrame, prices: pl.DataFrame, dates: Sequence[dt.date], horizon: int, window: int
) -> pl.DataFrame:
    """Per (ticker, date t), over the last `window` calls whose outcome was known at t
    (origin o with o + horizon sessions <= t): hit_rate, the share whose sign matched the
    realised `horizon`-session log return; payoff_ratio, mean |realised| of the hits over mean
    |realised| of the misses (null without both); hit_observations. Zero forecasts are skipped.

    forecasts: ticker, date, expected_log_return at this horizon; prices: ticker, date, price.
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
        hits = np.sign(expected) == np.sign(realised)
        known_at = origin_index + horizon  # the session whose close reveals the outcome
        order = np.argsort(known_at, kind="stable")
        known_at, hits, moves = known_at[order], hits[order], np.abs(realised)[order]
        for day in dates:
            if day not in position:
                continue
            known = slice(max(0, np.searchsorted(known_at, position[day], side="right") - window),
                          np.searchsorted(known_at, position[day], side="right"))
            won, size = hits[known], moves[known]
            payoff = (float(size[won].mean() / size[~won].mean())
                      if won.any() and (~won).any() and size[~won].mean() > 0 else None)
            rows.append((ticker, day, float(won.mean()) if won.size else None, payoff, int(won.size)))
    return pl.DataFrame(rows, schema={"ticker": pl.String, "date": pl.Date, "hit_rate": pl.Float64,
                                      "payoff_ratio": pl.Float64, "hit_observations": pl.Int64}, orient="row")


def forecast_signals(frame: pl.DataFrame, rules: SignalRules) -> pl.DataFrame:
    """Add the forecast's own signal. Needs: expected_log_return, sigma (at rules.horizon), close,
    atr_14, risk_score. Adds forecast_action, forecast_confidence, expected_return,
    expected_return_net, stop_distance, target_distance, reward_risk, hold_reason."""
    mu, sigma = pl.col("expected_log_return"), pl.col("sigma")
    frame = forecast_edge(frame, rules).with_columns(
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


def kelly_fraction(hit_rate: float, payoff_ratio: float) -> float:
    """Kelly f* = p - (1 - p) / b for a bet that wins b per unit lost with probability p."""
    return hit_rate - (1.0 - hit_rate) / payoff_ratio


def size_positions(frame: pl.DataFrame, rules: SignalRules) -> pl.DataFrame:
    """position_size = clip(kelly_share x f*, 0, max_position) for BUY/SELL, 0 for HOLD, with p
    (hit_rate) and b (payoff_ratio) measured on past calls; with fewer than min_hit_observations
    outcomes, or no payoff measured (no hit or no miss yet), the size is 0."""
    enough = ((pl.col("hit_observations") >= rules.min_hit_observations)
              & pl.col("payoff_ratio").is_not_null()).fill_null(False)
    kelly = pl.col("hit_rate") - (1 - pl.col("hit_rate")) / pl.col("payoff_ratio")
    return frame.with_columns(
        pl.when(enough).then(kelly).alias("kelly_fraction"),
        pl.when(pl.col("action") == "HOLD").then(0.0)
        .when(~enough).then(0.0)
        .otherwise((rules.kelly_share * kelly).clip(0.0, rules.max_position)).alias("position_size"),
        pl.when(pl.col("action") == "HOLD").then(pl.lit("no position"))
        .when(pl.col("hit_observations").fill_null(0) < rules.min_hit_observations)
        .then(pl.format("no size: {} measured outcomes < {}", pl.col("hit_observations").fill_null(0),
                        pl.lit(rules.min_hit_observations)))
        .when(~enough).then(pl.lit("no size: payoff unmeasured (no hit or no miss yet)"))
        .otherwise(pl.format("half-Kelly, p = {}, b = {} over {} outcomes", pl.col("hit_rate").round(3),
                             pl.col("payoff_ratio").round(2), pl.col("hit_observations"))).alias("sizing_basis"),
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
        # The forecast's probability of its direction, whatever the final action: one meaning per
        # column keeps calibration (Brier) measurable; the LLM's confidence is in llm_confidence.
        pl.col("forecast_confidence").alias("confidence"),
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
