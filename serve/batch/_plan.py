"""Input discovery and shard planning. Pure (files and folders only; no Ray).

Every input file is one shard, except a Parquet file of more than `PART_ROWS` rows, which is cut at row-group
boundaries into shards of at least that many rows (so one large file still spreads over the actors and
nodes). Each shard maps to one output shard `OUT/shards/<id>.parquet` with its rejects `<id>.rejects.jsonl`
and, written last, its completion marker `<id>.done.json`. A shard is complete
when its marker exists and still describes the same input file (size, mtime) and the same model (sha256);
anything else (no marker, a stale marker, leftover `.tmp` files of a crashed run) is redone from scratch.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from optiserve.errors import UserError

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv", ".csv.gz": "csv",
           ".tsv.gz": "csv", ".npz": "npz", ".npy": "npy"}
SHARDS = "shards"
TMP = ".tmp"
PART_ROWS = 1 << 20  # a Parquet file larger than this is scored as several shards
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class InputFile:
    path: str  # absolute
    format: str  # parquet | csv | npz | npy
    size: int
    mtime_ns: int
    shard_id: str  # stable name of its output shard
    delimiter: str = ","  # csv/tsv
    header: bool = True  # csv: False when the first line is all numbers (columns are then f0, f1, ...)
    ncols: int = 0  # csv: columns in the first line
    row_groups: tuple[int, ...] = ()  # Parquet: (first, stop) row groups of this shard; () = the whole file
    first_row: int = 0  # the file's row number of the shard's first row

    def __post_init__(self) -> None:
        object.__setattr__(self, "row_groups", tuple(self.row_groups))

    @property
    def name(self) -> str:
        return Path(self.path).name


@dataclass(frozen=True)
class Marker:
    """A complete output shard: written last, after the shard and its rejects are in place."""

    shard_id: str
    input: str
    input_size: int
    input_mtime_ns: int
    model_sha256: str
    rows: int  # input rows = output rows + rejected
    output_rows: int
    rejected: int
    reasons: tuple[str, ...] = ()  # the first few reject reasons, for the --max-rejects message
    seconds: float = 0.0  # time its actor spent on it: reading, scoring, writing

    def __post_init__(self) -> None:
        object.__setattr__(self, "reasons", tuple(self.reasons))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _format(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return FORMATS[suffix]
    return None


def shard_id(path: str) -> str:
    """A stable, file-system-safe name: the file's stem and a hash of its absolute path."""
    stem = _UNSAFE.sub("_", Path(path).name)[:60]
    return f"{stem}-{hashlib.sha1(path.encode()).hexdigest()[:10]}"


def _csv_layout(path: Path) -> tuple[str, bool, int]:
    import gzip

    delimiter = "\t" if ".tsv" in path.name.lower() else ","
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        first = fh.readline().rstrip("\r\n")
    fields = first.split(delimiter)

    def number(text: str) -> bool:
        try:
            float(text)
        except ValueError:
            return False
        return True

    return delimiter, not (first and all(number(f) for f in fields)), len(fields)


def describe(path: Path) -> InputFile:
    """The file as a shard, its layout read cheaply (Parquet footer, CSV first line, .npz member names), so a
    broken file is one sentence here, before Ray starts."""
    path = path.resolve()
    fmt = _format(path)
    if fmt is None:
        raise UserError(f"{path} is not a .parquet, .csv, .tsv, .npz or .npy file")
    stat = path.stat()
    extra: dict = {}
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.read_schema(path)
        elif fmt == "npz":
            import zipfile

            with zipfile.ZipFile(path) as zf:
                zf.namelist()
        elif fmt == "csv":
            extra = dict(zip(("delimiter", "header", "ncols"), _csv_layout(path), strict=True))
    except Exception as exc:  # OSError, and pyarrow's / zipfile's own types for a broken file
        raise UserError(f"input {path} is not a readable {fmt} file ({str(exc).splitlines()[0][:200]})") from None
    return InputFile(str(path), fmt, stat.st_size, stat.st_mtime_ns, shard_id(str(path)), **extra)


