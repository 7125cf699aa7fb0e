{{ config(materialized='table') }}
-- Per ticker and month of the signal date: how many signals of each action, how the calls turned
-- out, and how well their confidence was calibrated.
--   hit_rate: hits / calls whose outcome is known (BUY or SELL, judged at the signal's horizon);
--   mean_realised_return_*: the market's move after every signal (entry at the next close);
--   mean_call_return_*: that move signed by the call (+ for BUY, - for SELL), before costs;
--   brier_score: mean((confidence - hit)^2) over the scored calls; 0.25 is what a constant 0.5 scores.
WITH outcomes AS (
    SELECT
        ticker,
        CAST(date_trunc('month', date) AS DATE) AS month,
        action,
        confidence,
        hit,
        realised_return_5d,
        realised_return_30d,
        CASE action WHEN 'BUY' THEN 1 WHEN 'SELL' THEN -1 ELSE 0 END AS direction
    FROM {{ ref('signal_outcomes') }}
)
SELECT
    ticker,
    month,
    count(*) AS signals,
    count(*) FILTER (WHERE action = 'BUY') AS buys,
    count(*) FILTER (WHERE action = 'SELL') AS sells,
    count(*) FILTER (WHERE action = 'HOLD') AS holds,
    count(hit) AS calls_scored,
    avg(CASE WHEN hit THEN 1.0 ELSE 0.0 END) FILTER (WHERE hit IS NOT NULL) AS hit_rate,
    avg(realised_return_5d) AS mean_realised_return_5d,
    avg(realised_return_30d) AS mean_realised_return_30d,
    avg(direction * realised_return_5d) FILTER (WHERE direction <> 0) AS mean_call_return_5d,
    avg(direction * realised_return_30d) FILTER (WHERE direction <> 0) AS mean_call_return_30d,
    avg(power(confidence - CASE WHEN hit THEN 1.0 ELSE 0.0 END, 2))
        FILTER (WHERE hit IS NOT NULL AND confidence IS NOT NULL) AS brier_score
FROM outcomes
GROUP BY ticker, month
ORDER BY ticker, month
