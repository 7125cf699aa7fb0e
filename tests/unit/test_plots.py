"""The equity curve shows every line: the strategy when it equals the forecast-only twin, and the
start of buy-and-hold, which the legend used to cover."""

import datetime as dt

import numpy as np
import polars as pl

from pm_domain.plots import equity_drawdown_figure, equity_drawdown_png


def window(twin_equals_strategy: bool) -> pl.DataFrame:
    rng = np.random.default_rng(7)
    days = [dt.date(2018, 10, 1) + dt.timedelta(days=i) for i in range(40)]
    strategy = np.cumprod(1 + rng.normal(0, 0.005, len(days)))
    twin = strategy if twin_equals_strategy else np.cumprod(1 + rng.normal(0, 0.005, len(days)))
    return pl.DataFrame({"date": days, "strategy_equity": strategy, "forecast_only_equity": twin,
                         "buy_hold_equity": np.cumprod(1 + rng.normal(0, 0.01, len(days))),
                         "drawdown": strategy / np.maximum.accumulate(strategy) - 1})


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_a_strategy_identical_to_its_twin_still_shows_and_the_title_says_so():
    import matplotlib.pyplot as plt

    fig = equity_drawdown_figure({"AAA": window(True), "BBB": window(False)})
    try:
        same, differs = fig.axes[0], fig.axes[2]
        lines = lines_by_label(same)
        strategy, twin = lines["strategy (net of costs)"], lines["forecast only (LLM off)"]
        # the twin is drawn dashed over a wider strategy line, so the strategy shows around it
        assert strategy.get_linewidth() >= 2 * twin.get_linewidth()
        assert twin.get_zorder() > strategy.get_zorder() and twin.get_linestyle() == "--"
        assert "identical to forecast only" in same.get_title(loc="left")
        assert "identical" not in differs.get_title(loc="left")
    finally:
        plt.close(fig)


def test_the_legend_sits_above_the_panels_and_covers_no_line():
    import matplotlib.pyplot as plt

    fig = equity_drawdown_figure({"AAA": window(False)})
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        assert all(ax.get_legend() is None for ax in fig.axes)
        (legend,) = fig.legends
        assert [t.get_text() for t in legend.get_texts()] == [
            "strategy (net of costs)", "forecast only (LLM off)", "buy and hold"]
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            # the axes with their titles and tick labels
            assert not box.overlaps(ax.get_tightbbox(renderer)), ax.get_title(loc="left")
    finally:
        plt.close(fig)


def test_the_png_is_drawn_without_a_twin_too():
    frame = window(False).drop("forecast_only_equity")
    png = equity_drawdown_png({"AAA": frame})
    assert png.startswith(b"\x89PNG")
