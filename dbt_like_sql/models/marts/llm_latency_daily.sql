{{ config(materialized='table') }}
-- Per day the calls were made, LLM stage and model: how many rows, how many requests reached the
-- server, how fast it answered, and how many rows the cache, the fallback or a skip served.
-- Latency (Ollama's total_duration) and tokens per second exist only for replies the server
-- generated in that call, valid or not, so they are measured over those alone.
SELECT
    CAST(called_at AS DATE) AS call_date,
    stage,
    coalesce(llm_model, '(none)') AS model,
    count(*) AS calls,
    count(*) FILTER (WHERE latency_ms IS NOT NULL) AS ollama_calls,
    count(*) FILTER (WHERE latency_ms IS NOT NULL AND llm_outcome = 'ok') AS valid_replies,
    quantile_cont(latency_ms, 0.5) AS p50_latency_ms,
    quantile_cont(latency_ms, 0.95) AS p95_latency_ms,
    avg(tokens_per_second) AS mean_tokens_per_second,
    avg(CASE WHEN llm_source = 'cache' THEN 1.0 ELSE 0.0 END) AS cache_share,
    avg(CASE WHEN llm_source = 'fallback' THEN 1.0 ELSE 0.0 END) AS fallback_share,
    avg(CASE WHEN llm_source = 'skipped' THEN 1.0 ELSE 0.0 END) AS skipped_share
FROM {{ ref('llm_calls') }}
GROUP BY ALL
ORDER BY call_date, stage, model
