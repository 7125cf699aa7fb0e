{{ config(materialized='table') }}
-- The LLM as a forecaster, per ticker, month of the signal date and knowledge: `clean` for signal
-- dates after the signal model's training cutoff (what it could not have known), `contaminated`
-- for the rest, an unknown cutoff included (docs/llm.md). Only clean rows are evidence; its own BUY/SELL calls
-- (llm_action, whatever the final signal was) scored on the realised return at the signal's
-- horizon, beside the forecast's own calls (forecast_action) and the "always up" baseline on the
-- SAME days as each caller's calls.
--   hit: a BUY whose return was > 0, a SELL whose return was < 0;
--   brier_score: mean((stated probability - hit)^2); 0.25 is what a constant 0.5 scores;
--   always_up_hit_rate: the share of those days whose return was > 0 (what calling BUY every
--   time would have hit).
WITH joined AS (
    SELECT
        s.ticker,
        CAST(date_trunc('month', s.date) AS DATE) AS month,
        CASE WHEN s.after_cutoff THEN 'clean' ELSE 'contaminated' END AS knowledge,
        s.forecast_action,
        s.confidence AS forecast_probability,
        s.llm_action,
        s.llm_confidence,
        o.realised_return_horizon AS realised
    FROM {{ ref('llm_signals') }} AS s
    JOIN {{ ref('signal_outcomes') }} AS o USING (ticker, date)
    WHERE o.realised_return_horizon IS NOT NULL
),
calls AS (
    SELECT ticker, month, knowledge, 'llm' AS caller, llm_action AS call, llm_confidence AS probability, realised
    FROM joined WHERE llm_action IN ('BUY', 'SELL')
    UNION ALL
    SELECT ticker, month, knowledge, 'forecast', forecast_action, forecast_probability, realised
    FROM joined WHERE forecast_action IN ('BUY', 'SELL')
),
scored AS (
    SELECT *, CASE WHEN (call = 'BUY' AND realised > 0) OR (call = 'SELL' AND realised < 0) THEN 1.0 ELSE 0.0 END AS hit
    FROM calls
)
SELECT
    ticker,
    month,
    knowledge,
    count(*) FILTER (WHERE caller = 'llm') AS llm_calls,
    avg(hit) FILTER (WHERE caller = 'llm') AS llm_hit_rate,
    avg(power(probability - hit, 2)) FILTER (WHERE caller = 'llm' AND probability IS NOT NULL) AS llm_brier_score,
    avg(CASE WHEN realised > 0 THEN 1.0 ELSE 0.0 END) FILTER (WHERE caller = 'llm') AS llm_days_always_up_hit_rate,
    count(*) FILTER (WHERE caller = 'forecast') AS forecast_calls,
    avg(hit) FILTER (WHERE caller = 'forecast') AS forecast_hit_rate,
    avg(power(probability - hit, 2)) FILTER (WHERE caller = 'forecast' AND probability IS NOT NULL) AS forecast_brier_score,
    avg(CASE WHEN realised > 0 THEN 1.0 ELSE 0.0 END) FILTER (WHERE caller = 'forecast') AS forecast_days_always_up_hit_rate
FROM scored
GROUP BY ticker, month, knowledge
ORDER BY ticker, month, knowledge
