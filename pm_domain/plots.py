"""Small PNG charts for materialization metadata (matplotlib, headless)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


# 1,000 px wide (10 in at 100 dpi), fonts sized to read at that width in Dagster's metadata pane.
WIDTH_INCHES, DPI = 10.0, 100
TITLE, LABEL, LEGEND = 13, 11, 10
MAX_PANELS = 2


@cache
def _pyplot() -> ModuleType:
    """pyplot on the headless Agg backend, loaded by the first chart rather than with the
    definitions, which every Dagster process imports (docs/scale.md "Process start")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot


def png_markdown(png: bytes, alt: str) -> str:
    """Markdown that embeds a PNG inline, as Dagster's UI renders it."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def _ticker_panels_png(tickers: list[str], max_tickers: int, legend_columns: int,
                      draw: Callable[[Axes, str], None]) -> bytes:
    """One small panel per ticker (at most `max_tickers`), drawn by `draw`, as PNG bytes."""
    shown = tickers[:max_tickers]
    fig, axes = _pyplot().subplots(len(shown), 1, figsize=(WIDTH_INCHES, 3.4 * len(shown)), squeeze=False)
    for ax, ticker in zip(axes[:, 0], shown, strict=True):
        draw(ax, ticker)
        ax.set_title(ticker, fontsize=TITLE, loc="left")
        ax.tick_params(labelsize=LABEL)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=LEGEND, ncol=legend_columns, loc="upper left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    _pyplot().close(fig)
    return buffer.getvalue()


def price_bands_png(features: pl.DataFrame, tickers: list[str], max_tickers: int = 2) -> bytes:
    """Close with SMA 20/50 and Bollinger 20/2 for up to `max_tickers` tickers, one panel each."""

    def draw(ax: Axes, ticker: str) -> None:
        rows = features.filter(pl.col("ticker") == ticker).sort("date")
        dates = rows["date"].to_list()
        ax.fill_between(dates, rows["bb_lower"].to_numpy(), rows["bb_upper"].to_numpy(),
                        color="tab:blue", alpha=0.12, label="Bollinger 20/2")
        ax.plot(dates, rows["close"].to_numpy(), color="black", lw=1.1, label="close")
        ax.plot(dates, rows["sma_20"].to_numpy(), color="tab:orange", lw=0.9, label="SMA 20")
        ax.plot(dates, rows["sma_50"].to_numpy(), color="tab:green", lw=0.9, label="SMA 50")

    return _ticker_panels_png(tickers, max_tickers, 4, draw)


def forecast_fan_png(prices: pl.DataFrame, fan: pl.DataFrame, tickers: list[str], horizon: int,
                     max_tickers: int = 2) -> bytes:
    """Recent prices (ticker, date, price) with the h-session forecast fan: for each origin, the
    expected price and 90% band drawn at the date the forecast is for (ticker, target_date,
    expected_price, lower_price, upper_price)."""

    def draw(ax: Axes, ticker: str) -> None:
        history = prices.filter(pl.col("ticker") == ticker).sort("date")
        ahead = fan.filter(pl.col("ticker") == ticker).sort("target_date")
        ax.plot(history["date"].to_list(), history["price"].to_numpy(), color="black", lw=1.1, label="price")
        days = ahead["target_date"].to_list()
        ax.fill_between(days, ahead["lower_price"].to_numpy(), ahead["upper_price"].to_numpy(),
                        color="tab:purple", alpha=0.2, label=f"90% band, {horizon} sessions ahead")
        ax.plot(days, ahead["expected_price"].to_numpy(), color="tab:purple", lw=0.9,
                marker="o" if len(days) < 3 else None, ms=3, label="ensemble forecast")

    return _ticker_panels_png(tickers, max_tickers, 3, draw)


def _identical(a, b) -> bool:
    import numpy as np

    return len(a) == len(b) and bool(np.allclose(a, b, rtol=0.0, atol=1e-9, equal_nan=True))


def equity_drawdown_figure(series: dict[str, pl.DataFrame], max_panels: int = MAX_PANELS) -> Figure:
    """The figure behind `equity_drawdown_png` (kept apart so a test can inspect what is drawn).

    The strategy is drawn first and wide, the forecast-only twin dashed and narrow on top of it:
    when the LLM changed no trade the two are the same curve, and the blue still shows around the
    orange dashes (the title says so). One legend for the figure, above the panels, so it covers
    no line."""
    shown = list(series.items())[:max_panels]
    fig, axes = _pyplot().subplots(2 * len(shown), 1, figsize=(WIDTH_INCHES, 4.6 * len(shown) + 0.4), squeeze=False,
                             gridspec_kw={"height_ratios": [2, 1] * len(shown)})
    for index, (name, frame) in enumerate(shown):
        equity_ax, drawdown_ax = axes[2 * index, 0], axes[2 * index + 1, 0]
        dates = frame["date"].to_list()
        strategy = frame["strategy_equity"].to_numpy()
        equity_ax.plot(dates, frame["buy_hold_equity"].to_numpy(), color="gray", lw=1.0, zorder=2,
                       label="buy and hold")
        equity_ax.plot(dates, strategy, color="tab:blue", lw=2.6, zorder=3, label="strategy (net of costs)")
        title = f"{name}: equity of 1 invested"
        if "forecast_only_equity" in frame.columns:
            twin = frame["forecast_only_equity"].to_numpy()
            equity_ax.plot(dates, twin, color="tab:orange", lw=1.2, ls="--", zorder=4,
                           label="forecast only (LLM off)")
            if _identical(strategy, twin):
                title += " (strategy identical to forecast only: the LLM changed no trade)"
        equity_ax.set_title(title, fontsize=TITLE, loc="left")
        drawdown_ax.fill_between(dates, frame["drawdown"].to_numpy(), 0.0, color="tab:red", alpha=0.35)
        drawdown_ax.set_title(f"{name}: strategy drawdown", fontsize=LABEL, loc="left")
        for ax in (equity_ax, drawdown_ax):
            ax.tick_params(labelsize=LABEL)
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    order = [labels.index(label) for label in ("strategy (net of costs)", "forecast only (LLM off)", "buy and hold")
             if label in labels]
    top = 1 - 0.45 / fig.get_figheight()  # room for the legend above the first panel
    fig.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=LEGEND, ncol=len(order),
               loc="upper center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, top))
    return fig


def equity_drawdown_png(series: dict[str, pl.DataFrame], max_panels: int = MAX_PANELS) -> bytes:
    """For up to `max_panels` backtests (name -> window_series frame): the strategy's equity
    against buy-and-hold over the window (and the forecast-only twin's, when the frame has it),
    and the strategy's drawdown below it."""
    fig = equity_drawdown_figure(series, max_panels)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    _pyplot().close(fig)
    return buffer.getvalue()


def reliability_png(points: dict[str, dict], title: str) -> bytes:
    """Reliability diagram, one line per caller (name -> performance.reliability output): stated
    probability against realised hit rate, marker area by the number of calls, and the diagonal
    a calibrated caller follows. 1,000 px wide."""
    fig, ax = _pyplot().subplots(figsize=(WIDTH_INCHES, 5))
    ax.plot([0, 1], [0, 1], color="gray", lw=1.0, ls="--", label="calibrated")
    for (name, table), color in zip(points.items(), ("tab:blue", "tab:orange", "tab:green"), strict=False):
        if not len(table["calls"]):
            continue
        ax.plot(table["mean_probability"], table["hit_rate"], color=color, lw=1.5, label=f"{name} ({int(table['calls'].sum())} calls)")
        ax.scatter(table["mean_probability"], table["hit_rate"], s=20 + 8 * table["calls"], color=color, alpha=0.6)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("stated probability the call is right", fontsize=12)
    ax.set_ylabel("realised hit rate", fontsize=12)
    ax.set_title(title, fontsize=13, loc="left")
    ax.tick_params(labelsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=11, loc="upper left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    _pyplot().close(fig)
    return buffer.getvalue()


def paper_nav_png(dates: list, paper: list[float], reference: list[float], benchmark: list[float]) -> bytes:
    """The paper book's NAV against the backtest of the same weights and the equal-weight
    buy-and-hold of its tickers, all from the same initial cash."""
    fig, ax = _pyplot().subplots(1, 1, figsize=(WIDTH_INCHES, 4.6))
    ax.plot(dates, paper, color="tab:blue", lw=1.3, label="paper NAV (next-open fills, costs, whole shares)")
    ax.plot(dates, reference, color="tab:orange", lw=1.0, ls="--", label="backtest of the same weights")
    ax.plot(dates, benchmark, color="gray", lw=1.0, label="equal-weight buy and hold")
    ax.set_title("paper book: NAV", fontsize=TITLE, loc="left")
    ax.yaxis.set_major_formatter(_pyplot().FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.tick_params(labelsize=LABEL)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=LEGEND, loc="best")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    _pyplot().close(fig)
    return buffer.getvalue()
