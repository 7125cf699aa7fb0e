"""Walk-forward forecasting of every model, the ensemble and its interval, per ticker.

Speed without look-ahead: model parameters are refitted on a fixed grid of sessions (every
`refit_every`-th session of the exchange calendar, counted from a fixed epoch), and between two
refits each model only updates its state with the new prices (Kalman filter for SARIMAX, the
variance recursion for GARCH/EWMA, fixed linear maps for the SSA family). The grid does not depend
on the range a run covers, so a date gives the same row whether it is materialized alone or inside
a backfill. `refit_every=1` is the naive path: every model refitted from scratch on every date.

The forecast at origin t reads log prices up to t only: fits end at the grid session on or before
t, filters and maps read values up to t, ensemble weights use errors of forecasts whose outcome
(t' + h <= t) was known at t.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import import_module
from multiprocessing import current_process, get_context

import numpy as np
import polars as pl
from threadpoolctl import threadpool_limits

from pm_domain.features import return_price
from pm_domain.forecasting import baselines, garch, mssa_rl, samossa, sarimax
from pm_domain.forecasting.ensemble import inverse_mse_weights
from pm_domain.forecasting.kept_fits import KeptFit, ModelFits, encode, fit_key, fit_models, library_versions

ENGINE_VERSION = "ts_forecasts/1"
MODEL_LIBRARIES = ("arch.univariate", "statsmodels.tsa.ar_model", "statsmodels.tsa.statespace.sarimax")
MEAN_MODELS = ("random_walk", "drift", "sarimax", "samossa", "mssa_rl")
PARALLEL_MIN_PARTITIONS = 1000  # below this, starting workers (~2 s) costs more than it saves
PARALLEL_MIN_FITS = 50  # ~0.2 s each: below ~10 s of fitting, starting workers costs more than it saves
PARALLEL_MIN_TICKERS = 150  # a ticker's night from kept fits is ~0.07 s of filters and maps


class ForecastError(ValueError):
    """Nothing can be forecast for a ticker and date: the message says which and why."""


@dataclass(frozen=True)
class ForecastConfig:
    horizons: tuple[int, ...] = (1, 5, 20)
    fit_window: int = 500
    refit_every: int = 20
    min_history: int = 250
    sarimax_order: tuple[int, int, int] = (1, 1, 0)
    ssa_window: int = 60
    ssa_variance_share: float = 0.3
    ar_lags: int = 2
    error_window: int = 60
    min_errors: int = 20
    interval_level: float = 0.90

    @property
    def warmup_origins(self) -> int:
        """Origins before the first target whose errors the first target's weights need."""
        return self.error_window + max(self.horizons) - 1

    @property
    def lookback_sessions(self) -> int:
        """Sessions of prices before a target date that its forecast can read."""
        return self.fit_window + self.refit_every + self.warmup_origins

    def describe(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class BlockForecasts:
    """What one block of origins (those sharing a fit) gets, in the block's origin order: per
    model forecasts (origins x horizons, "variance" the cumulative variance per horizon), numbers
    and texts. A number or text given once holds for every origin; a name left out stays empty."""

    forecasts: dict[str, np.ndarray] = field(default_factory=dict)
    numbers: dict[str, np.ndarray | float] = field(default_factory=dict)
    text: dict[str, list | str | None] = field(default_factory=dict)


@dataclass
class _OriginColumns:
    """Per-origin results of one ticker, assembled block by block (NaN and None where empty)."""

    n: int
    horizons: int
    forecasts: dict[str, np.ndarray] = field(default_factory=dict)
    text: dict[str, list] = field(default_factory=dict)
    numbers: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for model in MEAN_MODELS:
            self.forecasts[model] = np.full((self.n, self.horizons), np.nan)
        self.forecasts["variance"] = np.full((self.n, self.horizons), np.nan)
        for name in ("volatility_model", "volatility_fallback_reason", "mssa_regime",
                     "mssa_rank_table", "models_failed", "params_fit_date"):
            self.text[name] = [None] * self.n
        for name in ("garch_persistence", "garch_nu", "sarimax_ljung_box_p", "samossa_rank", "mssa_rank",
                     "fit_sessions", "sarimax_converged", "garch_converged"):
            self.numbers[name] = np.full(self.n, np.nan)

    def put(self, slots: np.ndarray, block: BlockForecasts) -> None:
        """Store a block's results at its origins' slots."""
        for name, values in block.forecasts.items():
            self.forecasts[name][slots] = values
        for name, values in block.numbers.items():
            self.numbers[name][slots] = values
        for name, values in block.text.items():
            per_origin = values if isinstance(values, list) else [values] * len(slots)
            for slot, value in zip(slots, per_origin, strict=True):
                self.text[name][slot] = value


def model_versions() -> str:
    versions = library_versions()
    return json.dumps({"engine": ENGINE_VERSION} | {name: versions[name] for name in ("statsmodels", "arch", "numpy")},
                      sort_keys=True)


def _anchor(position: int, session_number: int, config: ForecastConfig) -> int | None:
    """Where the parameters used at `position` were fitted: the grid session on or before it, or
    the origin itself while the grid session lacks `min_history` prices; None: too little history."""
    grid = position - session_number % config.refit_every
    if grid + 1 >= config.min_history:
        return grid
    if position + 1 >= config.min_history:
        return position
    return None


def _fitted_block(log_prices: np.ndarray, anchor: int, origins: np.ndarray, config: ForecastConfig,
                  dates: Sequence[dt.date], models: ModelFits) -> BlockForecasts:
    """Forecast the block's `origins` with the models fitted on the window ending at `anchor`."""
    start = max(0, anchor - config.fit_window + 1)
    segment = log_prices[start : origins.max() + 1]
    local = origins - start
    horizons = config.horizons
    block = BlockForecasts()
    failed = list(models.failures)

    segment_returns = np.diff(segment)
    last_return = local - 1  # the return ending at each origin
    volatility = models.volatility
    next_variance = garch.conditional_variance(volatility, segment_returns)[local]
    paths = garch.variance_paths(volatility, next_variance, max(horizons))
    block.forecasts["variance"] = np.cumsum(paths, axis=1)[:, np.asarray(horizons) - 1]

    def forecast(name: str, run: Callable[[], None]) -> None:
        try:
            run()
        except Exception as exc:  # noqa: BLE001 - a model failing is recorded, the others go on
            failed.append(f"{name}: {type(exc).__name__}: {exc}"[:160])

    def sarimax_forecast(fit: sarimax.SarimaxFit) -> None:
        block.forecasts["sarimax"] = sarimax.forecast_sarimax(fit, segment, local, horizons)
        block.numbers["sarimax_converged"] = fit.converged
        block.numbers["sarimax_ljung_box_p"] = fit.ljung_box_p

    def samossa_forecast(fit: samossa.SamossaFit) -> None:
        block.forecasts["samossa"] = samossa.forecast_samossa(fit, segment_returns, last_return, horizons)
        block.numbers["samossa_rank"] = fit.rank

    def mssa_rl_forecast(fit: mssa_rl.MssaRlFit) -> None:
        forecasts, regimes, ranks = mssa_rl.forecast_mssa_rl(fit, segment_returns, last_return, horizons)
        block.forecasts["mssa_rl"] = forecasts
        block.numbers["mssa_rank"] = ranks
        block.text["mssa_rank_table"] = fit.table_json()
        block.text["mssa_regime"] = list(regimes)

    if models.sarimax is not None:
        forecast("sarimax", lambda: sarimax_forecast(models.sarimax))
    if models.samossa is not None:
        forecast("samossa", lambda: samossa_forecast(models.samossa))
    if models.mssa_rl is not None:
        forecast("mssa_rl", lambda: mssa_rl_forecast(models.mssa_rl))

    block.text |= {"volatility_model": volatility.model, "volatility_fallback_reason": volatility.fallback_reason,
                   "models_failed": "; ".join(failed) or None, "params_fit_date": dates[anchor].isoformat()}
    block.numbers["garch_persistence"] = np.nan if volatility.persistence is None else volatility.persistence
    block.numbers["garch_converged"] = volatility.converged
    # The Student-t degrees of freedom of the distribution the rows' sigma belongs to (risk's
    # model VaR reads it); null when EWMA, whose rows are read as normal.
    block.numbers["garch_nu"] = np.nan if volatility.is_fallback or volatility.nu is None else volatility.nu
    block.numbers["fit_sessions"] = models.fit_sessions
    return block


def _fit_window(log_prices: np.ndarray, anchor: int, config: ForecastConfig, dates: Sequence[dt.date]) -> np.ndarray:
    window = log_prices[max(0, anchor - config.fit_window + 1) : anchor + 1]
    if not np.any(np.diff(window) != 0):
        raise ForecastError(
            f"prices are constant over the {len(window)} sessions to {dates[anchor]}: nothing to forecast"
        )
    return window


def _baseline_block(log_prices: np.ndarray, origins: np.ndarray, config: ForecastConfig) -> BlockForecasts:
    """Origins with less than `min_history` prices: baselines and EWMA volatility only, flagged."""
    n = len(origins)
    variance = np.full((n, len(config.horizons)), np.nan)
    fit_sessions = np.full(n, np.nan)
    model: list[str | None] = [None] * n
    reasons: list[str | None] = [None] * n
    skipped: list[str | None] = [None] * n
    for i, origin in enumerate(origins):
        returns = np.diff(log_prices[: origin + 1])
        if len(returns) < 2:
            continue  # not even a volatility estimate: the target check below names the date
        reason = f"{origin + 1} sessions of history < min_history {config.min_history}"
        volatility = garch.ewma_fit(reason)
        next_variance = garch.conditional_variance(volatility, returns)[-1:]
        paths = garch.variance_paths(volatility, next_variance, max(config.horizons))
        variance[i] = np.cumsum(paths, axis=1)[0, np.asarray(config.horizons) - 1]
        model[i], reasons[i] = volatility.model, reason
        skipped[i] = f"sarimax, samossa, mssa_rl skipped: {reason}"
        fit_sessions[i] = origin + 1
    return BlockForecasts(forecasts={"variance": variance}, numbers={"fit_sessions": fit_sessions},
                          text={"volatility_model": model, "volatility_fallback_reason": reasons, "models_failed": skipped})


def forecast_series(
    log_prices: np.ndarray,
    dates: Sequence[dt.date],
    session_numbers: np.ndarray,
    targets: np.ndarray,
    config: ForecastConfig,
    kept: Mapping[dt.date, KeptFit] | None = None,
) -> dict[str, object]:
    """Forecasts for the target positions of one ticker's consecutive sessions.

    Returns arrays over the targets: per-model forecasts, ensemble mean, sigma, bounds, weights
    (per horizon) and diagnostics; under "fits", the fits a later run can reuse (see _models_at);
    under "fits_reused" and "fits_made", how many anchors took a kept fit or fitted afresh.
    """
    if not np.all(np.isfinite(log_prices)):
        bad = dates[int(np.argmin(np.isfinite(log_prices)))]
        raise ForecastError(f"price missing, zero or negative on {bad}")
    first_origin = max(0, int(targets.min()) - config.warmup_origins)
    origins = np.arange(first_origin, int(targets.max()) + 1)
    columns = _OriginColumns(len(origins), len(config.horizons))
    columns.forecasts["random_walk"][:] = baselines.random_walk(origins, config.horizons)
    columns.forecasts["drift"][:] = baselines.drift(log_prices, origins, config.horizons, config.fit_window)

    blocks: dict[int | None, list[int]] = {}
    for slot, origin in enumerate(origins):
        blocks.setdefault(_anchor(int(origin), int(session_numbers[origin]), config), []).append(slot)
    fits = _Fits(kept or {}, keep_from=len(log_prices) - 1 - config.warmup_origins - config.refit_every)
    for anchor, slot_list in sorted(blocks.items(), key=lambda item: -1 if item[0] is None else item[0]):
        slots = np.asarray(slot_list)
        if anchor is None:
            columns.put(slots, _baseline_block(log_prices, origins[slots], config))
        else:
            models = fits.at(anchor, dates[anchor], _fit_window(log_prices, anchor, config, dates), config)
            columns.put(slots, _fitted_block(log_prices, anchor, origins[slots], config, dates, models))

    target_slots = targets - first_origin
    from scipy.stats import norm  # here, not at the top: docs/scale.md "Process start"

    z = float(norm.ppf(0.5 + config.interval_level / 2))
    result: dict[str, object] = {}
    stacked = np.stack([columns.forecasts[m] for m in MEAN_MODELS], axis=2)  # origins x H x models
    expected = np.empty((len(targets), len(config.horizons)))
    weights = np.empty((len(targets), len(config.horizons), len(MEAN_MODELS)))
    bases, errors_used = [], []
    for column, horizon in enumerate(config.horizons):
        ends = origins + horizon
        realised = np.full(len(origins), np.nan)
        known = ends < len(log_prices)
        realised[known] = log_prices[ends[known]] - log_prices[origins[known]]
        weight = inverse_mse_weights(stacked[:, column, :], realised, horizon, target_slots,
                                     config.error_window, config.min_errors,
                                     benchmark=MEAN_MODELS.index("random_walk"))
        weights[:, column, :] = weight.values
        expected[:, column] = np.nansum(stacked[target_slots, column, :] * weight.values, axis=1)
        bases.append(weight.basis)
        errors_used.append(weight.errors_used)
    sigma = np.sqrt(columns.forecasts["variance"][target_slots])
    missing = ~np.isfinite(sigma).all(axis=1)
    if missing.any():
        day = dates[int(targets[np.argmax(missing)])]
        raise ForecastError(f"too little price history on {day} to estimate volatility (need 3 sessions)")
    result.update(
        expected=expected, sigma=sigma, lower=expected - z * sigma, upper=expected + z * sigma,
        weights=weights, weights_basis=bases, errors_in_weights=errors_used,
        models={m: columns.forecasts[m][target_slots] for m in MEAN_MODELS},
        text={k: [v[s] for s in target_slots] for k, v in columns.text.items()},
        numbers={k: v[target_slots] for k, v in columns.numbers.items()},
        fits=fits.to_keep, fits_reused=fits.reused, fits_made=fits.made,
    )
    return result


@dataclass
class _Fits:
    """The fits of one ticker's run: kept ones reused where their key matches, the rest fitted.

    `to_keep` collects the fits a later run can reuse, those anchored at or after `keep_from`:
    tomorrow's run forecasts its date and the warm-up origins before it, whose anchors lie within
    warmup_origins + refit_every sessions of today's last price."""

    kept: Mapping[dt.date, KeptFit]
    keep_from: int
    to_keep: dict[dt.date, KeptFit] = field(default_factory=dict)
    reused: int = 0
    made: int = 0

    def at(self, anchor: int, day: dt.date, window: np.ndarray, config: ForecastConfig) -> ModelFits:
        key = fit_key(window, config)
        stored = self.kept.get(day)
        if stored is not None and stored.key == key:
            self.reused += 1
            return stored.models()
        models = fit_models(window, config)
        self.made += 1
        if anchor >= self.keep_from:
            self.to_keep[day] = KeptFit(key, encode(models))
        return models


@dataclass(frozen=True)
class Forecasts:
    """A run's forecast rows, the fits later runs can reuse (FITS_SCHEMA) and how many anchors
    took a kept fit or were fitted afresh."""

    rows: pl.DataFrame
    fits: pl.DataFrame
    fits_reused: int
    fits_made: int


FITS_SCHEMA = {"ticker": pl.String, "fit_date": pl.Date, "fit_key": pl.String, "models": pl.String}


def forecast_ticker(
    history: pl.DataFrame, targets: Sequence[dt.date], session_numbers: dict[dt.date, int],
    config: ForecastConfig,
) -> pl.DataFrame:
    """Long rows (one per target date and horizon) for one ticker, every model fitted afresh.

    `history` holds ticker, date and price (adj_close or close) for consecutive sessions up to the
    last target; `session_numbers` maps each date to its session number since a fixed epoch.
    """
    return forecast_with_kept_fits(history, targets, session_numbers, config, {}).rows


def forecast_with_kept_fits(
    history: pl.DataFrame, targets: Sequence[dt.date], session_numbers: dict[dt.date, int],
    config: ForecastConfig, kept: Mapping[dt.date, KeptFit],
) -> Forecasts:
    """forecast_ticker reusing the `kept` fits (by anchor date) whose key matches the window."""
    ticker = history["ticker"][0]
    ordered = history.sort("date")
    dates = ordered["date"].to_list()
    numbers = np.array([session_numbers[d] for d in dates])
    gaps = np.flatnonzero(np.diff(numbers) != 1)
    if gaps.size:
        raise ForecastError(f"{ticker}: prices skip trading days after {dates[gaps[0]]}: "
                            "materialize prices for the whole lookback first")
    prices = ordered["price"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        log_prices = np.where(prices > 0, np.log(prices), np.nan)
    position = {d: i for i, d in enumerate(dates)}
    unknown = [d for d in targets if d not in position]
    if unknown:
        raise ForecastError(f"{ticker}: no price on {unknown[0]} to forecast from")
    target_positions = np.array(sorted(position[d] for d in targets))
    try:
        out = forecast_series(log_prices, dates, numbers, target_positions, config, kept)
    except ForecastError as exc:
        raise ForecastError(f"{ticker}: {exc}") from exc
    fits = pl.DataFrame({"ticker": [ticker] * len(out["fits"]), "fit_date": list(out["fits"]),
                         "fit_key": [f.key for f in out["fits"].values()],
                         "models": [f.encoded for f in out["fits"].values()]}, schema=FITS_SCHEMA)
    return Forecasts(_to_frame(ticker, [dates[p] for p in target_positions], out, config), fits,
                     out["fits_reused"], out["fits_made"])


def _to_frame(ticker: str, days: list[dt.date], out: dict, config: ForecastConfig) -> pl.DataFrame:
    frames = []
    versions = model_versions()
    level = round(config.interval_level * 100)
    for column, horizon in enumerate(config.horizons):
        data = {
            "ticker": [ticker] * len(days),
            "date": days,
            "horizon": [horizon] * len(days),
            "expected_log_return": out["expected"][:, column],
            f"lower_{level}": out["lower"][:, column],
            f"upper_{level}": out["upper"][:, column],
            "sigma": out["sigma"][:, column],
        }
        for model in MEAN_MODELS:
            data[f"forecast_{model}"] = out["models"][model][:, column]
        for index, model in enumerate(MEAN_MODELS):
            data[f"weight_{model}"] = out["weights"][:, column, index]
        data["weights_basis"] = out["weights_basis"][column]
        data["errors_in_weights"] = out["errors_in_weights"][column]
        data.update(out["text"])
        for name, values in out["numbers"].items():
            data[name] = values
        data["model_versions"] = [versions] * len(days)
        data["config"] = [config.describe()] * len(days)
        frames.append(pl.DataFrame(data, strict=False))
    # NaN is not an answer: a model that did not forecast is null, and models_failed says why.
    frame = pl.concat(frames)
    frame = frame.with_columns(pl.selectors.float().fill_nan(None)).with_columns(
        pl.col("horizon").cast(pl.Int64),
        pl.col("errors_in_weights").cast(pl.Int64),
        pl.col("fit_sessions", "samossa_rank", "mssa_rank").cast(pl.Int64),
        pl.col("sarimax_converged", "garch_converged").cast(pl.Boolean),
        pl.col("params_fit_date").cast(pl.String).str.to_date(),
        pl.col("volatility_model", "volatility_fallback_reason", "mssa_regime", "mssa_rank_table",
               "models_failed", "weights_basis").cast(pl.String),
    )
    return frame.sort("date", "horizon")


def _forecast_one(args: tuple) -> Forecasts:
    # One BLAS thread: the matrices are small, and OpenBLAS threads spinning on two cores made a
    # ticker 1.5x slower in one process and ~6x slower with two worker processes (measured).
    # threadpoolctl limits only the BLAS libraries already loaded, and scipy brings its own
    # OpenBLAS: the model libraries load first (they are imported where used, not at the top).
    _load_model_libraries()
    with threadpool_limits(limits=1, user_api="blas"):
        return forecast_with_kept_fits(*args)


def _load_model_libraries() -> None:
    for name in MODEL_LIBRARIES:
        import_module(name)


def forecast_tickers(
    histories: dict[str, pl.DataFrame],
    targets: Sequence[dt.date],
    session_numbers: dict[dt.date, int],
    config: ForecastConfig,
    workers: int = 1,
    progress: Callable[[str], None] | None = None,
    kept: Mapping[str, Mapping[dt.date, KeptFit]] | None = None,
) -> Forecasts:
    """forecast_with_kept_fits for every ticker (`kept` per ticker), over `workers` processes
    (tickers are independent).

    Starting a worker costs seconds (it imports statsmodels and arch), so a run stays in this
    process unless it has PARALLEL_MIN_PARTITIONS partitions, PARALLEL_MIN_FITS fits to make or
    PARALLEL_MIN_TICKERS tickers.
    `progress` is told as each ticker finishes.
    """
    kept = kept or {}
    tickers = sorted(histories)
    jobs = [(histories[t], targets, session_numbers, config, kept.get(t, {})) for t in tickers]
    done: list[Forecasts] = []

    def collect(results: Iterable[Forecasts]) -> None:
        for count, (ticker, result) in enumerate(zip(tickers, results), start=1):
            done.append(result)
            if progress is not None:
                progress(f"forecast {count}/{len(tickers)} tickers ({ticker}: {result.rows.height} rows, "
                         f"{result.fits_made} fitted, {result.fits_reused} kept fits reused)")

    fits = sum(fits_to_make(targets, session_numbers, config, kept.get(t, {})) for t in tickers)
    processes = processes_for(len(jobs), len(targets), workers, fits)
    if progress is not None:
        progress(f"about {fits} windows to fit over {len(tickers)} tickers: {processes} process(es)")
    if processes == 1:
        collect(map(_forecast_one, jobs))
    else:
        # spawn, not fork: the caller (a Dagster step) runs threads that fork would copy mid-state.
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
            collect(pool.map(_forecast_one, jobs))
    return Forecasts(pl.concat([d.rows for d in done]).sort("ticker", "date", "horizon"),
                     pl.concat([d.fits for d in done]), sum(d.fits_reused for d in done),
                     sum(d.fits_made for d in done))


def fits_to_make(targets: Sequence[dt.date], session_numbers: Mapping[dt.date, int], config: ForecastConfig,
                 kept: Mapping[dt.date, KeptFit]) -> int:
    """About how many fits one ticker's run makes: the grid anchors of its origins that have no
    kept fit (a kept fit whose key no longer matches, or a young ticker's per-origin fits, are
    not foreseen; this only chooses between one process and several)."""
    by_number = {number: day for day, number in session_numbers.items()}
    first = session_numbers[min(targets)] - config.warmup_origins
    numbers = range(first, session_numbers[max(targets)] + 1)
    anchors = {by_number.get(n - n % config.refit_every) for n in numbers}
    return len(anchors - set(kept) - {None})


def processes_for(n_tickers: int, n_targets: int, workers: int, fits: int = 0) -> int:
    """How many processes forecast_tickers uses for a run of n_tickers x n_targets partitions
    that makes about `fits` fits. One in a daemonic process (a Celery worker's pool process, on the
    cluster), which may not start children: there the cluster's workers are the parallelism."""
    if workers <= 1 or n_tickers <= 1 or current_process().daemon:
        return 1
    if n_tickers * n_targets < PARALLEL_MIN_PARTITIONS and fits < PARALLEL_MIN_FITS and n_tickers < PARALLEL_MIN_TICKERS:
        return 1
    return min(workers, n_tickers)


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


PRICE_ROWS_SCHEMA = {"ticker": pl.String, "date": pl.Date, "price": pl.Float64}


def price_rows(prices: pl.DataFrame) -> pl.DataFrame:
    """ticker, date, price from stored prices (empty, with that schema, when there are none),
    price as features measures returns, sorted by ticker and date."""
    if not prices.height:
        return pl.DataFrame(schema=PRICE_ROWS_SCHEMA)
    return prices.sort("ticker", "date").select("ticker", "date", return_price().alias("price"))


def price_histories(prices: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """price_rows per ticker."""
    return {ticker: rows for (ticker,), rows in price_rows(prices).partition_by("ticker", as_dict=True).items()}
