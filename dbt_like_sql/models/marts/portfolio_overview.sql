{{ config(materialized='view') }}
-- The page a user opens each morning: per ticker, the latest signal, risk level and backtest
-- verdict (and whether it survives 2x and 5x the cost and one session more of delay:
-- robust_verdict), and how fresh each is. sessions_behind counts the price dates the store holds for
-- other tickers after this ticker's last price (0: up to date with the universe).
WITH latest_price AS (
    SELECT ticker, date AS last_price_date, close AS last_close, ingested_at AS price_ingested_at
    FROM {{ ref('prices') }}
    QUALIFY row_number() OVER (PARTITION BY ticker ORDER BY date DESC) = 1
),
price_dates AS (
    SELECT DISTINCT date FROM {{ ref('prices') }}
),
latest_signal AS (
    SELECT ticker, date AS signal_date, action, confidence, position_size, decided_by, llm_source AS signal_source
    FROM {{ ref('llm_signals') }}
    QUALIFY row_number() OVER (PARTITION BY ticker ORDER BY date DESC) = 1
),
latest_risk AS (
    SELECT ticker, date AS risk_date, risk_level, risk_score
    FROM {{ ref('risk_assessments') }}
    QUALIFY row_number() OVER (PARTITION BY ticker ORDER BY date DESC) = 1
),
latest_backtest AS (
    SELECT ticker, date AS backtest_date, verdict, verdict_reason, robust_verdict, robust_reason,
           total_return AS backtest_total_return,
           buy_hold_total_return AS backtest_buy_hold_return, sharpe AS backtest_sharpe
    FROM {{ ref('backtests') }}
    QUALIFY row_number() OVER (PARTITION BY ticker ORDER BY date DESC) = 1
)
SELECT
    p.ticker,
    p.last_price_date,
    p.last_close,
    p.price_ingested_at,
    (SELECT count(*) FROM price_dates d WHERE d.date > p.last_price_date) AS sessions_behind,
    s.signal_date,
    s.action,
    s.confidence,
    s.position_size,
    s.decided_by,
    s.signal_source,
    r.risk_date,
    r.risk_level,
    r.risk_score,
    b.backtest_date,
    b.verdict,
    b.verdict_reason,
    b.robust_verdict,
    b.robust_reason,
    b.backtest_total_return,
    b.backtest_buy_hold_return,
    b.backtest_sharpe
FROM latest_price p
LEFT JOIN latest_signal s USING (ticker)
LEFT JOIN latest_risk r USING (ticker)
LEFT JOIN latest_backtest b USING (ticker)
ORDER BY p.ticker
