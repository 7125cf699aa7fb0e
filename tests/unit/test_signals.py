"""pm_domain.signals and pm_domain.signal_validation on small hand-built frames."""

from __future__ import annotations

import datetime as dt
import itertools
import math

import polars as pl
import pytest
from scipy.stats import norm

from pm_domain.signal_validation import LAYERS, layer_outcomes, validate_signals
from pm_domain.signals import (
    SignalRules,
    decide,
    directional_hit_rates,
    forecast_signals,
    kelly_fraction,
    price_levels,
    route,
    size_positions,
    trading_calls,
    unchanged_sessions,
)

RULES = SignalRules()
DAY = dt.date(2024, 3, 1)


def inputs(**overrides) -> dict:
    """One llm_signals input row (as the asset builds it) that the forecast turns into a BUY."""
    row = {
        "ticker": "AAA", "date": DAY, "close": 100.0, "atr_14": 1.0, "rsi_14": 50.0,
        "sma_20": 99.0, "sma_50": 98.0, "realised_vol_20d": 0.20,
        "expected_log_return": 0.02, "sigma": 0.015, "risk_score": 0.3,
        "hit_rate": 0.6, "payoff_ratio": 1.5, "hit_observations": 50, "unchanged_sessions": 0,
        "trend": "up", "strength": "moderate", "regime": "trending", "price_date": DAY,
    }
    return row | overrides


SCHEMA = {"close": pl.Float64, "atr_14": pl.Float64, "rsi_14": pl.Float64, "sma_20": pl.Float64,
          "sma_50": pl.Float64, "realised_vol_20d": pl.Float64, "expected_log_return": pl.Float64,
          "sigma": pl.Float64, "risk_score": pl.Float64, "hit_rate": pl.Float64, "payoff_ratio": pl.Float64,
          "hit_observations": pl.Int64, "unchanged_sessions": pl.Int64, "llm_confidence": pl.Float64}


def frame(rows: list[dict]) -> pl.DataFrame:
    names = rows[0].keys()
    return pl.DataFrame(rows, schema_overrides={k: v for k, v in SCHEMA.items() if k in names})


def opinion(action="BUY", confidence=0.8, source="ollama", reasoning="the model agrees with the trend") -> dict:
    return {"llm_action": action, "llm_confidence": confidence, "llm_reasoning": reasoning, "llm_source": source}


def signal(rows: list[dict]) -> pl.DataFrame:
    return forecast_signals(frame(rows), RULES)


# ---------------------------------------------------------------- forecast_signals


def test_confidence_is_phi_of_mu_over_sigma():
    cases = [(0.02, 0.015), (-0.02, 0.015), (0.01, 0.1), (-0.004, 0.03), (0.0, 0.02)]
    out = signal([inputs(expected_log_return=mu, sigma=s) for mu, s in cases])
    for (mu, s), got in zip(cases, out["forecast_confidence"]):
        assert got == pytest.approx(norm.cdf(abs(mu) / s), abs=1e-12)
    assert out["forecast_confidence"][0] == pytest.approx(0.9087887802741321)
    assert out["forecast_confidence"][4] == 0.5


def test_buy_and_sell_when_every_gate_passes():
    out = signal([inputs(expected_log_return=0.02), inputs(expected_log_return=-0.02)])
    assert out["forecast_action"].to_list() == ["BUY", "SELL"]
    assert out["hold_reason"].to_list() == [None, None]
    assert out["expected_return"].to_list() == pytest.approx([math.expm1(0.02), math.expm1(-0.02)])
    assert out["expected_return_net"].to_list() == pytest.approx(
        [math.expm1(0.02) - 0.001, -math.expm1(-0.02) - 0.001])


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"expected_log_return": 0.01, "sigma": 0.1}, "confidence 0.54 < 0.55"),  # Phi(0.1) = 0.5398
    ({"expected_log_return": -0.01, "sigma": 0.1}, "confidence 0.54 < 0.55"),
    # gross 0.35% clears 0.3%, but not after the 0.1% round trip: net 0.2506%
    ({"expected_log_return": math.log1p(0.0035), "sigma": 0.001}, "expected return net of costs 0.0025 < 0.003"),
    ({"expected_log_return": math.log(1 - 0.0035), "sigma": 0.001}, "expected return net of costs 0.0025 < 0.003"),
    ({"risk_score": 0.71}, "risk score 0.71 > 0.7"),
    ({"risk_score": None}, "no risk score"),
    ({"expected_log_return": None}, "no ensemble forecast"),
    ({"sigma": None}, "no ensemble forecast"),
    ({"atr_14": None}, "no ATR14 to set the stop"),  # not a silent 1.5% minimum stop
    ({"expected_log_return": None, "sigma": None, "risk_score": None}, "no ensemble forecast"),
])
def test_each_gate_holds_with_its_reason(overrides, reason):
    out = signal([inputs(**overrides)])
    assert out["forecast_action"].to_list() == ["HOLD"]
    assert out["hold_reason"].to_list() == [reason]


