"""`BatchConfig`: what a batch inference run does, validated on construction, JSON round-trip. Pure."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from optiserve.errors import UserError

NAN_POLICIES = ("reject", "zero", "propagate")


@dataclass(frozen=True)
class BatchConfig:
    repository: str
    model: str
    inputs: tuple[str, ...]  # files or folders of .parquet/.csv/.tsv/.npz/.npy
    output: str  # folder: shards/, rejects.jsonl, summary.json
    version: str | None = None  # None: the newest published version
    batch_size: int = 1024  # rows per model call
    min_actors: int = 1
    max_actors: int | None = None  # None: as many as the cluster's free CPUs (or GPUs) allow
    threads_per_actor: int | None = None  # CPUs reserved per actor = onnxruntime threads; None: a node's CPUs
    gpus_per_actor: float = 0.0  # > 0: actors run on CUDA and reserve this many GPUs
    key_columns: tuple[str, ...] = ()  # input columns copied beside the outputs (tables)
    feature_columns: tuple[str, ...] = ()  # tables: the feature columns, in order (default: all but keys/labels)
    input_map: tuple[tuple[str, str], ...] = ()  # (model input, array | comma-separated columns), as --inputs
    label_column: str | None = None  # kept beside the outputs like a key, never fed to the model
    nan: str = "reject"  # rows holding NaN: reject | zero (replace by 0) | propagate (feed as they are)
    max_rejects: int = 1000  # more rejected rows than this fail the run
    address: str | None = None  # Ray cluster; None: RAY_ADDRESS, else a local Ray for this command
    progress: bool = True
    extra: dict = field(default_factory=dict, compare=False)  # free-form notes recorded in the summary

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(str(p) for p in self.inputs))
        object.__setattr__(self, "key_columns", tuple(self.key_columns))
        object.__setattr__(self, "feature_columns", tuple(self.feature_columns))
        object.__setattr__(self, "input_map", tuple(tuple(p) for p in self.input_map))
        if not self.inputs:
            raise UserError("no input given: pass --input PATH (a file or a folder of .parquet/.csv/.npz/.npy files)")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.min_actors < 1:
            raise UserError(f"--min-actors must be at least 1, got {self.min_actors}")
        if self.max_actors is not None and self.max_actors < self.min_actors:
            raise UserError(f"--max-actors ({self.max_actors}) must be at least --min-actors ({self.min_actors})")
        if self.threads_per_actor is not None and self.threads_per_actor < 1:
            raise UserError(f"--threads-per-actor must be at least 1, got {self.threads_per_actor}")
        if self.gpus_per_actor < 0:
            raise UserError(f"--gpus-per-actor cannot be negative, got {self.gpus_per_actor:g}")
        if self.nan not in NAN_POLICIES:
            raise UserError(f"--nan must be one of {', '.join(NAN_POLICIES)}; got {self.nan!r}")
        if self.max_rejects < 0:
            raise UserError(f"--max-rejects cannot be negative, got {self.max_rejects}")
        if self.input_map and self.feature_columns:
            raise UserError("--inputs and --feature-columns both choose feature columns; give only one of them")
        overlap = set(self.key_columns) & set(self.feature_columns)
        if overlap:
            raise UserError(f"columns {sorted(overlap)} are both key and feature columns; give each one role")

    @property
    def device(self) -> str:
        return "cuda" if self.gpus_per_actor > 0 else "cpu"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> BatchConfig:
        return cls(**json.loads(text))
