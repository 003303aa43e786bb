"""Output shards: one input file scored into a temporary file and renamed into place with its rejects and a
completion marker. Pure (pyarrow and files; no Ray).

`score_file` reads a file in batches (`_read`), predicts each (`_predict`) and hands the rows to a
`ShardWriter`, which numbers them (`row`, 0-based, in file order), writes good rows to `<id>.parquet.tmp` and
rejected ones to `<id>.rejects.jsonl.tmp`; `commit()` renames both and writes the marker last, so a shard is
complete exactly when its marker exists, and a crash leaves only `.tmp` files behind. One process scores a whole
file: its rows never travel between processes, and no other process writes its shard.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from optiserve.errors import UserError
from serve.batch._plan import TMP, InputFile, Marker, atomic_write_text, expected_rows, shard_paths
from serve.batch._predict import REJECT, ROW, SOURCE, Binding, Run, predict_batch
from serve.batch._read import read_batches

REJECTS_FILE = "rejects.jsonl"
OUTPUT_EXTRAS = ("probabilities", "prediction")
REASONS_KEPT = 3
ROW_GROUP_ROWS = 65536  # rows buffered per Parquet row group: one per model call made 1,000 groups per 1M rows


def too_many_rejects(rejected: int, limit: int, reasons) -> UserError:
    return UserError(f"{rejected} rows were rejected, more than --max-rejects {limit} (first reasons: "
                     f"{'; '.join(list(reasons)[:REASONS_KEPT])}); fix the data, choose --nan, or raise --max-rejects "
                     "(completed shards are kept: rerun to resume)")


def score_file(file: InputFile, out: Path, model_sha256: str, binding: Binding, run: Run, batch_rows: int,
               max_rejects: int, after_batch=None) -> Marker:
    """Score every row of one file into its shard and commit it; nothing is left but `.tmp` files on failure.
    `after_batch(rows so far)` is called after each batch (progress, fault injection in tests)."""
    started = time.monotonic()
    writer = ShardWriter(out, file, model_sha256, tuple(o.name for o in binding.outputs))
    try:
        for batch in read_batches(file, batch_rows):
            writer.write(predict_batch(batch, binding, run))
            if writer.rejected > max_rejects:
                raise too_many_rejects(writer.rejected, max_rejects, writer.reasons)
            if after_batch is not None:
                after_batch(writer.rows)
        expected = expected_rows(file)
        if expected is not None and expected != writer.rows:
            raise RuntimeError(f"{file.path} holds {expected} rows but {writer.rows} were read; the shard is not "
                               "marked complete")
        return writer.commit(seconds=time.monotonic() - started)
    except BaseException:
        writer.abort()
        raise


def _parquet_writer(path: Path, schema):
    """Dictionary encoding for text columns only: tried on every column (pyarrow's default), hashing the float
    outputs cost 3x the whole write and gave larger files, as their values hardly repeat."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
            or pa.types.is_binary(f.type) or pa.types.is_dictionary(f.type)]
    return pq.ParquetWriter(path, schema, use_dictionary=text or False)


def _jsonable(value):
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


class ShardWriter:
    """Writes one output shard; not thread-safe (one process scores one file)."""

    def __init__(self, out: Path, file: InputFile, model_sha256: str, output_columns: tuple[str, ...] = ()) -> None:
        self.out, self.file, self.model_sha256 = Path(out), file, model_sha256
        self.output_columns = {*output_columns, *OUTPUT_EXTRAS}
        self.paths = shard_paths(out, file.shard_id)
        self.rows = 0
        self.output_rows = 0
        self.rejected = 0
        self.reasons: list[str] = []
        self._writer = None
        self._buffered: list = []
        self._rejects = None

    def _tmp(self, key: str) -> Path:
        return self.paths[key].with_name(self.paths[key].name + TMP)

    def write(self, table) -> int:
        """Append rows (one source); returns how many were rejected."""
        import pyarrow as pa

        n = table.num_rows
        first = self.file.first_row + self.rows
        table = table.add_column(1, ROW, pa.array(np.arange(first, first + n, dtype=np.int64)))
        self.rows += n
        reasons = table.column(REJECT).to_numpy(zero_copy_only=False)
        bad = reasons != ""
        good = table.filter(pa.array(~bad)).drop_columns([REJECT])
        if good.num_rows:
            if self._writer is None:
                self._writer = _parquet_writer(self._tmp("data"), good.schema)
            elif good.schema != self._writer.schema:
                good = good.cast(self._writer.schema)
            self._buffered.append(good)
            self.output_rows += good.num_rows
            if sum(t.num_rows for t in self._buffered) >= ROW_GROUP_ROWS:
                self._flush()
        if bad.any():
            if self._rejects is None:
                self._rejects = open(self._tmp("rejects"), "w")
            rejected = table.filter(pa.array(bad))
            keys = [c for c in rejected.column_names if c not in (SOURCE, ROW, REJECT, *self.output_columns)]
            for record in rejected.select([SOURCE, ROW, *keys, REJECT]).to_pylist():
                record["reason"] = record.pop(REJECT)
                if len(self.reasons) < REASONS_KEPT:
                    self.reasons.append(record["reason"])
                self._rejects.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")
            self.rejected += int(bad.sum())
        return int(bad.sum())

    def commit(self, schema=None, seconds: float = 0.0) -> Marker:
        """Close, rename into place, write the marker last. An all-rejected or empty input still gets a shard."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            empty = schema or pa.schema([(SOURCE, pa.string()), (ROW, pa.int64())])
            pq.write_table(empty.empty_table(), self._tmp("data"))
        else:
            self._flush()
            self._writer.close()
        self._fsync(self._tmp("data"))
        os.replace(self._tmp("data"), self.paths["data"])
        if self._rejects is not None:
            self._rejects.flush()
            os.fsync(self._rejects.fileno())
            self._rejects.close()
            os.replace(self._tmp("rejects"), self.paths["rejects"])
        marker = Marker(self.file.shard_id, self.file.path, self.file.size, self.file.mtime_ns, self.model_sha256,
                        self.rows, self.output_rows, self.rejected, tuple(self.reasons), round(seconds, 3))
        atomic_write_text(self.paths["marker"], marker.to_json())
        return marker

    def _flush(self) -> None:
        import pyarrow as pa

        if self._buffered:
            self._writer.write_table(pa.concat_tables(self._buffered))
            self._buffered = []

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._rejects is not None:
            self._rejects.close()
        for key in ("data", "rejects"):
            self._tmp(key).unlink(missing_ok=True)

    @staticmethod
    def _fsync(path: Path) -> None:
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())


def merge_rejects(out: Path, files: list[InputFile]) -> int:
    """OUT/rejects.jsonl: every shard's rejects, in input order (rewritten each run). Returns the count."""
    target = Path(out) / REJECTS_FILE
    tmp = target.with_name(target.name + TMP)
    count = 0
    with open(tmp, "w") as fh:
        for file in files:
            path = shard_paths(out, file.shard_id)["rejects"]
            if path.exists():
                for line in path.read_text().splitlines():
                    fh.write(line + "\n")
                    count += 1
    os.replace(tmp, target)
    return count