def test_gate_boundaries():
    out = signal([
        inputs(expected_log_return=math.log1p(0.0041), sigma=0.001),  # net 0.31% >= 0.3%
        inputs(expected_log_return=math.log1p(-0.0041), sigma=0.001),
        inputs(risk_score=0.7),  # <= 0.7 passes
        inputs(expected_log_return=0.0, sigma=0.01),  # no direction: confidence 0.5
    ])
    assert out["forecast_action"].to_list() == ["BUY", "SELL", "BUY", "HOLD"]
    assert out["expected_return_net"][0] == pytest.approx(0.0031)


def test_stop_and_target_distances():
    out = signal([
        inputs(atr_14=1.0),  # 2 ATR / close = 2% > 1.5%: ATR branch, target 2 x stop
        inputs(atr_14=0.5),  # 1% < 1.5%: the floor
        inputs(atr_14=0.5, expected_log_return=0.05, sigma=0.05),  # expected move 5.13% > 2 x 1.5%
        inputs(atr_14=0.5, expected_log_return=-0.05, sigma=0.05),
        inputs(atr_14=2.0, close=50.0, expected_log_return=-0.02),  # 8%, SELL
    ])
    assert out["stop_distance"].to_list() == pytest.approx([0.02, 0.015, 0.015, 0.015, 0.08])
    assert out["target_distance"].to_list() == pytest.approx(
        [0.04, 0.03, math.expm1(0.05), -math.expm1(-0.05), 0.16])
    assert out["reward_risk"].to_list() == pytest.approx(
        [2.0, 2.0, math.expm1(0.05) / 0.015, -math.expm1(-0.05) / 0.015, 2.0])
    assert (out["reward_risk"] >= RULES.min_reward_risk - 1e-12).all()


def test_forecast_signals_keeps_the_input_rows_and_columns():
    rows = frame([inputs(ticker=t) for t in ("AAA", "BBB", "CCC")])
    out = forecast_signals(rows, RULES)
    assert out.select(rows.columns).equals(rows)


# ---------------------------------------------------------------- route


def routed(rows: list[tuple], role: str = "veto") -> pl.DataFrame:
    data = pl.DataFrame(rows, schema={"forecast_action": pl.String, "llm_action": pl.String,
                                      "llm_confidence": pl.Float64, "llm_source": pl.String}, orient="row")
    return route(data, SignalRules(llm_role=role))


def test_veto():
    out = routed([
        ("BUY", "SELL", 0.6, "ollama"),    # contrary and confident: held back
        ("BUY", "SELL", 0.59, "ollama"),   # not confident enough: stands
        ("BUY", "BUY", 0.9, "cache"),      # agreement
        ("HOLD", "BUY", 0.99, "ollama"),   # the LLM cannot open a trade
        ("SELL", "BUY", 0.95, "ollama"),   # nor reverse one
        ("BUY", "SELL", 0.95, "fallback"),  # the fallback is no opinion
        ("SELL", "HOLD", 0.8, "cache"),
        ("SELL", "SELL", 0.1, "ollama"),
    ])
    assert out["action"].to_list() == ["HOLD", "BUY", "BUY", "HOLD", "HOLD", "BUY", "HOLD", "SELL"]
    assert out["decided_by"].to_list() == ["llm_veto", "forecast", "forecast+llm", "forecast", "llm_veto",
                                           "forecast", "llm_veto", "forecast+llm"]


