"""Each rule is written once, in pm_domain: run-config defaults, asset and check descriptions are
generated from it, so changing a threshold there changes them. These fail when the two diverge."""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing

import pytest
from dagster import AssetKey

from pm_domain import risk
from pm_domain.backtest import STRESSES, BacktestRules
from pm_domain.features import LONGEST_WINDOW
from pm_domain.forecasting.engine import ForecastConfig
from pm_domain.llm.fallback import risk_flags
from pm_domain.llm.probe import CHANCE, CONFIDENCE_LEVEL, HORIZON_SESSIONS
from pm_domain.outcomes import OUTCOME_HORIZONS, TRACKING_SESSIONS
from pm_domain.paper.weights import WeightRules
from pm_domain.quality import RULE_DESCRIPTIONS
from pm_domain.signals import LLMRole, SignalRules, describe_gates, describe_stops_and_size, describe_veto


@pytest.fixture(scope="module")
def graph():
    from pm_jobs.definitions import defs

    return defs.resolve_asset_graph()


def description(graph, asset: str) -> str:
    return graph.get(AssetKey(asset)).description


def check_description(graph, asset: str, check: str) -> str:
    [key] = [k for k in graph.get(AssetKey(asset)).check_keys if k.name == check]
    return graph.get_check_spec(key).description


def shared_defaults(config_class, rules) -> dict[str, tuple]:
    """(config default, rule default) for every field the run config and the rules share."""
    config = config_class()
    shared = {f.name for f in dataclasses.fields(rules)} & set(config_class.model_fields)
    assert shared, config_class
    return {name: (getattr(config, name), getattr(rules, name)) for name in shared}


# -- run-config defaults are the rules' ------------------------------------------------------


def test_llm_signals_config_defaults_are_signal_rules():
    from pm_assets.llm_signals import LlmSignalsConfig

    for name, (config, rule) in shared_defaults(LlmSignalsConfig, SignalRules()).items():
        assert config == rule, name
    assert LlmSignalsConfig().rules() == SignalRules()
    assert set(typing.get_args(LlmSignalsConfig.model_fields["llm_role"].annotation)) == set(typing.get_args(LLMRole))


def test_other_configs_default_to_their_rules():
    from pm_assets.backtests import BacktestsConfig
    from pm_assets.target_weights import TargetWeightsConfig
    from pm_assets.ts_forecasts import TsForecastsConfig

    assert BacktestsConfig().rules() == BacktestRules()
    for name, (config, rule) in shared_defaults(TargetWeightsConfig, WeightRules()).items():
        if name != "method":  # PM_PAPER_WEIGHTS
            assert (tuple(config) if isinstance(config, list) else config) == rule, name
    for name, (config, rule) in shared_defaults(TsForecastsConfig, ForecastConfig()).items():
        assert (tuple(config) if isinstance(config, list) else config) == rule, name


# -- descriptions are formatted from the rules ------------------------------------------------


def test_the_signal_rule_text_follows_the_rules():
    rules = SignalRules()
    text = describe_gates(rules) + " " + describe_stops_and_size(rules)
    for shown in (f"{rules.horizon}-session", f">= {rules.min_confidence:g}", f"<= {rules.max_risk_score:g}",
                  f"{rules.min_net_return * 100:g}%", f"{rules.round_trip_cost * 100:g}%",
                  f"{rules.min_stop * 100:g}%", f"{rules.max_position * 100:g}%", f"{rules.atr_stop_multiple:g} ATR",
                  f"{rules.min_reward_risk:g}x stop", f"under {rules.min_hit_observations} outcomes"):
        assert shown in text, shown
    changed = dataclasses.replace(rules, min_confidence=0.61, min_net_return=0.004, min_stop=0.02, kelly_share=0.25)
    changed_text = describe_gates(changed) + " " + describe_stops_and_size(changed)
    for shown in (">= 0.61", ">= 0.4%", "2%)", "0.25 x Kelly"):
        assert shown in changed_text, shown
    assert "1.5%" not in changed_text and "half-Kelly" not in changed_text
    assert describe_veto(rules) == f"confidence >= {rules.veto_confidence:g}"


def test_llm_signals_describes_its_rules_with_their_numbers(graph):
    from pm_assets.llm_signals import LlmSignalsConfig

    text = description(graph, "llm_signals")
    assert describe_gates(SignalRules()) in text and describe_stops_and_size(SignalRules()) in text
    assert describe_veto(SignalRules()) in LlmSignalsConfig.model_fields["llm_role"].description
    for horizon in ForecastConfig().horizons:
        assert str(horizon) in LlmSignalsConfig.model_fields["horizon"].description