def split(file: InputFile, part_rows: int | None = None) -> list[InputFile]:
    """A Parquet file of more than `part_rows` rows as shards of whole row groups, each of at least `part_rows`
    rows but the last."""
    part_rows = part_rows or PART_ROWS
    if file.format != "parquet":
        return [file]
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(file.path).metadata
    if meta.num_rows <= part_rows or meta.num_row_groups < 2:
        return [file]
    parts, first, start, rows = [], 0, 0, 0
    for g in range(meta.num_row_groups):
        rows += meta.row_group(g).num_rows
        if rows - first >= part_rows or g == meta.num_row_groups - 1:
            parts.append(replace(file, shard_id=f"{file.shard_id}-p{len(parts):04d}", row_groups=(start, g + 1),
                                 first_row=first))
            first, start = rows, g + 1
    return parts


def discover(inputs: list[str] | tuple[str, ...]) -> list[InputFile]:
    """The shards of the data files named or found (recursively, sorted) in the given paths, in input order; a
    UserError when there are none."""
    found: dict[str, InputFile] = {}
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and _format(p)
                           and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))
        elif path.is_file():
            files = [path]
        else:
            raise UserError(f"input {text} does not exist; give data files or folders of them")
        for file in files:
            described = describe(file)
            found.setdefault(described.path, described)
    if not found:
        raise UserError(f"no input files found in {', '.join(inputs)}: give .parquet, .csv, .tsv, .npz or .npy "
                        "files or folders holding them")
    return [part for file in found.values() for part in split(file)]


def shard_paths(out: Path, shard: str) -> dict[str, Path]:
    folder = Path(out) / SHARDS
    return {"data": folder / f"{shard}.parquet", "rejects": folder / f"{shard}.rejects.jsonl",
            "marker": folder / f"{shard}.done.json"}


def read_marker(out: Path, shard: str) -> Marker | None:
    try:
        return Marker(**json.loads(shard_paths(out, shard)["marker"].read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def is_complete(marker: Marker | None, file: InputFile, model_sha256: str) -> bool:
    return (marker is not None and marker.input == file.path and marker.input_size == file.size
            and marker.input_mtime_ns == file.mtime_ns and marker.model_sha256 == model_sha256)


@dataclass(frozen=True)
class Plan:
    complete: list[tuple[InputFile, Marker]]
    pending: list[InputFile]

    @property
    def files(self) -> int:
        return len(self.complete) + len(self.pending)


def plan(files: list[InputFile], out: Path, model_sha256: str) -> Plan:
    """Which shards are complete (skipped) and which are to be (re)done."""
    complete, pending = [], []
    for file in files:
        marker = read_marker(out, file.shard_id)
        if is_complete(marker, file, model_sha256):
            complete.append((file, marker))
        else:
            pending.append(file)
    return Plan(complete, pending)


_SHARD_FILE = re.compile(r"(-p\d{4})?\.(?:parquet|rejects\.jsonl|done\.json)(?:\.tmp)?$")


def prepare(out: Path, pending: list[InputFile], keep: set[str] = frozenset()) -> None:
    """Clear what a crashed or older run left of the pending shards (markers first, then data, then temp files),
    and the shards of the same input files cut differently before (a file that grew past PART_ROWS, or shrank
    under it), unless their id is in `keep` (the complete shards of this plan)."""
    folder = Path(out) / SHARDS
    folder.mkdir(parents=True, exist_ok=True)
    for file in pending:
        paths = shard_paths(out, file.shard_id)
        for key in ("marker", "data", "rejects"):
            paths[key].unlink(missing_ok=True)
    current = {f.shard_id for f in pending} | set(keep)
    for base in {shard_id(f.path) for f in pending}:
        for path in sorted(folder.glob(f"{glob.escape(base)}*"), key=lambda p: not p.name.endswith(".done.json")):
            cut = _SHARD_FILE.fullmatch(path.name[len(base):])
            if cut and base + (cut.group(1) or "") not in current:
                path.unlink(missing_ok=True)
    for tmp in folder.glob(f"*{TMP}"):
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + TMP)
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def expected_rows(file: InputFile) -> int | None:
    """Rows the file holds, where its header says so cheaply (Parquet footer, .npy header); None otherwise."""
    try:
        if file.format == "parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(file.path).metadata
            groups = range(*file.row_groups) if file.row_groups else range(meta.num_row_groups)
            return sum(meta.row_group(g).num_rows for g in groups)
        if file.format == "npy":
            import numpy as np

            array = np.load(file.path, mmap_mode="r", allow_pickle=False)
            return int(array.shape[0]) if array.ndim else 1
    except (OSError, ValueError):
        return None
    return None
