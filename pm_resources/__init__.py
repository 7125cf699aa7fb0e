"""Resources: the DuckDB store and the price source. Ollama joins with the LLM stages."""

from pm_resources.price_source import PriceSourceResource

__all__ = ["PriceSourceResource"]
