"""Sensors: universe sync, signal validation, the memorization probe, LLM health, run failures, stranded runs and the marts' refresh."""

from pm_sensors.llm_health import llm_health_sensor
from pm_sensors.marts_refresh import marts_refresh_sensor
from pm_sensors.memorization_probe import memorization_probe_sensor
from pm_sensors.paper_reconciliation import paper_reconciliation_sensor
from pm_sensors.paper_trading import paper_trading_sensor
from pm_sensors.run_failures import run_failures_sensor
from pm_sensors.signal_validation import signal_validation_sensor
from pm_sensors.stranded_runs import stranded_runs_sensor
from pm_sensors.universe import watchlist_sync_sensor

ALL_SENSORS = [watchlist_sync_sensor, signal_validation_sensor, llm_health_sensor, run_failures_sensor,
               marts_refresh_sensor, stranded_runs_sensor, paper_trading_sensor, paper_reconciliation_sensor,
               memorization_probe_sensor]

__all__ = ["ALL_SENSORS", "llm_health_sensor", "marts_refresh_sensor", "memorization_probe_sensor", "paper_reconciliation_sensor", "paper_trading_sensor", "run_failures_sensor", "signal_validation_sensor",
           "stranded_runs_sensor", "watchlist_sync_sensor"]
