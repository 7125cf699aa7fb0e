"""Walk-forward accuracy of ts_forecasts on the bundled sample data (S&P 500, NASDAQ).

Every trading day of the period is a forecast origin; each forecast reads prices up to its date
only (the same engine, fast path and defaults the asset uses). Prints, per horizon: RMSE and MASE
of the ensemble and each model against the random walk, a Diebold-Mariano test of ensemble vs
random walk, the empirical coverage of the 90% interval and the directional hit rate (with the
naive 'always up' call beside it).

    python benchmarks/evaluate_forecasts.py                      # the reported period, 2010-2018
    python benchmarks/evaluate_forecasts.py --start 2002-01-02 --end 2009-12-31   # development period

The defaults of ForecastConfig were set by looking at the development period only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pm_domain import calendar  # noqa: E402
from pm_domain.forecasting import evaluation  # noqa: E402
from pm_domain.forecasting.engine import MEAN_MODELS, ForecastConfig, forecast_tickers, price_histories  # noqa: E402
from pm_domain.price_sources import SAMPLE_DATASETS, fetch_prices  # noqa: E402




def sample_histories(tickers: list[str], end: dt.date) -> dict[str, pl.DataFrame]:
    return price_histories(fetch_prices("sample", tickers, calendar.trading_days(dt.date(1999, 1, 4), end)))


def score(rows: pl.DataFrame, horizon: int) -> list[str]:
    subset = rows.filter(pl.col("horizon") == horizon).sort("ticker", "date")
    realised = subset["realised"].to_numpy()
    lines = [f"\nh = {horizon} sessions: {subset.height} forecasts, "
             f"{subset['date'].min()} .. {subset['date'].max()}",
             "| model | RMSE | RMSE / RW | MASE | hit rate |", "|---|---|---|---|---|"]
    columns = [("ensemble", "expected_log_return")] + [(m, f"forecast_{m}") for m in MEAN_MODELS]
    for name, column in columns:
        present = subset.filter(pl.col(column).is_not_null())
        forecast = present[column].to_numpy()
        truth = present["realised"].to_numpy()
        rw = truth  # the random walk forecasts 0, so its error is the outcome itself
        errors = truth - forecast
        hit = evaluation.hit_rate(forecast, truth)
        coverage_note = "" if present.height == subset.height else f" ({present.height} forecasts)"
        lines.append(f"| {name}{coverage_note} | {evaluation.rmse(errors):.5f} | "
                     f"{evaluation.rmse(errors) / evaluation.rmse(rw):.4f} | "
                     f"{evaluation.mase(errors, rw):.4f} | {'-' if np.isnan(hit) else f'{hit:.3f}'} |")
    # Same-day losses of the two indices move together: test the per-date mean loss differential
    # (one series in date order), not the tickers stacked as if they were independent days.
    per_date = (
        subset.with_columns(((pl.col("realised") - pl.col("expected_log_return")) ** 2
                             - pl.col("realised") ** 2).alias("loss_differential"))
        .group_by("date").agg(pl.col("loss_differential").mean()).sort("date")
    )
    dm = evaluation.loss_differential_test(per_date["loss_differential"].to_numpy(), horizon)
    lines.append(f"Diebold-Mariano ensemble vs random walk (squared error, HLN, per-date mean over tickers): "
                 f"DM = {dm.statistic:+.3f}, p = {dm.p_value:.3f} "
                 f"({'ensemble better' if dm.statistic < 0 else 'random walk better'}"
                 f"{'' if dm.p_value < 0.05 else ', not significant at 5%'})")
    cover = evaluation.coverage(realised, subset["lower_90"].to_numpy(), subset["upper_90"].to_numpy())
    lines.append(f"90% interval coverage: {cover:.3f}; 'always up' hit rate: {evaluation.up_share(realised):.3f}; "
                 f"volatility fallback (EWMA) on {subset['volatility_model'].ne('garch_t').mean():.0%} of origins")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default="2010-01-04")
    parser.add_argument("--end", default="2018-12-31")
    parser.add_argument("--tickers", nargs="+", default=list(SAMPLE_DATASETS))
    parser.add_argument("--refit-every", type=int, default=ForecastConfig().refit_every)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--error-window", type=int, default=ForecastConfig().error_window)
    parser.add_argument("--variance-share", type=float, default=ForecastConfig().ssa_variance_share)
    args = parser.parse_args()
    start, end = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    config = ForecastConfig(refit_every=args.refit_every, error_window=args.error_window,
                            ssa_variance_share=args.variance_share)
    histories = sample_histories(args.tickers, end)
    targets = calendar.trading_days(start, end)
    began = time.perf_counter()
    # Forecasting reads only the prices up to each target; the outcomes are joined afterwards.
    forecasts = forecast_tickers(histories, targets, calendar.session_numbers(end), config, workers=args.workers).rows
    elapsed = time.perf_counter() - began
    rows = forecasts.join(evaluation.realised_log_returns(histories, config.horizons), on=["ticker", "date", "horizon"])
    print(f"walk-forward evaluation of ts_forecasts on {', '.join(args.tickers)}, origins {start} .. {end}, "
          f"refit every {config.refit_every} sessions, fit window {config.fit_window}; "
          f"{forecasts.height} forecasts in {elapsed:.1f} s")
    for horizon in config.horizons:
        print("\n".join(score(rows, horizon)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
