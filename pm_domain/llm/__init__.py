"""Everything the LLM stages need that is not orchestration: reply schemas, prompt templates,
the reply parser, the Ollama client with cache and telemetry, and the rule-based fallbacks."""
