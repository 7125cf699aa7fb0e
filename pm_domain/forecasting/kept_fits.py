"""Fitted model state kept between runs, so a nightly run fits only on its refit-grid day.

A fit is what the models learned on one window of log prices: SARIMAX's parameters, GARCH's,
the SSA eigenvectors, the AR coefficients and the MSSA-RL regime table. It is stored with a key
over everything that decides it: the window's log prices bit for bit, the fit settings and the
library versions. A run reuses a kept fit only when the key it computes for the same window
matches; prices restated under the window, a library upgrade or another SARIMAX order give a new
key, and the models are fitted afresh. Every other step (the Kalman filter, the variance
recursion, the SSA maps, the ensemble weights) runs on each night's data as before, so a forecast
from a kept fit is bit-identical to one from a fresh fit of the same window (tested).

The stored form is JSON: arrays as the base64 of their little-endian bytes, so every bit survives.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import numpy as np

from pm_domain.forecasting import garch, mssa_rl, samossa, sarimax

if TYPE_CHECKING:
    from pm_domain.forecasting.engine import ForecastConfig

FITS_FORMAT = "kept_fits/1"


@dataclass(frozen=True)
class ModelFits:
    """Every model fitted on one window; a model whose fit failed is None, its error in `failures`."""

    volatility: garch.VolatilityFit
    sarimax: sarimax.SarimaxFit | None
    samossa: samossa.SamossaFit | None
    mssa_rl: mssa_rl.MssaRlFit | None
    failures: tuple[str, ...]
    fit_sessions: int


@dataclass(frozen=True)
class KeptFit:
    """A stored fit: the key of the window and settings it was fitted on, and the encoded models
    (decoded only when a run's key matches)."""

    key: str
    encoded: str

    def models(self) -> ModelFits:
        return decode(self.encoded)


def fit_models(window: np.ndarray, config: ForecastConfig) -> ModelFits:
    """Fit every model on `window` (log prices); a model that fails is recorded, the others go on."""
    returns = np.diff(window)
    horizon = max(config.horizons)
    failures: list[str] = []

    def attempt(name: str, fit):
        try:
            return fit()
        except Exception as exc:  # noqa: BLE001 - a model failing is recorded, the others go on
            failures.append(f"{name}: {type(exc).__name__}: {exc}"[:160])
            return None

    return ModelFits(
        volatility=garch.fit_volatility(returns),
        sarimax=attempt("sarimax", lambda: sarimax.fit_sarimax(window, config.sarimax_order)),
        samossa=attempt("samossa", lambda: samossa.fit_samossa(
            returns, config.ssa_window, config.ssa_variance_share, config.ar_lags, horizon)),
        mssa_rl=attempt("mssa_rl", lambda: mssa_rl.fit_mssa_rl(returns, config.ssa_window, horizon)),
        failures=tuple(failures),
        fit_sessions=len(window),
    )


@cache
def library_versions() -> dict[str, str]:
    """The installed versions a fit depends on, read once per process (a metadata lookup is ~0.5 ms)."""
    return {name: version(name) for name in ("statsmodels", "arch", "scipy")} | {"numpy": np.__version__}


def fit_key(window: np.ndarray, config: ForecastConfig) -> str:
    """sha256 over the window's values, the settings the fits read and the library versions."""
    settings = {"format": FITS_FORMAT, "sarimax_order": list(config.sarimax_order), "ssa_window": config.ssa_window,
                "ssa_variance_share": config.ssa_variance_share, "ar_lags": config.ar_lags,
                "max_horizon": max(config.horizons)} | library_versions()
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(window, dtype="<f8").tobytes())
    return digest.hexdigest()


_TYPES = {cls.__name__: cls for cls in (ModelFits, garch.VolatilityFit, sarimax.SarimaxFit,
                                        samossa.SamossaFit, mssa_rl.MssaRlFit)}


def encode(models: ModelFits) -> str:
    return json.dumps(_plain(models), separators=(",", ":"))


def decode(text: str) -> ModelFits:
    models = _restore(json.loads(text))
    if not isinstance(models, ModelFits):
        raise ValueError(f"a kept fit decodes to {type(models).__name__}, not ModelFits")
    return models


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
        return {"ndarray": base64.b64encode(data.tobytes()).decode(), "dtype": data.dtype.str,
                "shape": list(value.shape)}
    if dataclasses.is_dataclass(value):
        return {"type": type(value).__name__,
                "fields": {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, tuple):
        return {"tuple": [_plain(v) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[k, _plain(v)] for k, v in value.items()]}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _restore(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    if "ndarray" in value:
        raw = base64.b64decode(value["ndarray"])
        return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).astype(
            np.dtype(value["dtype"]).newbyteorder("="))
    if "tuple" in value:
        return tuple(_restore(v) for v in value["tuple"])
    if "dict" in value:
        return {k: _restore(v) for k, v in value["dict"]}
    cls = _TYPES.get(value.get("type"))
    if cls is None:
        raise ValueError(f"a kept fit holds an unknown type {value.get('type')!r}")
    return cls(**{name: _restore(v) for name, v in value["fields"].items()})
