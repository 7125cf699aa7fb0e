"""The broker resource: the simulated exchange the paper book trades on (pm_domain/paper/broker.py).

Its settings are the account's: initial cash, costs, whole or fractional shares, margin. The
environment sets them (PM_PAPER_*, docs/configuration.md); a run can override them in the
launchpad like any resource.
"""

from __future__ import annotations

import os

from dagster import ConfigurableResource
from pydantic import Field

from pm_domain.paper.broker import ExchangeRules
from pm_domain.paper.costs import CostModel
from pm_domain.settings import SettingsError, number_from_env


class SimulatedBrokerResource(ConfigurableResource):
    book: str = Field(default="paper", description="the book's name, the first part of every client_order_id")
    initial_cash: float = Field(default=1_000_000.0, gt=0, description="cash at the book's first session")
    slippage_bps: float = Field(default=5.0, ge=0, description="every fill moves this far against the trader")
    commission_per_share: float = Field(default=0.005, ge=0)
    commission_minimum: float = Field(default=1.0, ge=0, description="per order that fills")
    commission_bps: float = Field(default=0.0, ge=0, description="of the notional, on top of the per-share fee")
    fractional_shares: bool = False
    allow_margin: bool = Field(default=False, description="off: buys are cut to the cash there is")

    def rules(self) -> ExchangeRules:
        return ExchangeRules(
            costs=CostModel(self.slippage_bps, self.commission_per_share, self.commission_minimum, self.commission_bps),
            fractional_shares=self.fractional_shares, allow_margin=self.allow_margin, fill_at="next_open")


def broker_from_env() -> SimulatedBrokerResource:
    """PM_PAPER_BOOK, PM_PAPER_INITIAL_CASH, PM_PAPER_SLIPPAGE_BPS, PM_PAPER_COMMISSION_PER_SHARE,
    PM_PAPER_COMMISSION_MINIMUM, PM_PAPER_COMMISSION_BPS, PM_PAPER_FRACTIONAL, PM_PAPER_MARGIN."""
    defaults = SimulatedBrokerResource()
    numbers = {field: number_from_env(f"PM_PAPER_{field.upper()}", getattr(defaults, field), positive=field == "initial_cash")
               for field in ("initial_cash", "slippage_bps", "commission_per_share", "commission_minimum", "commission_bps")}
    return SimulatedBrokerResource(
        book=os.environ.get("PM_PAPER_BOOK", defaults.book),
        fractional_shares=_flag("PM_PAPER_FRACTIONAL"), allow_margin=_flag("PM_PAPER_MARGIN"), **numbers)


def _flag(name: str) -> bool:
    raw = os.environ.get(name, "0")
    if raw not in ("0", "1"):
        raise SettingsError(f"{name}={raw!r}: use 1 (on) or 0 (off)")
    return raw == "1"
