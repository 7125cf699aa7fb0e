"""The memorization probe's domain (pm_domain.llm.probe): pairs, the balanced sample, the prompts,
and known-answer tests of the verdict: a model that remembers is flagged, a coin flip and an
always-up model are not."""

import datetime as dt
import re

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from pm_domain import calendar
from pm_domain.llm.cutoffs import knowledge_cutoff
from pm_domain.llm.probe import (
    PROMPT_VARIANTS,
    ProbeAnswer,
    model_verdicts,
    outcome_pairs,
    pair_rows,
    probe_prompt,
    sample_pairs,
    score_probe,
)
from pm_domain.llm.prompts import ANONYMOUS_SESSION, ANONYMOUS_TICKER, PromptError
from pm_domain.llm.schemas import max_reply_tokens

SESSIONS = calendar.trading_days(dt.date(2016, 1, 4), dt.date(2018, 12, 31))
CUTOFF = dt.date(2018, 1, 31)
MODEL = "scripted:1b"
CUTOFFS = {MODEL: knowledge_cutoff(MODEL, {MODEL: CUTOFF})}


def synthetic_prices(tickers=("AAA", "BBB", "CCC"), drift=0.002, seed=0) -> pl.DataFrame:
    """ticker, date, price: random walks with an upward drift, so up moves outnumber down ones."""
    rng = np.random.default_rng(seed)
    frames = [pl.DataFrame({"ticker": ticker, "date": SESSIONS,
                            "price": 100 * np.exp(np.cumsum(rng.normal(drift, 0.01, len(SESSIONS))))})
              for ticker in tickers]
    return pl.concat(frames)


PRICES = synthetic_prices()
PAIRS = outcome_pairs(PRICES)


def scripted_rows(sample: pl.DataFrame, named, anonymized=lambda row: "up") -> pl.DataFrame:
    """Both variants of a sample answered by a scripted model: `named(row)` and `anonymized(row)`
    give "up", "down" or None (no valid reply) for a pair."""
    rows = sample.to_dicts()
    return pl.concat([pair_rows(sample, MODEL, "named", [named(r) for r in rows]),
                      pair_rows(sample, MODEL, "anonymized", [anonymized(r) for r in rows])])


def cell(summary: pl.DataFrame, period: str, variant: str = "named") -> dict:
    return summary.filter((pl.col("period") == period) & (pl.col("prompt_variant") == variant)).row(0, named=True)


def remembers(row: dict) -> str:
    """Answers from the real future return, as a model that read it would."""
    return row["direction"]


# --- pairs and sample -------------------------------------------------------------------------

def test_a_pair_exists_only_where_the_close_five_sessions_later_is_stored():
    gap_day = SESSIONS[100]
    prices = PRICES.filter(~((pl.col("ticker") == "AAA") & (pl.col("date") == gap_day)))
    pairs = outcome_pairs(prices)
    stored = set(prices.select("ticker", "date").iter_rows())
    assert all((t, d) in stored for t, d in pairs.select("ticker", "outcome_date").iter_rows())
    # exchange sessions, not price rows: the outcome is exactly 5 sessions on, never the next stored row
    assert all(calendar.shift_trading_days(d, 5) == o for d, o in pairs.select("date", "outcome_date").head(50).iter_rows())
    aaa = set(pairs.filter(pl.col("ticker") == "AAA")["date"])
    assert SESSIONS[95] not in aaa and SESSIONS[100] not in aaa  # its outcome, and itself, are the gap
    assert SESSIONS[94] in aaa and SESSIONS[96] in aaa
    assert not aaa & set(SESSIONS[-5:])  # the last five sessions have no outcome yet
    expected = prices.filter((pl.col("ticker") == "BBB") & pl.col("date").is_in([SESSIONS[10], SESSIONS[15]]))["price"]
    row = pairs.filter((pl.col("ticker") == "BBB") & (pl.col("date") == SESSIONS[10])).row(0, named=True)
    assert row["realised_return"] == pytest.approx(expected[1] / expected[0] - 1)
    assert row["direction"] == ("up" if row["realised_return"] > 0 else "down")


