"""Do the model's replies agree with the numbers? (pm_domain.llm.content), with known answers."""

import datetime as dt

import polars as pl

from pm_domain.llm.content import agreement_rate, analysis_content, risk_content

DAY = dt.date(2018, 12, 31)
BEARISH = {"close": 90.0, "sma_20": 95.0, "sma_50": 100.0, "macd_hist": -1.0}  # -3 of 3 votes
BULLISH = {"close": 110.0, "sma_20": 105.0, "sma_50": 100.0, "macd_hist": 1.0}
MIXED = {"close": 110.0, "sma_20": 95.0, "sma_50": 100.0, "macd_hist": 0.0}  # +1 - 1 + 0


def _analysis(cases):
    inputs = pl.DataFrame([{"ticker": t, "date": DAY, **numbers} for t, (numbers, _, _) in cases.items()])
    rows = pl.DataFrame([{"ticker": t, "date": DAY, "trend": trend, "llm_source": source}
                         for t, (_, trend, source) in cases.items()])
    return {r["ticker"]: r for r in analysis_content(inputs, rows).iter_rows(named=True)}


def test_a_bullish_reply_on_bearish_indicators_contradicts_them_and_says_why():
    verdicts = _analysis({
        "A": (BEARISH, "bullish", "ollama"), "B": (BULLISH, "bullish", "cache"), "C": (MIXED, "bullish", "ollama"),
        "D": (BEARISH, "sideways", "ollama"), "E": (BEARISH, "bullish", "fallback"),
    })
    assert {t: v["content_check"] for t, v in verdicts.items()} == {
        "A": "contradicts", "B": "agrees", "C": "differs", "D": "differs", "E": "not_llm"}
    assert verdicts["A"]["content_reason"] == ("model says bullish, indicators vote bearish (-3 of 3: close below "
                                               "SMA50, SMA20 below SMA50, MACD below its signal)")
    frame = pl.DataFrame(list(verdicts.values()))
    assert agreement_rate(frame, "agrees") == 0.25  # of the four model replies, one agrees


def _risk(concerns, narrative="a summary", source="ollama", **metrics):
    row = {"ticker": "A", "date": DAY, "volatility_20d": 0.2, "max_drawdown_252d": -0.1, "var_95_hist": 0.01,
           "beta": 1.0, "action": "HOLD", "stop_distance": 0.02, "concerns": concerns, "narrative": narrative,
           "llm_source": source} | metrics
    return risk_content(pl.DataFrame([row])).row(0, named=True)


def test_concerns_must_mention_every_metric_past_its_threshold():
    past = {"volatility_20d": 0.45, "max_drawdown_252d": -0.3}
    covered = _risk(["Vol is very high", "the drawdown is deep"], **past)
    assert covered["content_check"] == "covers"
    missed = _risk(["volatility is high"], "beta is fine", **past)
    assert missed["content_check"] == "misses"
    assert missed["content_reason"] == "past their thresholds but not mentioned: drawdown (past: volatility, drawdown)"
    assert _risk(["all quiet"])["content_check"] == "nothing_past"
    assert _risk(["all quiet"], source="fallback", **past)["content_check"] == "not_llm"
    # the summary counts as a mention too, and a stop inside two days of VaR is a metric of a trade
    trade = {"action": "BUY", "stop_distance": 0.02, "var_95_hist": 0.03}
    assert _risk(["VaR95 is 3%"], "the stop is too tight", **trade)["content_check"] == "covers"
