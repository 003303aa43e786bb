"""Optimization jobs on Ray: job templates, runs with overrides, states, limits, logs, events and hooks.

See service.JobService for the Python API and cli.py for `optimize jobs` / `optimize runs`.
"""

from optimize.jobs.models import (
    DEFAULT_MAX_RUNTIME_S,
    MAX_RUNTIME_UPPER_S,
    Compute,
    Event,
    Hook,
    Job,
    JobRun,
    LogSettings,
    Recipe,
    RunState,
    parse_duration_s,
)
from optimize.jobs.service import JobService

__all__ = [
    "DEFAULT_MAX_RUNTIME_S", "MAX_RUNTIME_UPPER_S", "Compute", "Event", "Hook", "Job", "JobRun", "JobService",
    "LogSettings", "Recipe", "RunState", "parse_duration_s",
]
