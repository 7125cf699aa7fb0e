"""Sensors (universe sync, signal validation, LLM health, run failure) arrive with the automation issue."""
