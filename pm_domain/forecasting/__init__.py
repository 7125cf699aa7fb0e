"""Time-series forecasting for `ts_forecasts`: one plain module per model, no dagster import.

Every model forecasts the h-session log return log(P[t+h] / P[t]) from log prices up to t.
`engine` runs them walk-forward; `evaluation` scores them against the random walk.
"""
