"""Pure autoscaling policies: `(Observation, config, state) -> (desired_replicas, new_state)`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from optiserve.errors import UserError

from ._base import Observation, PolicyConfig, read_yaml
from .adaptive import AdaptiveConfig, adaptive_policy
from .predictive import PredictiveConfig, predictive_policy
from .queue import QueuePolicyConfig, queue_policy
from .slo import SloPolicyConfig, slo_policy
from .target_tracking import TargetTrackingConfig, target_tracking_policy

PolicyFn = Callable[[Observation, PolicyConfig, dict], tuple[int, dict]]

DEFAULT_POLICY = "adaptive"
POLICIES: dict[str, PolicyFn] = {
    "adaptive": adaptive_policy,
    "queue": queue_policy,
    "target-tracking": target_tracking_policy,
    "slo": slo_policy,
    "predictive": predictive_policy,
}
CONFIGS: dict[str, type[PolicyConfig]] = {
    "adaptive": AdaptiveConfig,
    "queue": QueuePolicyConfig,
    "target-tracking": TargetTrackingConfig,
    "slo": SloPolicyConfig,
    "predictive": PredictiveConfig,
}


def get_policy(name: str) -> PolicyFn:
    if name not in POLICIES:
        raise UserError(f"unknown autoscaling policy {name!r}; choose one of {', '.join(POLICIES)}.")
    return POLICIES[name]


def load_policy_config(name: str, path: str | Path | None = None, **overrides) -> PolicyConfig:
    """The policy's config: defaults, then the YAML file (flat, or under a key named like the policy), then
    `overrides` (None values ignored)."""
    get_policy(name)
    cls = CONFIGS[name]
    data: dict = {}
    if path is not None:
        raw = read_yaml(path)
        if isinstance(raw.get(name), dict):
            data = dict(raw[name])
        elif isinstance(raw.get("config"), dict):
            data = dict(raw["config"])
        else:
            data = {k: v for k, v in raw.items() if k != "policy"}
    data.update({k: v for k, v in overrides.items() if v is not None})
    cfg = cls.from_dict(data)
    return cfg.resolved() if hasattr(cfg, "resolved") else cfg


__all__ = [
    "CONFIGS",
    "DEFAULT_POLICY",
    "AdaptiveConfig",
    "POLICIES",
    "Observation",
    "PolicyConfig",
    "PredictiveConfig",
    "QueuePolicyConfig",
    "SloPolicyConfig",
    "TargetTrackingConfig",
    "adaptive_policy",
    "get_policy",
    "load_policy_config",
    "predictive_policy",
    "queue_policy",
    "slo_policy",
    "target_tracking_policy",
]
