"""PM_LLM_MODE=fallback is a choice: told at INFO, never a WARNING that suggests setting it again."""

from __future__ import annotations

from pm_resources.ollama import OllamaResource

ERROR = "Ollama unreachable at http://127.0.0.1:1: connection refused"
WRITES = "writing 3 rule-based fallback row(s), labelled llm_source='fallback'"


def test_a_chosen_fallback_is_information_without_the_hint():
    notice = OllamaResource(mode="fallback").fallback_notice("llm_signals", "mode=fallback: Ollama is not called", WRITES)
    assert not notice.warn
    assert notice.message == f"llm_signals: PM_LLM_MODE=fallback was chosen, Ollama is not called; {WRITES}"
    assert "skips" not in notice.message


def test_an_unreachable_server_under_auto_is_a_warning_with_the_hint():
    notice = OllamaResource(mode="auto").fallback_notice("llm_signals", ERROR, WRITES)
    assert notice.warn
    assert notice.message.startswith(f"llm_signals: {ERROR}; {WRITES} (mode=auto; ")
    assert "PM_LLM_MODE=fallback skips" in notice.message
