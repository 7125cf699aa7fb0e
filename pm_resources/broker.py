"""The broker resource: the simulated exchange the paper book trades on (pm_domain/paper/broker.py).

Its settings are the account's: initial cash, costs, whole or fractional shares, margin. The
environment sets them (PM_PAPER_*, docs/configuration.md); a run can override them in the
launchpad like any resource.
"""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from pm_domain import settings as pm_settings
from pm_domain.paper.broker import ExchangeRules
from pm_domain.paper.costs import CostModel


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


def broker_from(config: pm_settings.Settings) -> SimulatedBrokerResource:
    """The account the settings describe: PM_PAPER_BOOK, PM_PAPER_INITIAL_CASH, the costs, PM_PAPER_FRACTIONAL
    and PM_PAPER_MARGIN."""
    return SimulatedBrokerResource(
        book=config.paper_book, initial_cash=config.paper_initial_cash, slippage_bps=config.paper_slippage_bps,
        commission_per_share=config.paper_commission_per_share, commission_minimum=config.paper_commission_minimum,
        commission_bps=config.paper_commission_bps, fractional_shares=config.paper_fractional,
        allow_margin=config.paper_margin)


def broker_from_env() -> SimulatedBrokerResource:
    """The account this process's environment describes."""
    return broker_from(pm_settings.current())
