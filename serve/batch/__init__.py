"""Batch inference: a published model over whole data sets on a pool of Ray actors (`modelserve batch`).

Every input file is one shard and maps to one output shard, written atomically with a completion marker, so
a rerun after a crash or cancel skips complete shards and redoes partial ones; every input row ends up as
exactly one row of the output shards or of the rejects. The pure parts (`config`, `summary`, `_plan`,
`_predict`, `_shards`) import no Ray; `_pipeline` is the Ray edge.
"""

from serve.batch.config import NAN_POLICIES, BatchConfig
from serve.batch.summary import SUMMARY_FILE, BatchSummary

__all__ = ["NAN_POLICIES", "SUMMARY_FILE", "BatchConfig", "BatchSummary", "run_batch"]


def run_batch(config: BatchConfig, log=print) -> BatchSummary:
    """Run (or resume) a batch inference run; see serve.batch._pipeline. Ray is imported only here."""
    from serve.batch._pipeline import run_batch as run

    return run(config, log)
