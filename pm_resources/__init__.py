"""Resources: the DuckDB store (dagster-duckdb's DuckDBResource), the price source and Ollama."""

from pm_resources.ollama import OllamaResource
from pm_resources.price_source import PriceSourceResource

__all__ = ["OllamaResource", "PriceSourceResource"]
