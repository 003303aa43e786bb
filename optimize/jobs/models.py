"""Typed records of the jobs layer: job templates, runs, states, events, hooks. Pure: no Ray, no SQLite.

A `Job` is an immutable template (artifact by sha256, recipe, env, args, compute, max run time, logs,
hooks). A `JobRun` is one execution of it with its overrides merged in. Every state change of a run is an
`Event`; the allowed changes are the `TRANSITIONS` graph below.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum

from optiserve.errors import UserError

DEFAULT_MAX_RUNTIME_S = 3600.0  # one hour when a job sets none
MAX_RUNTIME_UPPER_S = 24 * 3600.0  # nobody gets more than a day: a forgotten run must end
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RunState(StrEnum):
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELING = "canceling"
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELED, RunState.TIMED_OUT})
S = RunState
# Observers may see a run late, so a run can jump (accepted -> succeeded); a cancel can lose the race
# against the run's own end (canceling -> succeeded/failed/timed_out).
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    S.ACCEPTED: frozenset({S.IN_PROGRESS, S.CANCELING, *TERMINAL}),
    S.IN_PROGRESS: frozenset({S.CANCELING, *TERMINAL}),
    S.CANCELING: frozenset(TERMINAL),
    **{s: frozenset() for s in TERMINAL},
}


def can_transition(current: RunState, new: RunState) -> bool:
    return new in TRANSITIONS[current]


def parse_duration_s(text: str | float | int) -> float:
    """'90' / '90s' / '30m' / '2h' / '1h30m' -> seconds."""
    if isinstance(text, int | float):
        return float(text)
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or not parts or not any(parts.groups()):
        raise UserError(f"cannot read the duration {text!r}; write it like 90s, 30m, 2h or 1h30m")
    h, m, s = (float(g) if g else 0.0 for g in parts.groups())
    return h * 3600 + m * 60 + s


def check_max_runtime_s(value: float | None) -> float:
    if value is None:
        return DEFAULT_MAX_RUNTIME_S
    if not 0 < value <= MAX_RUNTIME_UPPER_S:
        raise UserError(f"max run time must be between 1 s and {MAX_RUNTIME_UPPER_S / 3600:.0f} h, got {value:g} s")
    return float(value)


def check_env(env: dict[str, str]) -> dict[str, str]:
    for key in env:
        if not ENV_KEY_RE.match(key):
            raise UserError(f"environment variable name {key!r} is not valid; use letters, digits and _")
    return {k: str(v) for k, v in env.items()}


def parse_env_pairs(pairs: list[str] | None) -> dict[str, str]:
    """['K=V', ...] (the CLI's --env) -> dict."""
    env = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UserError(f"--env takes KEY=VALUE, got {pair!r}")
        env[key] = value
    return check_env(env)


@dataclass(frozen=True)
class Compute:
    cpus: float = 1.0
    gpus: float = 0.0
    memory_mb: int = 0  # 0: no memory reservation
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources, e.g. {"big_node": 1}

    def __post_init__(self) -> None:
        if self.cpus < 0 or self.gpus < 0 or self.memory_mb < 0 or any(v < 0 for v in self.resources.values()):
            raise UserError("compute requests (cpus, gpus, memory, resources) cannot be negative")
        if {"CPU", "GPU", "memory"} & set(self.resources):
            raise UserError("ask for CPUs, GPUs and memory with cpus/gpus/memory_mb, not as custom resources")

    def merged(self, cpus: float | None = None, gpus: float | None = None, memory_mb: int | None = None,
               resources: dict[str, float] | None = None) -> Compute:
        return Compute(
            cpus=self.cpus if cpus is None else cpus, gpus=self.gpus if gpus is None else gpus,
            memory_mb=self.memory_mb if memory_mb is None else memory_mb,
            resources={**self.resources, **(resources or {})},
        )


RECIPE_KINDS = ("optimize", "python", "batch")


@dataclass(frozen=True)
class Recipe:
    """What a run executes: `optimize <command> ARTIFACT --param value ... --out OUTPUT_DIR` (kind optimize),
    `python <script> ARTIFACT ... --out OUTPUT_DIR` (kind python; the script is stored with the job), or
    `modelserve batch --input ARTIFACT --repository R --model M ... --out OUTPUT_DIR` (kind batch: batch inference
    over the artifact, a data file or folder; `--param output=DIR` keeps the shards in a fixed folder so a later
    run resumes a canceled one). `artifact_flag` says how the artifact is passed: "" positional (for kind batch:
    --input), "--model" as that flag, None not at all."""

    command: str
    params: dict[str, str | int | float | bool | list] = field(default_factory=dict)
    kind: str = "optimize"
    artifact_flag: str | None = ""

    def __post_init__(self) -> None:
        if self.kind not in RECIPE_KINDS:
            raise UserError(f"recipe kind must be one of {', '.join(RECIPE_KINDS)}; got {self.kind!r}")
        if self.kind == "batch":
            if self.command not in ("", "batch"):
                raise UserError(f"a batch recipe runs `modelserve batch`; its command is 'batch', not {self.command!r}")
            object.__setattr__(self, "command", "batch")
            if self.artifact_flag == "":
                object.__setattr__(self, "artifact_flag", "--input")  # modelserve batch takes no positional
        if not self.command:
            raise UserError("a recipe needs a command (an optimize subcommand, or a python script for kind python)")
        if self.kind == "optimize" and not re.fullmatch(r"[a-z][a-z0-9-]*", self.command):
            raise UserError(f"recipe command {self.command!r} is not an optimize subcommand name")
        if self.artifact_flag and not self.artifact_flag.startswith("-"):
            raise UserError(f"artifact_flag must be '' (positional), a --flag, or null; got {self.artifact_flag!r}")

    def param_args(self) -> list[str]:
        """params -> CLI arguments: True -> --flag, False/None -> omitted, lists -> repeated flag."""
        out: list[str] = []
        for key, value in self.params.items():
            flag = "--" + key.replace("_", "-")
            for item in value if isinstance(value, list) else [value]:
                if item is True:
                    out.append(flag)
                elif item not in (False, None):
                    out += [flag, str(item)]
        return out


HOOK_KINDS = ("shell", "http", "trigger")


@dataclass(frozen=True)
class Hook:
    """Fired on the listed state changes. shell: `command` runs with OPTISERVE_RUN_* env vars; http: a JSON
    POST to `url`; trigger: a run of job `job` (args/env may use {run_id}, {job}, {state}, {output_dir};
    `artifact_from` names a file in this run's outputs that becomes the new run's artifact)."""

    kind: str
    on: tuple[str, ...] = ("succeeded",)
    command: str | None = None
    url: str | None = None
    job: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    artifact_from: str | None = None
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "on", tuple(self.on))
        object.__setattr__(self, "args", tuple(self.args))
        if self.kind not in HOOK_KINDS:
            raise UserError(f"hook kind must be one of {', '.join(HOOK_KINDS)}; got {self.kind!r}")
        bad = [s for s in self.on if s != "*" and s not in RunState.__members__.values()]
        if bad or not self.on:
            raise UserError(f"hook 'on' must list run states ({', '.join(RunState)}) or '*'; got {list(self.on)}")
        needs = {"shell": "command", "http": "url", "trigger": "job"}[self.kind]
        if not getattr(self, needs):
            raise UserError(f"a {self.kind} hook needs '{needs}'")
        if self.kind == "http" and not self.url.startswith(("http://", "https://")):
            raise UserError(f"http hook url must start with http:// or https://, got {self.url!r}")
        check_env(self.env)

    def fires_on(self, state: RunState) -> bool:
        return "*" in self.on or state.value in self.on


