"""The spot market: instance catalog, prices and interruptions over time.

``Catalog`` knows the instance types and their prices; ``Market`` adds time: each pool's
spot availability and price follow a process (always there, a replayed trace, a seeded
random rate, a per-launch script, or rates derived from the AWS Spot Advisor), on a
market clock that may run faster than real time. ``MarketConfig`` describes a market and
``load_market_config`` reads one from a TOML or JSON file.

The catalog and the Spot Advisor snapshot ship in ``market/data`` with their provenance;
``$SPOTRUN_DATA``, ``spotrun catalog update`` (``install_catalog``) and a market file's
``advisor_path`` may point at other data (``_sources`` has the lookup order).
"""

from spotrun.market._advisor import Bucket, SpotAdvisor
from spotrun.market._catalog_file import Installed, install_catalog, remove_installed
from spotrun.market._config import (
    DEFAULT_ADVISOR_GAP,
    PROCESSES,
    MarketConfig,
    PoolConfig,
    load_market_config,
    market_config_from_dict,
    parse_duration,
)
from spotrun.market._market import HORIZON, Market
from spotrun.market._processes import (
    UNLIMITED,
    AlwaysProcess,
    Process,
    RateProcess,
    ScriptProcess,
    TraceProcess,
)
from spotrun.market._series import StepSeries
from spotrun.market._sources import DATA_ENV, CatalogSource, data_dir
from spotrun.market._traces import Trace, load_trace
from spotrun.market.catalog import Catalog, InstanceInfo, sagemaker_types

__all__ = [
    "DATA_ENV",
    "DEFAULT_ADVISOR_GAP",
    "HORIZON",
    "PROCESSES",
    "UNLIMITED",
    "AlwaysProcess",
    "Bucket",
    "Catalog",
    "CatalogSource",
    "Installed",
    "InstanceInfo",
    "Market",
    "MarketConfig",
    "PoolConfig",
    "Process",
    "RateProcess",
    "ScriptProcess",
    "SpotAdvisor",
    "StepSeries",
    "Trace",
    "TraceProcess",
    "data_dir",
    "install_catalog",
    "load_market_config",
    "load_trace",
    "market_config_from_dict",
    "parse_duration",
    "remove_installed",
    "sagemaker_types",
]
