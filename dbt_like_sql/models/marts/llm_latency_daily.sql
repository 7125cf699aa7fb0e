{{ config(materialized='table') }}
-- Per day the calls were made, LLM stage and model: how many calls, how fast Ollama answered and
-- how many rows the cache or the fallback served. Latency (Ollama's total_duration) and tokens per
-- second exist only for replies Ollama generated, so they are measured over those alone.
SELECT
    CAST(called_at AS DATE) AS call_date,
    stage,
    coalesce(llm_model, '(none)') AS model,
    count(*) AS calls,
    count(*) FILTER (WHERE llm_source = 'ollama') AS ollama_calls,
    quantile_cont(latency_ms, 0.5) FILTER (WHERE llm_source = 'ollama') AS p50_latency_ms,
    quantile_cont(latency_ms, 0.95) FILTER (WHERE llm_source = 'ollama') AS p95_latency_ms,
    avg(tokens_per_second) FILTER (WHERE llm_source = 'ollama') AS mean_tokens_per_second,
    avg(CASE WHEN llm_source = 'cache' THEN 1.0 ELSE 0.0 END) AS cache_share,
    avg(CASE WHEN llm_source = 'fallback' THEN 1.0 ELSE 0.0 END) AS fallback_share
FROM {{ ref('llm_calls') }}
GROUP BY ALL
ORDER BY call_date, stage, model
