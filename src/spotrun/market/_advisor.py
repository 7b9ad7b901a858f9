"""Interruption rates from the AWS Spot Instance Advisor snapshot.

The advisor puts each (region, Linux instance type) in a bucket of "frequency of
interruption": the share of that type's spot instances AWS reclaimed over the trailing
month (``<5%``, ``5-10%``, …, ``>20%``; the file gives each bucket's upper bound as
``max``). Turning a bucket into a mean uptime:

1. Take the bucket's middle share ``f``: halfway between the previous bucket's ``max``
   (0 for the first) and its own, so ``<5%`` → 2.5 %, ``5-10%`` → 8 %, ``10-15%`` →
   13.5 %, ``15-20%`` → 19 %, ``>20%`` → 61 %. The open top bucket uses the file's own
   bound of 100, which makes it about three times as bad as the next one.
2. Model reclaims as a Poisson process with rate λ per instance. The share of instances
   reclaimed within a month is then ``f = 1 − exp(−λ · month)``, so
   ``λ = −ln(1 − f) / month``, with a month of 30 days.
3. The mean uptime is ``1 / λ``: about 3.2 years for ``<5%``, 32 days for ``>20%``.

These uptimes are much longer than what the Can't Be Late traces show for the same
types (hours): the advisor averages over every instance, most of which their owners end
long before AWS would. Use traces to study interruptions; use the advisor for a plausible
ranking of pools when nothing better is known.
"""

from __future__ import annotations

import gzip
import json
import math
import threading
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Any

from spotrun.errors import MarketError
from spotrun.market._sources import advisor_file

MONTH_SECONDS = 30 * 86_400.0
_DEFAULT: dict[str, SpotAdvisor] = {}
_DEFAULT_LOCK = threading.Lock()


@dataclass(frozen=True)
class Bucket:
    label: str
    low_percent: float
    high_percent: float

    @property
    def share(self) -> float:
        """The representative share of instances reclaimed per month (0..1)."""
        return (self.low_percent + self.high_percent) / 200.0

    @property
    def mean_uptime(self) -> float:
        """Seconds an instance runs on average before AWS reclaims it."""
        # A share of 100 % would mean an infinite rate; the file's buckets never reach it.
        share = min(self.share, 0.999)
        return MONTH_SECONDS / -math.log1p(-share)


class SpotAdvisor:
    """The advisor snapshot: one interruption bucket per (region, Linux type)."""

    def __init__(self, buckets: list[Bucket], pairs: dict[tuple[str, str], int]) -> None:
        self._buckets = buckets
        self._pairs = pairs

    @classmethod
    def load(cls, path: Traversable) -> SpotAdvisor:
        """Read a snapshot (``spot-advisor-data.json``, plain or gzip-compressed)."""
        try:
            raw = path.read_bytes()
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            doc: Any = json.loads(raw)
            buckets: list[Bucket] = []
            low = 0.0
            for entry in sorted(doc["ranges"], key=lambda r: int(r["index"])):
                high = float(entry["max"])
                buckets.append(Bucket(str(entry["label"]), low, high))
                low = high
            pairs = {
                (region, name): int(v["r"])
                for region, systems in doc["spot_advisor"].items()
                for name, v in systems.get("Linux", {}).items()
            }
        except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MarketError(f"spot advisor file {path} is unusable: {exc!r}") from exc
        return cls(buckets, pairs)

    @classmethod
    def default(cls) -> SpotAdvisor:
        """The snapshot in ``$SPOTRUN_DATA`` if it has one, else the packaged one."""
        file = advisor_file()
        with _DEFAULT_LOCK:
            cached = _DEFAULT.get(str(file))
            if cached is None:
                # Parsing the 0.9 MB snapshot takes tens of milliseconds; markets share it.
                cached = _DEFAULT[str(file)] = cls.load(file)
            return cached

    def bucket(self, region: str, ec2_type: str) -> Bucket:
        index = self._pairs.get((region, ec2_type))
        if index is None or not 0 <= index < len(self._buckets):
            raise MarketError(f"the spot advisor has no data for {ec2_type} in {region}")
        return self._buckets[index]

    def has(self, region: str, ec2_type: str) -> bool:
        return (region, ec2_type) in self._pairs

    def mean_uptime(self, region: str, ec2_type: str) -> float:
        return self.bucket(region, ec2_type).mean_uptime
