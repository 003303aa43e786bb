"""Cost accounting: replica-seconds x price per replica-hour, plus per-request and per-SLO-miss charges.

One implementation for the simulator and for live load tests, so their figures compare.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from optiserve.config import read_mapping
from optiserve.errors import UserError

# Approximate on-demand prices (USD per replica-hour), AWS us-east-1 list prices at the time of writing:
# a CPU replica is priced per vCPU (c7i-class ~0.045-0.05/vCPU-h); a GPU replica as one whole GPU instance
# (g4dn.xlarge T4, g5.xlarge A10G, g6.xlarge L4, p5.48xlarge / 8 for one H100). Override with a YAML file.
DEFAULT_PRICES_PER_HOUR: dict[str, float] = {
    "cpu-1": 0.05,
    "cpu-2": 0.10,
    "cpu-4": 0.20,
    "cpu-8": 0.40,
    "gpu-t4": 0.526,
    "gpu-l4": 0.805,
    "gpu-a10g": 1.006,
    "gpu-h100": 12.29,
}


@dataclass(frozen=True)
class PriceTable:
    """Price per replica-hour by replica kind."""

    price_per_hour: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PRICES_PER_HOUR))

    def __post_init__(self) -> None:
        for kind, price in self.price_per_hour.items():
            if not isinstance(price, int | float) or not math.isfinite(price) or price < 0:
                raise UserError(f"price for replica kind {kind!r} must be a non-negative number, got {price!r}.")

    def price(self, replica_kind: str) -> float:
        if replica_kind not in self.price_per_hour:
            raise UserError(f"no price for replica kind {replica_kind!r}; known kinds: "
                            f"{', '.join(sorted(self.price_per_hour))} (add it to your price table YAML).")
        return float(self.price_per_hour[replica_kind])

    @classmethod
    def load(cls, path: str | Path) -> PriceTable:
        """Defaults overridden by a YAML mapping `kind: price_per_hour` (optionally under `price_per_hour:`)."""
        data = read_mapping(path, "price table", "cpu-1: 0.05")
        if isinstance(data.get("price_per_hour"), dict):
            data = data["price_per_hour"]
        return cls({**DEFAULT_PRICES_PER_HOUR, **{str(k): v for k, v in data.items()}})


@dataclass(frozen=True)
class CostBreakdown:
    replica_kind: str
    replica_seconds: float
    requests: int
    slo_misses: int
    replica_cost: float
    request_cost: float
    slo_miss_cost: float
    total: float
    cost_per_1k_requests: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CostModel:
    prices: PriceTable = field(default_factory=PriceTable)
    price_per_1k_requests: float = 0.0
    price_per_slo_miss: float = 0.0

    def __post_init__(self) -> None:
        if self.price_per_1k_requests < 0 or self.price_per_slo_miss < 0:
            raise UserError("price_per_1k_requests and price_per_slo_miss must be non-negative.")

    def cost_of_run(self, replica_seconds: float, replica_kind: str, requests: int,
                    slo_misses: int) -> CostBreakdown:
        if replica_seconds < 0 or requests < 0 or slo_misses < 0:
            raise UserError("replica_seconds, requests and slo_misses must be non-negative.")
        replica_cost = replica_seconds / 3600.0 * self.prices.price(replica_kind)
        request_cost = requests / 1000.0 * self.price_per_1k_requests
        miss_cost = slo_misses * self.price_per_slo_miss
        total = replica_cost + request_cost + miss_cost
        per_1k = total / requests * 1000.0 if requests else 0.0
        return CostBreakdown(replica_kind, float(replica_seconds), int(requests), int(slo_misses),
                             replica_cost, request_cost, miss_cost, total, per_1k)