def test_confirm():
    out = routed([
        ("BUY", "HOLD", 0.3, "ollama"),    # any disagreement holds it back, whatever the confidence
        ("BUY", "BUY", 0.3, "ollama"),
        ("SELL", "BUY", 0.2, "cache"),
        ("HOLD", "SELL", 0.99, "ollama"),
        ("BUY", "SELL", 0.99, "fallback"),
    ], role="confirm")
    assert out["action"].to_list() == ["HOLD", "BUY", "HOLD", "HOLD", "HOLD"]  # no opinion, no confirmation
    assert out["decided_by"].to_list() == ["llm_veto", "forecast+llm", "llm_veto", "forecast", "unconfirmed"]


def test_off_ignores_the_llm():
    rows = [("BUY", "SELL", 0.99, "ollama"), ("SELL", "HOLD", 0.99, "cache"), ("HOLD", "BUY", 0.99, "ollama")]
    out = routed(rows, role="off")
    assert out["action"].to_list() == ["BUY", "SELL", "HOLD"]
    assert out["decided_by"].to_list() == ["forecast"] * 3


def test_llm_never_opens_or_reverses_a_trade():
    actions = ["BUY", "SELL", "HOLD"]
    grid = list(itertools.product(actions, actions, [0.0, 0.59, 0.6, 1.0], ["ollama", "cache", "fallback"]))
    for role in ("veto", "confirm", "off"):
        out = routed(grid, role=role)
        for forecast, final, who in out.select("forecast_action", "action", "decided_by").iter_rows():
            assert final in (forecast, "HOLD")
            assert (final != forecast) == (who in ("llm_veto", "unconfirmed"))
        fallback = out.filter(pl.col("llm_source") == "fallback")
        if role == "confirm":
            assert fallback.filter(pl.col("forecast_action") != "HOLD")["decided_by"].eq("unconfirmed").all()
        else:
            assert (fallback["action"] == fallback["forecast_action"]).all()
            assert (fallback["decided_by"] == "forecast").all()


# ---------------------------------------------------------------- sizing


def test_kelly_fraction():
    assert kelly_fraction(0.6, 2.0) == pytest.approx(0.4)
    assert kelly_fraction(0.5, 3.0) == pytest.approx(0.5 - 0.5 / 3)
    assert kelly_fraction(0.3, 2.0) == pytest.approx(-0.05)
    assert kelly_fraction(1 / 3, 2.0) == pytest.approx(0.0)


def sized(rows: list[dict]) -> pl.DataFrame:
    data = pl.DataFrame(rows, schema={"action": pl.String, "hit_rate": pl.Float64, "hit_observations": pl.Int64,
                                      "payoff_ratio": pl.Float64, "confidence": pl.Float64})
    return size_positions(data, RULES)


def sizing_rows(confidence: float) -> list[dict]:
    return [
        {"action": "BUY", "hit_rate": 0.6, "hit_observations": 50, "payoff_ratio": 2.0},   # f* 0.4 -> 0.2
        {"action": "SELL", "hit_rate": 0.55, "hit_observations": 20, "payoff_ratio": 2.5},  # f* 0.37 -> 0.185
        {"action": "BUY", "hit_rate": 0.7, "hit_observations": 100, "payoff_ratio": 3.0},  # f* 0.6 -> 0.3: cap
        {"action": "BUY", "hit_rate": 0.3, "hit_observations": 100, "payoff_ratio": 2.0},  # f* -0.05 -> 0
        {"action": "BUY", "hit_rate": 0.9, "hit_observations": 19, "payoff_ratio": 2.0},   # too few outcomes
        {"action": "HOLD", "hit_rate": 0.9, "hit_observations": 100, "payoff_ratio": 2.0},
        {"action": "BUY", "hit_rate": 1.0, "hit_observations": 30, "payoff_ratio": None},  # no miss yet
        # no skill: p = 0.5 with wins as large as losses is f* = 0, whatever target/stop says
        {"action": "BUY", "hit_rate": 0.5, "hit_observations": 200, "payoff_ratio": 1.0},
    ]


