"""Assets and asset checks, one module per stage, plus the partitions definition."""

from pm_assets.features import features
from pm_assets.prices import prices

ALL_ASSETS = [prices, features]

__all__ = ["ALL_ASSETS", "features", "prices"]
