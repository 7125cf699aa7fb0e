"""Domain logic of Portfolio Maximizer: plain Python, polars in and out, no dagster import.

Everything here is unit-tested on its own; the Dagster layer (pm_assets, pm_resources, pm_jobs,
pm_sensors) only reads inputs, calls these functions and writes results.
"""