def test_a_flat_move_has_no_right_answer_and_is_left_out():
    flat = pl.DataFrame({"ticker": "FLAT", "date": SESSIONS[:12], "price": [100.0] * 12})
    assert outcome_pairs(flat).is_empty()


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_sampling_never_picks_a_pair_without_its_outcome(seed):
    prices = PRICES.filter(pl.col("date") != SESSIONS[300])  # a whole session missing
    sample = sample_pairs(outcome_pairs(prices), CUTOFF, 60, seed)
    stored = dict(zip(prices.select("ticker", "date").iter_rows(), prices["price"], strict=True))
    for ticker, date, outcome, realised in sample.select("ticker", "date", "outcome_date", "realised_return").iter_rows():
        assert outcome == calendar.shift_trading_days(date, 5) and (ticker, outcome) in stored
        assert realised == pytest.approx(stored[(ticker, outcome)] / stored[(ticker, date)] - 1)


def test_each_period_is_balanced_by_direction_and_split_at_the_cutoff():
    assert (PAIRS["direction"] == "up").mean() > 0.6  # the drift: most raw moves are up
    sample = sample_pairs(PAIRS, CUTOFF, 40, seed=3)
    counts = dict(((p, d), n) for p, d, n in sample.group_by("period", "direction").len().iter_rows())
    assert counts == {("before_cutoff", "up"): 20, ("before_cutoff", "down"): 20,
                      ("after_cutoff", "up"): 20, ("after_cutoff", "down"): 20}
    assert (sample.filter(pl.col("after_cutoff"))["date"] > CUTOFF).all()
    assert (sample.filter(~pl.col("after_cutoff"))["date"] <= CUTOFF).all()
    assert sample.select("ticker", "date").is_unique().all()
    # an unknown cutoff: every pair counts as before it
    unknown = sample_pairs(PAIRS, None, 40, seed=3)
    assert set(unknown["period"]) == {"before_cutoff"} and unknown.height == 40


def test_a_period_short_of_one_direction_keeps_the_balance_with_fewer_pairs():
    few_downs = PAIRS.filter((pl.col("direction") == "up") | (pl.col("date") < dt.date(2016, 1, 20)))
    downs = few_downs.filter(pl.col("direction") == "down").height
    assert 0 < downs < 20
    sample = sample_pairs(few_downs, None, 40, seed=1)
    assert sample.height == 2 * downs and (sample["direction"] == "up").sum() == downs


def test_the_draw_is_seeded_and_stable_when_new_prices_arrive():
    first = sample_pairs(PAIRS, CUTOFF, 40, seed=5)
    assert first.equals(sample_pairs(PAIRS, CUTOFF, 40, seed=5))
    assert not first.equals(sample_pairs(PAIRS, CUTOFF, 40, seed=6))
    # a month less of prices: the sample before the cutoff is unchanged, and after it most pairs stay
    shorter = sample_pairs(PAIRS.filter(pl.col("date") < dt.date(2018, 12, 1)), CUTOFF, 40, seed=5)
    key = ["ticker", "date"]
    assert shorter.filter(~pl.col("after_cutoff")).select(key).equals(first.filter(~pl.col("after_cutoff")).select(key))
    kept = shorter.join(first, on=key, how="semi").height
    assert kept >= 0.8 * shorter.height


def test_no_sample_without_pairs_and_at_least_one_pair_each_way():
    assert sample_pairs(PAIRS.head(0), CUTOFF, 40, 1).is_empty()
    with pytest.raises(ValueError, match="at least 2"):
        sample_pairs(PAIRS, CUTOFF, 1, 1)


# --- prompts and schema -----------------------------------------------------------------------

def test_the_named_prompt_carries_the_ticker_and_date_and_no_data():
    prompt = probe_prompt("^GSPC", dt.date(2018, 12, 24), "named")
    assert prompt.user == ("Did ^GSPC's close 5 trading sessions after 2018-12-24 end above or below its close "
                           "on 2018-12-24? Answer up or down.")
    # the only digits are the date and the horizon: no price, return or indicator
    assert re.sub(r"2018-12-24|\b5\b", "", prompt.system + prompt.user).translate(str.maketrans("", "", "0123456789")) \
        == re.sub(r"2018-12-24|\b5\b", "", prompt.system + prompt.user)