def test_the_alert_text_follows_the_thresholds(monkeypatch):
    text = risk.describe_alerts()
    for shown in (f"> {risk.ALERT_VOLATILITY * 100:g}%", f"< {risk.ALERT_DRAWDOWN * 100:g}%",
                  f"> {risk.ALERT_VAR * 100:g}%", f"> {risk.ALERT_ABS_BETA:g}"):
        assert shown in text, shown
    monkeypatch.setattr(risk, "ALERT_VAR", 0.031)
    assert "VaR95 > 3.1%" in risk.describe_alerts()


def test_risk_checks_state_the_alert_thresholds_and_the_quality_rule(graph):
    assert risk.describe_alerts() in check_description(graph, "risk_assessments", "llm_concerns_cover_metrics")
    assert RULE_DESCRIPTIONS["risk_complete"] in check_description(graph, "risk_assessments", "risk_complete")
    assert f"needs {risk.MIN_RETURNS}+ returns" in RULE_DESCRIPTIONS["risk_complete"]
    assert f"at least {LONGEST_WINDOW} sessions" in RULE_DESCRIPTIONS["warmed_up"]
    text = description(graph, "risk_assessments")
    assert risk.describe_levels() in text
    for shown in (f"({risk.VAR_WINDOW} daily returns", f"{risk.VOLATILITY_WINDOW}-day volatility",
                  f"{risk.DRAWDOWN_WINDOW}-day max drawdown", f"{risk.VAR_LEVEL:.0%}"):
        assert shown in text, shown


def test_the_levels_text_is_the_bands_risk_level_applies():
    for name, upper in risk.RISK_LEVELS:
        assert f"{name} < {upper:g}" in risk.describe_levels()
        assert risk.risk_level(math.nextafter(upper, 0)) == name
    assert risk.describe_levels().endswith(f"<= {risk.EXTREME_LEVEL}")


@pytest.mark.parametrize("metric, past, within", [
    ("volatility_20d", risk.ALERT_VOLATILITY * 1.001, risk.ALERT_VOLATILITY),
    ("max_drawdown_252d", risk.ALERT_DRAWDOWN * 1.001, risk.ALERT_DRAWDOWN),
    ("var_95_hist", risk.ALERT_VAR * 1.001, risk.ALERT_VAR),
    ("beta", risk.ALERT_ABS_BETA * 1.001, risk.ALERT_ABS_BETA),
])
def test_the_fallback_flags_exactly_past_the_documented_thresholds(metric, past, within):
    """pm_domain.llm.fallback.risk_flags still writes its thresholds as numbers: this ties them to
    pm_domain.risk's, which the descriptions state."""
    def flagged(value):
        return [name for name, _ in risk_flags({metric: value})]

    assert flagged(past) and not flagged(within)


def test_the_fallback_flags_a_stop_inside_the_documented_days_of_var():
    def flags(stop):
        return [name for name, _ in risk_flags({"action": "BUY", "var_95_hist": 0.01, "stop_distance": stop})]

    assert "stop" in flags(0.01 * risk.ALERT_STOP_VAR_DAYS * 0.999)
    assert "stop" not in flags(0.01 * risk.ALERT_STOP_VAR_DAYS)


def test_the_risk_lookback_is_the_longest_window_assess_reads():
    from pm_assets.llm_signals import RISK_LOOKBACK_SESSIONS
    from pm_assets.risk_assessments import LOOKBACK_SESSIONS

    defaults = {name: p.default for name, p in inspect.signature(risk.assess).parameters.items() if name.endswith("_window")}
    assert defaults == {"var_window": risk.VAR_WINDOW, "drawdown_window": risk.DRAWDOWN_WINDOW,
                        "beta_window": risk.BETA_WINDOW}
    assert RISK_LOOKBACK_SESSIONS == LOOKBACK_SESSIONS == risk.LOOKBACK_SESSIONS == max(defaults.values()) + 1


def test_the_other_descriptions_state_their_rules_numbers(graph):
    rules = BacktestRules()
    backtests = description(graph, "backtests")
    for shown in (f"trailing {rules.window_sessions} sessions", f"{rules.cost_bps:g} bps", f"{rules.interval:.0%} interval",
                  *(stress.label for stress in STRESSES)):
        assert shown in backtests, shown
    weights = WeightRules()
    assert f"({weights.max_weight:.0%})" in description(graph, "target_weights")
    outcomes = description(graph, "signal_outcomes")
    assert all(str(h) in outcomes for h in OUTCOME_HORIZONS) and f"{TRACKING_SESSIONS}-session" in outcomes
    probe = description(graph, "memorization_probe")
    assert f"close {HORIZON_SESSIONS} sessions" in probe and f"{CONFIDENCE_LEVEL:.0%}" in probe and f"{CHANCE:.0%}" in probe
    forecasts = description(graph, "ts_forecasts")
    assert f"{ForecastConfig().interval_level:.0%} interval" in forecasts
    assert all(str(h) in forecasts for h in ForecastConfig().horizons)
