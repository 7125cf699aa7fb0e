import subprocess
import sys

from dagster import AssetKey, Definitions


def test_definitions_load_with_both_assets_their_checks_and_the_job():
    from pm_jobs.definitions import defs

    Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {AssetKey("prices"), AssetKey("features")} <= set(graph.get_all_asset_keys())
    assert {k.name for k in graph.asset_check_keys} >= {"high_is_highest", "no_missing_trading_days"}
    assert {j.name for j in defs.resolve_all_job_defs()} >= {"daily_research", "signal_evaluation", "portfolio_book",
                                                              "nightly_paper", "memorization_evaluation"}
    assert [s.name for s in defs.schedules] == ["nightly_research"]
    assert sorted(s.name for s in defs.sensors) == ["llm_health", "marts_refresh", "memorization_probe",
                                                    "paper_reconciliation", "paper_trading", "run_failures",
                                                    "signal_validation", "stranded_runs", "watchlist_sync"]


def test_pm_cli_rejects_bad_tickers_with_exit_code_2(tmp_path):
    env = {"DAGSTER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PM_WATCHLIST": str(tmp_path / "watchlist.txt")}
    out = subprocess.run([sys.executable, "-m", "pm_jobs.cli", "tickers", "add", "A;B"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "invalid ticker 'A;B'" in out.stderr
    out = subprocess.run([sys.executable, "-m", "pm_jobs.cli", "tickers", "add", "^GSPC", "BRK.B"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    listed = subprocess.run([sys.executable, "-m", "pm_jobs.cli", "tickers", "list"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert listed.stdout.split() == ["^GSPC", "BRK.B"]
    removed = subprocess.run([sys.executable, "-m", "pm_jobs.cli", "tickers", "remove", "BRK.B", "MSFT"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert removed.returncode == 0 and removed.stdout.startswith("removed: BRK.B (their stored rows stay")
    listed = subprocess.run([sys.executable, "-m", "pm_jobs.cli", "tickers", "list"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert listed.stdout.split() == ["^GSPC"]


def test_every_asset_check_says_what_it_asks():
    from pm_jobs.definitions import defs

    graph = defs.resolve_asset_graph()
    undescribed = [f"{key.asset_key.to_user_string()}:{key.name}" for key in graph.asset_check_keys
                   if not graph.get_check_spec(key).description]
    assert undescribed == []


def test_every_run_on_one_machine_executes_its_steps_in_the_run_process():
    """The automated jobs and the asset runs of the UI and `dagster asset materialize` alike: a
    process per step cost more than a small night's own work (pm_jobs/executors.py)."""
    from dagster import in_process_executor

    from pm_jobs.definitions import defs

    for name in ("daily_research", "signal_evaluation", "portfolio_book", "nightly_paper", "memorization_evaluation"):
        assert defs.resolve_job_def(name).executor_def is in_process_executor, name
    assert defs.resolve_implicit_global_asset_job_def().executor_def is in_process_executor


def test_loading_the_definitions_leaves_the_model_and_chart_libraries_unloaded():
    """Every Dagster process (a run, a step, a code server) imports the definitions; statsmodels,
    arch, scipy.stats and matplotlib (about 3 s of the 6.8 s it took) load only in the steps that
    fit or draw (docs/scale.md "Process start")."""
    heavy = ["statsmodels", "arch", "scipy.stats", "matplotlib"]
    code = f"import sys, pm_jobs.definitions; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