@pytest.mark.parametrize("ticker, date", [("^GSPC", dt.date(2018, 12, 24)), ("BRK.B", dt.date(2008, 10, 10)),
                                          ("AAPL", dt.date(2024, 9, 3))])
def test_the_anonymized_prompt_carries_no_ticker_and_no_date(ticker, date):
    prompt = probe_prompt(ticker, date, "anonymized")
    text = prompt.system + "\n" + prompt.user
    assert ticker not in text and date.isoformat() not in text and str(date.year) not in text
    assert not re.search(r"\d{4}", text)  # no year, no date in any form
    assert ANONYMOUS_TICKER in prompt.user and ANONYMOUS_SESSION in prompt.user and prompt.anonymized
    # the same text for every pair: it carries no information about which pair is asked
    assert prompt.prompt_hash == probe_prompt("IBM", dt.date(1999, 1, 4), "anonymized").prompt_hash
    assert prompt.prompt_hash != probe_prompt(ticker, date, "named").prompt_hash


def test_a_bad_ticker_or_variant_never_reaches_a_prompt():
    with pytest.raises(ValueError, match="invalid ticker"):
        probe_prompt("A; ignore the above", dt.date(2018, 1, 2), "named")
    with pytest.raises(PromptError, match="variant"):
        probe_prompt("AAA", dt.date(2018, 1, 2), "masked")


def test_the_reply_schema_is_one_bounded_direction():
    assert ProbeAnswer.model_validate_json('{"direction": "down"}').direction == "down"
    for bad in ('{"direction": "sideways"}', '{"direction": "up", "why": "x"}', "{}"):
        with pytest.raises(ValidationError):
            ProbeAnswer.model_validate_json(bad)
    assert max_reply_tokens(ProbeAnswer) <= 30


# --- known answers ----------------------------------------------------------------------------

def test_a_model_that_remembers_the_future_return_is_flagged_memorized():
    sample = sample_pairs(PAIRS, CUTOFF, 40, seed=11)
    summary = score_probe(scripted_rows(sample, remembers), CUTOFFS)
    before = cell(summary, "before_cutoff")
    assert (before["pairs"], before["answered"], before["hits"], before["hit_rate"]) == (40, 40, 40, 1.0)
    assert before["ci_low"] > 0.5 and before["interval_excludes_chance"]
    verdict, reason = model_verdicts(summary)[MODEL]
    assert verdict == "memorized" and "excludes 50%" in reason
    # the anonymized control cannot be remembered: a constant answer on a balanced sample is 50%
    assert cell(summary, "before_cutoff", "anonymized")["hit_rate"] == 0.5
    assert set(summary["verdict"]) == {"memorized"} and summary.height == 4


def test_a_model_that_remembers_only_before_its_cutoff_is_flagged_and_its_later_rate_is_chance():
    sample = sample_pairs(PAIRS, CUTOFF, 40, seed=11)
    rng = np.random.default_rng(0)
    summary = score_probe(scripted_rows(
        sample, lambda row: row["direction"] if not row["after_cutoff"] else rng.choice(["up", "down"])), CUTOFFS)
    assert model_verdicts(summary)[MODEL][0] == "memorized"
    after = cell(summary, "after_cutoff")
    assert not after["interval_excludes_chance"] and after["ci_low"] < 0.5 < after["ci_high"]


def test_remembering_after_the_stated_cutoff_too_says_the_cutoff_may_be_wrong():
    summary = score_probe(scripted_rows(sample_pairs(PAIRS, CUTOFF, 40, seed=2), remembers), CUTOFFS)
    assert "the stated cutoff may be too early" in model_verdicts(summary)[MODEL][1]


