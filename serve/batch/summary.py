"""`BatchSummary`: the typed result of a batch inference run, saved as OUT/summary.json. Pure."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class BatchSummary:
    model: str
    version: str
    model_sha256: str
    output: str
    shards: int  # input files = output shards
    shards_skipped: int  # complete before this run (resumed)
    shards_written: int  # by this run
    rows: int  # input rows over all shards = output_rows + rejected
    output_rows: int
    rejected: int
    rows_this_run: int
    elapsed_s: float
    rows_per_s: float  # this run's rows over its wall time (model load and Ray start included)
    failures: list[str] = field(default_factory=list)  # why the run stopped early; empty when it completed
    config: dict = field(default_factory=dict)
    cluster: dict = field(default_factory=dict)  # nodes, CPUs, GPUs the run saw

    @property
    def complete(self) -> bool:
        return not self.failures and self.shards_written + self.shards_skipped == self.shards

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> BatchSummary:
        return cls(**json.loads(text))

    def line(self) -> str:
        state = "complete" if self.complete else "INCOMPLETE"
        return (f"{self.model} v{self.version}: {self.rows:,} rows in {self.shards} shard(s) ({state}): "
                f"{self.output_rows:,} scored, {self.rejected:,} rejected; this run {self.rows_this_run:,} rows "
                f"in {self.elapsed_s:.1f} s ({self.rows_per_s:,.0f} rows/s), {self.shards_skipped} shard(s) "
                "already done")


def build(*, model: str, version: str, model_sha256: str, output: str, shards: int, markers: list, skipped: int,
          written: int, rows_this_run: int, elapsed_s: float, failures: list[str], config: dict,
          cluster: dict) -> BatchSummary:
    """From the completion markers of every complete shard (skipped and written)."""
    return BatchSummary(
        model=model, version=version, model_sha256=model_sha256, output=output, shards=shards, shards_skipped=skipped,
        shards_written=written, rows=sum(m.rows for m in markers),
        output_rows=sum(m.output_rows for m in markers), rejected=sum(m.rejected for m in markers),
        rows_this_run=rows_this_run, elapsed_s=round(elapsed_s, 3),
        rows_per_s=round(rows_this_run / elapsed_s, 1) if elapsed_s > 0 else 0.0, failures=list(failures),
        config=dict(config), cluster=cluster,
    )