def test_size_positions_half_kelly_capped():
    out = sized([r | {"confidence": 0.9} for r in sizing_rows(0.9)])
    assert out["kelly_fraction"].to_list()[:4] == pytest.approx([0.4, 0.55 - 0.45 / 2.5, 0.6, -0.05])
    assert out["kelly_fraction"][4] is None
    assert out["position_size"].to_list() == pytest.approx([0.2, 0.5 * (0.55 - 0.45 / 2.5), 0.25, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert out["sizing_basis"][0] == "half-Kelly, p = 0.6, b = 2.0 over 50 outcomes"
    assert out["sizing_basis"][4] == "no size: 19 measured outcomes < 20"
    assert out["sizing_basis"][6] == "no size: payoff unmeasured (no hit or no miss yet)"
    assert out["sizing_basis"][5] == "no position"


def test_size_does_not_depend_on_confidence():
    sizes = [sized([r | {"confidence": c} for r in sizing_rows(c)])["position_size"] for c in (0.0, 0.55, 0.99, 1.0)]
    for other in sizes[1:]:
        assert other.equals(sizes[0])


# ---------------------------------------------------------------- price levels


def test_price_levels():
    data = pl.DataFrame({"action": ["BUY", "SELL", "HOLD"], "close": [100.0, 50.0, 80.0],
                         "stop_distance": [0.02, 0.04, 0.02], "target_distance": [0.04, 0.1, 0.04]})
    out = price_levels(data)
    assert out["entry_price"].to_list() == [100.0, 50.0, 80.0]
    assert out["stop_price"].to_list()[:2] == pytest.approx([98.0, 52.0])
    assert out["target_price"].to_list()[:2] == pytest.approx([104.0, 45.0])
    assert out["stop_price"][2] is None and out["target_price"][2] is None
    buy, sell = out.row(0, named=True), out.row(1, named=True)
    assert buy["stop_price"] < buy["entry_price"] < buy["target_price"]
    assert sell["target_price"] < sell["entry_price"] < sell["stop_price"]


# ---------------------------------------------------------------- directional hit rates

SESSIONS = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(10)]
#        o:    0    1    2    3    4    5    6    7    8    9
PRICES = [100, 102, 104, 103, 101, 100, 102, 105, 104, 106]
# realised 2-session sign:  +  +  -  -  +  +  +  +  (o8, o9 unknown)
CALLS = [0.01, -0.01, 0.0, -0.02, -0.01, 0.01, 0.01, -0.01, 0.01, 0.01]
# hit:                1    0   skip    1     0     1     1     0


def hit_rates(prices=PRICES, calls=CALLS, dates=SESSIONS, window=250, extra=None) -> dict:
    price_rows = pl.DataFrame({"ticker": "AAA", "date": SESSIONS, "price": [float(p) for p in prices]})
    call_rows = pl.DataFrame({"ticker": "AAA", "date": SESSIONS, "expected_log_return": calls})
    if extra is not None:
        price_rows, call_rows = pl.concat([extra[0], price_rows]), pl.concat([extra[1], call_rows])
    out = directional_hit_rates(call_rows, price_rows, dates, horizon=2, window=window)
    return {(t, d): (rate, n) for t, d, rate, _payoff, n in out.iter_rows()}


def test_hit_rates_count_only_outcomes_known_at_t():
    got = hit_rates()
    expected = [(None, 0), (None, 0), (1.0, 1), (0.5, 2), (0.5, 2), (2 / 3, 3), (0.5, 4), (0.6, 5),
                (4 / 6, 6), (4 / 7, 7)]
    for day, (rate, n) in zip(SESSIONS, expected):
        got_rate, got_n = got[("AAA", day)]
        assert got_n == n, day
        assert got_rate == (None if rate is None else pytest.approx(rate)), day


def test_hit_rates_have_no_look_ahead():
    base = hit_rates()
    # The last price decides o7's outcome, known at d9 only: d8 and earlier cannot move.
    moved = hit_rates(prices=PRICES[:9] + [50])
    assert moved[("AAA", SESSIONS[9])] == (pytest.approx(5 / 7), 7)  # o7 (-) now a hit
    for day in SESSIONS[:9]:
        assert moved[("AAA", day)] == base[("AAA", day)]
    # The price at d8 completes o6 exactly at d8: counted at d8, not before.
    moved = hit_rates(prices=PRICES[:8] + [90, 106])
    assert moved[("AAA", SESSIONS[8])] == (pytest.approx(3 / 6), 6)
    for day in SESSIONS[:8]:
        assert moved[("AAA", day)] == base[("AAA", day)]


def test_a_missing_outcome_price_is_no_outcome_not_a_miss():
    got = hit_rates(prices=PRICES[:4] + [float("nan")] + PRICES[5:])  # no price on d4
    assert got[("AAA", SESSIONS[4])] == (0.5, 2)  # o0 hit, o1 miss (o2, ending on d4, is a zero call)
    assert got[("AAA", SESSIONS[6])] == (pytest.approx(2 / 3), 3)  # o4 starts on d4: dropped, not a miss
    assert hit_rates()[("AAA", SESSIONS[6])] == (0.5, 4)


def test_hit_rates_skip_zero_forecasts_and_window():
    got = hit_rates(window=3)
    assert got[("AAA", SESSIONS[9])] == (pytest.approx(2 / 3), 3)  # o5 hit, o6 hit, o7 miss
    assert got[("AAA", SESSIONS[6])] == (pytest.approx(1 / 3), 3)  # o1 miss, o3 hit, o4 miss (o2 is 0)
    assert got[("AAA", SESSIONS[2])] == (1.0, 1)
    # A zero call at o2 is no call: making it anything non-zero adds an outcome at d4.
    with_call = hit_rates(calls=CALLS[:2] + [-0.01] + CALLS[3:])
    assert with_call[("AAA", SESSIONS[4])] == (pytest.approx(2 / 3), 3)


def test_hit_rates_per_ticker_and_requested_dates_only():
    other = (pl.DataFrame({"ticker": "BBB", "date": SESSIONS, "price": [float(p) for p in PRICES]}),
             pl.DataFrame({"ticker": "BBB", "date": SESSIONS, "expected_log_return": [-c for c in CALLS]}))
    dates = [SESSIONS[5], SESSIONS[9], dt.date(2030, 1, 1)]
    got = hit_rates(dates=dates, extra=other)
    assert set(got) == {(t, d) for t in ("AAA", "BBB") for d in dates[:2]}
    assert got[("AAA", SESSIONS[9])] == (pytest.approx(4 / 7), 7)
    assert got[("BBB", SESSIONS[9])] == (pytest.approx(3 / 7), 7)


def test_payoff_ratio_is_mean_hit_move_over_mean_miss_move():
    price_rows = pl.DataFrame({"ticker": "AAA", "date": SESSIONS, "price": [float(p) for p in PRICES]})
    call_rows = pl.DataFrame({"ticker": "AAA", "date": SESSIONS, "expected_log_return": CALLS})
    out = directional_hit_rates(call_rows, price_rows, [SESSIONS[2], SESSIONS[9]], horizon=2, window=250)
    move = lambda o: abs(math.log(PRICES[o + 2] / PRICES[o]))  # noqa: E731
    hits, misses = [move(o) for o in (0, 3, 5, 6)], [move(o) for o in (1, 4, 7)]
    assert out["payoff_ratio"].to_list() == [None, pytest.approx((sum(hits) / 4) / (sum(misses) / 3))]


def test_trading_calls_are_the_forecasts_that_pass_the_rule_gates():
    calls = pl.DataFrame({"ticker": "AAA", "date": SESSIONS[:4],
                          "expected_log_return": [0.02, 0.02, 0.003, -0.02], "sigma": [0.015, 0.2, 0.0001, 0.015]})
    kept = trading_calls(calls, RULES)
    # row 2: Phi(0.1) < 0.55; row 3: net 0.2% < 0.3%
    assert kept["date"].to_list() == [SESSIONS[0], SESSIONS[3]]


# ---------------------------------------------------------------- unchanged sessions


def test_unchanged_sessions_per_ticker():
    days = [dt.date(2024, 1, d) for d in range(1, 7)]
    prices = pl.DataFrame({
        "ticker": ["AAA"] * 6 + ["BBB"] * 4,
        "date": days + days[:4],
        "close": [10.0, 10.0, 10.0, 10.0, 11.0, 11.0] + [11.0, 6.0, 6.0, 5.0],
    }).reverse()  # input order does not matter
    out = {(t, d): n for t, d, n in unchanged_sessions(prices).iter_rows()}
    assert [out[("AAA", d)] for d in days] == [0, 1, 2, 3, 0, 1]
    assert [out[("BBB", d)] for d in days[:4]] == [0, 0, 1, 0]  # BBB's first close equals AAA's last


# ---------------------------------------------------------------- decide


def decided(rows: list[dict], rules: SignalRules = RULES) -> pl.DataFrame:
    return decide(forecast_signals(frame(rows), rules), rules)


def test_decide_end_to_end():
    out = decided([
        inputs(ticker="BUY") | opinion("BUY", 0.8, "ollama"),
        inputs(ticker="SELL", expected_log_return=-0.02, sma_20=101.0, sma_50=102.0) | opinion("SELL", 0.7, "cache"),
        inputs(ticker="HOLD", expected_log_return=0.01, sigma=0.1) | opinion("BUY", 0.95, "ollama"),
        inputs(ticker="VETO") | opinion("SELL", 0.8, "ollama", "momentum is fading into resistance"),
    ])
    rows = {r["ticker"]: r for r in out.iter_rows(named=True)}
    assert [rows[t]["action"] for t in ("BUY", "SELL", "HOLD", "VETO")] == ["BUY", "SELL", "HOLD", "HOLD"]
    assert [rows[t]["forecast_action"] for t in ("BUY", "SELL", "HOLD", "VETO")] == ["BUY", "SELL", "HOLD", "BUY"]
    assert [rows[t]["decided_by"] for t in ("BUY", "SELL", "HOLD", "VETO")] == \
        ["forecast+llm", "forecast+llm", "forecast", "llm_veto"]

    conf = norm.cdf(0.02 / 0.015)
    assert rows["BUY"]["confidence"] == pytest.approx(conf)
    assert rows["SELL"]["confidence"] == pytest.approx(conf)
    assert rows["HOLD"]["confidence"] == pytest.approx(norm.cdf(0.1))
    # one meaning per column: the forecast's confidence; the LLM's contrary call is in llm_confidence
    assert rows["VETO"]["confidence"] == pytest.approx(conf) and rows["VETO"]["llm_confidence"] == 0.8

    # p = 0.6 and payoff b = 1.5 measured on past calls: f* = 0.6 - 0.4 / 1.5, half of it
    half_kelly = 0.5 * (0.6 - 0.4 / 1.5)
    assert [rows[t]["position_size"] for t in ("BUY", "SELL", "HOLD", "VETO")] == pytest.approx([half_kelly, half_kelly, 0, 0])
    assert (rows["BUY"]["entry_price"], rows["BUY"]["stop_price"], rows["BUY"]["target_price"]) == \
        pytest.approx((100.0, 98.0, 104.0))
    assert (rows["SELL"]["stop_price"], rows["SELL"]["target_price"]) == pytest.approx((102.0, 96.0))
    for t in ("HOLD", "VETO"):
        assert rows[t]["stop_price"] is None and rows[t]["target_price"] is None

    assert rows["HOLD"]["reasoning"] == rows["HOLD"]["rule_reasoning"]
    assert rows["HOLD"]["rule_reasoning"].startswith("HOLD: confidence 0.54 < 0.55. 5-session forecast 1.01%")
    assert rows["BUY"]["rule_reasoning"] == (
        "BUY: 5-session forecast 2.02% (net of costs 1.92%), P(direction) 0.909, risk score 0.3; "
        "stop 2.0%, target 4.0% (reward/risk 2.0).")
    assert rows["VETO"]["reasoning"] == (
        rows["VETO"]["rule_reasoning"] + " LLM (SELL, confidence 0.8): momentum is fading into resistance")

    validated = validate_signals(out, RULES)
    assert validated["validation_structure"].to_list() == ["pass"] * 4
    assert validated["action"].equals(out["action"])
    assert validated.filter(pl.col("ticker") == "BUY")["validation_score"].to_list() == [1.0]


def test_decide_a_row_without_forecast_is_a_valid_hold():
    out = decided([inputs(expected_log_return=None) | opinion("BUY", 0.9, "ollama")])
    row = out.row(0, named=True)
    assert (row["action"], row["decided_by"], row["position_size"]) == ("HOLD", "forecast", 0.0)
    assert row["reasoning"] == "HOLD: no ensemble forecast."


def test_fallback_opinion_is_ignored_in_decide():
    out = decided([inputs() | opinion("SELL", 0.99, "fallback")])
    assert out.select("action", "decided_by").row(0) == ("BUY", "forecast")
    assert out["reasoning"][0] == out["rule_reasoning"][0]


# ---------------------------------------------------------------- validation


def clean() -> dict:
    """A decided BUY that passes all five layers."""
    return decided([inputs() | opinion("BUY", 0.8, "ollama")]).row(0, named=True)


def validate(rows: list[dict]) -> pl.DataFrame:
    return validate_signals(pl.DataFrame(rows, infer_schema_length=None), RULES)


def layer(out: pl.DataFrame, name: str) -> list[tuple]:
    return list(out.select(f"validation_{name}", f"validation_{name}_reason").iter_rows())


def test_clean_row_passes_every_layer():
    out = validate([clean()])
    for name in LAYERS:
        assert layer(out, name) == [("pass", None)], name
    assert out["validation_score"].to_list() == [1.0]


def test_structure():
    base = clean()
    out = validate([
        base | {"stop_price": 101.0},
        base | {"action": "SELL"},  # levels of a BUY under a SELL: target above entry
        base | {"action": "HOLD", "position_size": 0.1},
        base | {"confidence": 1.2},
        base | {"confidence": None},
        base | {"reasoning": "short"},
        base | {"position_size": 0.3},
        base | {"action": "BUY!"},
        base | {"action": "HOLD", "position_size": 0.0, "confidence": None},  # a HOLD with no forecast
    ])
    assert layer(out, "structure") == [
        ("fail", "BUY needs stop < entry < target"),
        ("fail", "SELL needs target < entry < stop"),
        ("fail", "HOLD with a position size"),
        ("fail", "confidence outside [0, 1]"),
        ("fail", "trade without a confidence"),
        ("fail", "reasoning under 20 characters"),
        ("fail", "position size missing or outside [0, cap]"),
        ("fail", "action not BUY/SELL/HOLD"),
        ("pass", None),
    ]


def test_market_context():
    base = clean()
    out = validate([
        base | {"unchanged_sessions": 3},
        base | {"unchanged_sessions": 2},
        base | {"realised_vol_20d": 0.6},
        base | {"realised_vol_20d": None},
        base | {"price_date": DAY - dt.timedelta(days=1)},
        base | {"unchanged_sessions": 5, "realised_vol_20d": 0.6},
    ])
    assert layer(out, "market_context") == [
        ("fail", "close unchanged for 3+ sessions: stale prices"),
        ("pass", None),
        ("warn", "20-day volatility above 50% annualised"),
        ("warn", "no 20-day volatility"),
        ("fail", "latest price older than the signal date"),
        ("fail", "close unchanged for 3+ sessions: stale prices"),
    ]


def test_risk_return():
    base = clean()
    out = validate([
        base | {"reward_risk": 1.5},
        base | {"action": "HOLD", "reward_risk": 1.5},
        base | {"sigma": 0.05},  # exp(0.05) - 1 = 5.1% > stop 2%
        base | {"reward_risk": 1.5, "sigma": 0.05},
        base | {"expected_return": 0.004},  # 0.4% against a 2% stop: under a quarter of it
    ])
    assert layer(out, "risk_return") == [
        ("fail", "reward/risk under the minimum"),
        ("pass", None),
        ("warn", "stop inside one forecast sigma: noise can stop it out"),
        ("fail", "reward/risk under the minimum"),
        ("warn", "expected move under a quarter of the stop distance: the target needs a move the forecast does not expect"),
    ]


def test_technical():
    base = clean()
    downtrend = {"close": 95.0, "sma_20": 96.0, "sma_50": 98.0}
    uptrend = {"close": 105.0, "sma_20": 101.0, "sma_50": 98.0}
    out = validate([
        base | {"rsi_14": 75.0},
        base | {"rsi_14": 75.0} | downtrend,
        base | downtrend,
        base | {"action": "SELL", "rsi_14": 25.0, "sma_20": 97.0},  # no trend: close > SMA50 > SMA20
        base | {"action": "SELL"} | uptrend,
        base | {"action": "SELL", "rsi_14": 25.0} | uptrend,
        base | {"action": "HOLD", "rsi_14": 90.0} | downtrend,
        base | {"action": "SELL", "rsi_14": 75.0} | downtrend,
    ])
    rsi = "RSI14 against the trade (BUY overbought > 70 / SELL oversold < 30)"
    trend = "trade against the SMA20/SMA50 trend"
    both = "RSI and moving averages both against the trade"
    assert layer(out, "technical") == [
        ("warn", rsi), ("fail", both), ("warn", trend), ("warn", rsi), ("warn", trend), ("fail", both),
        ("pass", None), ("pass", None),
    ]


def test_calibration():
    base = clean()
    out = validate([
        base | {"confidence": 0.8, "hit_observations": 10},
        base | {"confidence": 0.8, "realised_vol_20d": 0.45},
        base | {"confidence": 0.8, "hit_observations": 10, "realised_vol_20d": 0.45},
        base | {"confidence": 0.69, "hit_observations": 10},
        base | {"action": "HOLD", "position_size": 0.0, "confidence": 0.8, "hit_observations": 10},
        base | {"confidence": 0.8, "hit_observations": 30},
    ])
    few, vol = "confidence >= 0.7 on under 30 measured outcomes", "confidence >= 0.7 in volatility above 40%"
    assert layer(out, "calibration") == [
        ("warn", few), ("warn", vol), ("warn", f"{few}; {vol}"), ("pass", None), ("pass", None), ("pass", None),
    ]


def test_validation_score_is_the_mean_of_the_verdicts():
    base = clean()
    out = validate([
        base,
        base | {"realised_vol_20d": 0.6, "confidence": 0.65},  # market warn (calibration quiet under 0.7)
        base | {"reward_risk": 1.5, "rsi_14": 75.0},  # risk fail, technical warn
        base | {"stop_price": 101.0, "unchanged_sessions": 4, "reward_risk": 1.0, "rsi_14": 75.0,
                "close": 95.0, "sma_20": 96.0, "sma_50": 98.0, "hit_observations": 5},  # 4 fails, 1 warn
    ])
    assert out["validation_score"].to_list() == pytest.approx([1.0, 0.9, 0.7, 0.1])


def test_validation_never_changes_the_action():
    base = clean()
    rows = [
        base | {"action": "HOLD", "position_size": 0.0, "stop_price": None, "target_price": None},
        base | {"action": "HOLD", "position_size": 0.1, "unchanged_sessions": 9, "reward_risk": 0.5, "rsi_14": 95.0},
        base | {"stop_price": 150.0, "reward_risk": 0.5, "rsi_14": 95.0, "close": 90.0, "sma_20": 95.0},
        base | {"action": "SELL", "rsi_14": 5.0, "realised_vol_20d": 0.9, "confidence": 0.99},
        base | {"reasoning": None, "confidence": None},
    ]
    signals = pl.DataFrame(rows, infer_schema_length=None)
    out = validate_signals(signals, RULES)
    assert out["action"].to_list() == ["HOLD", "HOLD", "BUY", "SELL", "BUY"]
    assert out["action"].equals(signals["action"])
    assert out.select(signals.columns).equals(signals)
    added = [c for c in out.columns if c not in signals.columns]
    assert all(c.startswith("validation_") for c in added)
    assert len(added) == 2 * len(LAYERS) + 1


def test_layer_outcomes():
    base = clean()
    out = validate([
        base,
        base | {"ticker": "WRN", "realised_vol_20d": 0.6, "confidence": 0.65},
        base | {"ticker": "STL", "unchanged_sessions": 3},
        base | {"ticker": "CAL", "hit_observations": 10},
    ])
    outcomes = {o.name: o for o in layer_outcomes(out)}
    assert list(outcomes) == [f"validation_{name}" for name in LAYERS]
    market = outcomes["validation_market_context"]
    assert (market.passed, market.description, market.failing_rows) == (False, "2 pass, 1 warn, 1 fail", 1)
    assert market.examples == [f"STL {DAY}: close unchanged for 3+ sessions: stale prices"]
    calibration = outcomes["validation_calibration"]
    assert (calibration.passed, calibration.description, calibration.failing_rows) == (True, "3 pass, 1 warn, 0 fail", 0)
    assert calibration.examples == [f"CAL {DAY}: confidence >= 0.7 on under 30 measured outcomes"]
    structure = outcomes["validation_structure"]
    assert (structure.passed, structure.description, structure.examples) == (True, "4 pass, 0 warn, 0 fail", [])