@dataclass(frozen=True)
class LogSettings:
    keep: bool = True  # copy the run's log into its folder when it ends (kept after Ray forgets the job)
    max_kept_mb: float = 10.0  # keep only the tail beyond this

    def __post_init__(self) -> None:
        if self.max_kept_mb <= 0:
            raise UserError("logs.max_kept_mb must be positive")


@dataclass(frozen=True)
class Job:
    name: str
    artifact_path: str  # inside the job store: content-addressed, never modified
    artifact_sha256: str
    recipe: Recipe
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    compute: Compute = field(default_factory=Compute)
    max_runtime_s: float = DEFAULT_MAX_RUNTIME_S
    logs: LogSettings = field(default_factory=LogSettings)
    hooks: tuple[Hook, ...] = ()
    script_path: str | None = None  # kind python: the stored copy of the script
    created_at: float = 0.0

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise UserError(f"job name {self.name!r} must be lowercase letters, digits, '.', '_' or '-' (max 63)")
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "hooks", tuple(self.hooks))
        object.__setattr__(self, "env", check_env(self.env))
        object.__setattr__(self, "max_runtime_s", check_max_runtime_s(self.max_runtime_s))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Job:
        data = dict(data)
        data["recipe"] = Recipe(**data["recipe"])
        data["compute"] = Compute(**data.get("compute", {}))
        data["logs"] = LogSettings(**data.get("logs", {}))
        data["hooks"] = tuple(Hook(**h) for h in data.get("hooks", ()))
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True)
class JobRun:
    id: str
    job: str
    state: RunState
    env: dict[str, str]
    args: tuple[str, ...]
    compute: Compute
    max_runtime_s: float
    artifact_path: str
    artifact_sha256: str
    output_dir: str
    submission_id: str  # the Ray job's submission id
    cluster_address: str
    dashboard_url: str
    created_at: float
    deadline_at: float  # created_at + max_runtime_s (+ a small grace the runner itself does not use)
    cluster_pid: int | None = None  # the local head that runs it, when we own it
    submitted_at: float | None = None  # set once Ray accepted the submission
    started_at: float | None = None
    ended_at: float | None = None
    message: str = ""  # why it is in its state (error, timeout, cancel reason)
    exit_code: int | None = None
    triggered_by: str | None = None  # the run whose hook started this one
    outputs: tuple[str, ...] = ()  # files in output_dir (relative), listed when it ends

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> JobRun:
        data = dict(data)
        data["state"] = RunState(data["state"])
        data["compute"] = Compute(**data["compute"])
        data["args"] = tuple(data["args"])
        data["outputs"] = tuple(data.get("outputs", ()))
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def with_(self, **changes) -> JobRun:
        return replace(self, **changes)


@dataclass(frozen=True)
class Event:
    run_id: str
    state: RunState
    at: float
    reason: str
    hooks_status: str = "pending"  # pending -> firing -> done | failed (fired at most once)
    hooks_detail: str = ""
    id: int | None = None