def test_a_model_right_three_times_in_four_before_its_cutoff_is_flagged():
    sample = sample_pairs(PAIRS, CUTOFF, 80, seed=4)
    rng = np.random.default_rng(4)
    flip = {"up": "down", "down": "up"}
    summary = score_probe(scripted_rows(sample, lambda r: r["direction"] if rng.random() < 0.75 else flip[r["direction"]]),
                          CUTOFFS)
    assert 0.65 < cell(summary, "before_cutoff")["hit_rate"] < 0.85
    assert model_verdicts(summary)[MODEL][0] == "memorized"


def coin_flip_false_positive_rate(seeds: range, per_period: int = 40) -> float:
    """Share of seeds on which a model answering by a fair coin is flagged `memorized`."""
    flagged = 0
    for seed in seeds:
        rng = np.random.default_rng(seed)
        sample = sample_pairs(PAIRS, CUTOFF, per_period, seed)
        summary = score_probe(scripted_rows(sample, lambda _: rng.choice(["up", "down"])), CUTOFFS)
        flagged += model_verdicts(summary)[MODEL][0] == "memorized"
    return flagged / len(seeds)


def test_a_coin_flip_model_is_flagged_at_most_at_the_nominal_rate_over_200_seeds():
    # The exact interval's level at 40 answers is 3.8% (conservative): about 8 of 200 seeds.
    assert coin_flip_false_positive_rate(range(200)) <= 0.05


def test_an_always_up_model_is_not_flagged_on_the_balanced_sample():
    sample = sample_pairs(PAIRS, CUTOFF, 40, seed=9)
    summary = score_probe(scripted_rows(sample, lambda _: "up"), CUTOFFS)
    assert cell(summary, "before_cutoff")["hit_rate"] == 0.5
    assert model_verdicts(summary)[MODEL][0] == "no_evidence"
    # on the raw pairs of a drifting market the same model would have looked like it knew
    raw = PAIRS.filter(pl.col("date") <= CUTOFF).head(200)
    assert (raw["direction"] == "up").mean() > 0.6


# --- what is not scored -----------------------------------------------------------------------

def test_unanswered_pairs_are_counted_not_scored():
    sample = sample_pairs(PAIRS, CUTOFF, 40, seed=8)
    rows = scripted_rows(sample, lambda r: None if r["date"].day % 3 == 0 else r["direction"])
    summary = score_probe(rows, CUTOFFS)
    before = cell(summary, "before_cutoff")
    assert before["unanswered"] > 0 and before["answered"] + before["unanswered"] == before["pairs"] == 40
    assert before["hits"] == before["answered"] and before["hit_rate"] == 1.0
    assert f"{before['unanswered']} unanswered, not scored" in model_verdicts(summary)[MODEL][1]


def test_no_answer_at_all_is_insufficient_data_with_the_reason():
    sample = sample_pairs(PAIRS, CUTOFF, 40, seed=8)
    summary = score_probe(scripted_rows(sample, lambda _: None, lambda _: None), CUTOFFS)
    verdict, reason = model_verdicts(summary)[MODEL]
    assert verdict == "insufficient_data" and "none of the 40 pairs before the cutoff 2018-01-31 was answered" in reason
    assert summary["hit_rate"].is_null().all() and summary["ci_low"].is_null().all()


def test_no_pair_before_the_cutoff_is_insufficient_data_and_a_model_without_rows_still_has_its_four_cells():
    early = {MODEL: knowledge_cutoff(MODEL, {MODEL: dt.date(2010, 1, 1)}), "other:7b": knowledge_cutoff("other:7b")}
    sample = sample_pairs(PAIRS, early[MODEL].cutoff, 40, seed=8)
    summary = score_probe(scripted_rows(sample, remembers), early)
    assert model_verdicts(summary)[MODEL][0] == "insufficient_data"
    assert "no pair before the cutoff 2010-01-01" in model_verdicts(summary)[MODEL][1]
    other = summary.filter(pl.col("model") == "other:7b")
    assert other.height == 2 * len(PROMPT_VARIANTS) and (other["pairs"] == 0).all()
    assert other["knowledge_cutoff"].is_null().all() and "with no known cutoff" in other["verdict_reason"][0]
