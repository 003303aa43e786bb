"""The per-batch predict function: columns in, model outputs and reject reasons out. Pure (numpy, pyarrow).

`predict_batch(batch, binding, run)` takes one batch as `_read` yields it (column name -> numpy array,
with the file each row came from in `path`), picks the model's inputs out of it (`bind_rows`), checks every
row (shape, NaN policy), runs the model on the good rows only and returns one pyarrow table with exactly one
row per input row: `source`, the key columns, the outputs (plus `probabilities` and `prediction` for a
classifier) and `_reject`, the reason a row was rejected ("" for good rows). A row the model itself fails on is
found by re-running its batch row by row, so one bad row never costs the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from optiserve.errors import UserError

PATH = "path"  # the file each row came from, added by _read
REJECT = "_reject"
SOURCE = "source"
ROW = "row"
RESERVED = (PATH, REJECT, SOURCE, ROW, "probabilities", "prediction")
LABEL_NAMES = ("y", "label", "labels", "target", "targets", "class")  # as optiserve.data reads labels

Run = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class TensorIO:
    name: str
    shape: tuple[int, ...]  # without the batch axis; -1 where dynamic
    dtype: str = "float32"


@dataclass(frozen=True)
class Binding:
    """How batches feed the model: its inputs and outputs and the column roles chosen on the command line."""

    inputs: tuple[TensorIO, ...]
    outputs: tuple[TensorIO, ...]
    key_columns: tuple[str, ...] = ()
    feature_columns: tuple[str, ...] = ()
    input_map: tuple[tuple[str, str], ...] = ()
    label_column: str | None = None
    nan: str = "reject"


_NUMPY = {"FP32": "float32", "FP16": "float16", "FP64": "float64", "INT8": "int8", "INT16": "int16",
          "INT32": "int32", "INT64": "int64", "UINT8": "uint8", "BOOL": "bool"}


def binding_for(manifest, **roles) -> Binding:
    """A Binding from a repository manifest (TensorSpec shapes include the batch axis)."""
    def io(spec):
        if spec.datatype not in _NUMPY:
            raise UserError(f"model {manifest.name} has {spec.datatype} tensor {spec.name!r}; batch inference takes "
                            "numeric tensors only")
        return TensorIO(spec.name, tuple(spec.shape[1:]), _NUMPY[spec.datatype])

    return Binding(tuple(io(s) for s in manifest.inputs), tuple(io(s) for s in manifest.outputs), **roles)


def _rows(batch: dict[str, np.ndarray]) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def label_column(batch: dict[str, np.ndarray], binding: Binding) -> str | None:
    if binding.label_column is not None:
        return binding.label_column if binding.label_column in batch else None
    explicit = set(binding.feature_columns) | {c.strip() for _, s in binding.input_map for c in s.split(",")}
    guesses = [c for c in batch if c.lower() in LABEL_NAMES and c not in explicit]
    return guesses[0] if len(guesses) == 1 else None


def _is_tensor(column: np.ndarray) -> bool:
    return column.ndim >= 2 or (column.dtype == object and len(column) > 0 and isinstance(column[0], np.ndarray | list))


def _columns_for(spec: TensorIO, batch: dict[str, np.ndarray], binding: Binding, others: set[str]) -> list[str]:
    """The column(s) that feed one model input."""
    mapped = dict(binding.input_map)
    if spec.name in mapped:
        columns = [c.strip() for c in mapped[spec.name].split(",") if c.strip()]
    elif len(binding.inputs) == 1 and binding.feature_columns:
        columns = list(binding.feature_columns)
    else:
        same = [c for c in batch if c == spec.name] or [c for c in batch if c.lower() == spec.name.lower()]
        candidates = [c for c in batch if c not in others]
        if len(same) == 1:
            columns = same
        elif len(binding.inputs) == 1:
            columns = candidates
        else:
            raise UserError(f"no column or array is named like the model input {spec.name!r} (found "
                            f"{', '.join(batch) or 'none'}); say which feeds it with --inputs {spec.name}=NAME")
    missing = [c for c in columns if c not in batch]
    if missing or not columns:
        raise UserError(f"the data has no column(s) {missing or '(none left)'} for model input {spec.name!r}; "
                        f"it has {', '.join(c for c in batch if c != PATH)}")
    return columns


def _as_float(column: np.ndarray, name: str, reasons: np.ndarray) -> np.ndarray:
    """A scalar column as float64; None -> NaN; a value that is not a number rejects its row."""
    if column.dtype.kind in "biuf":
        return column.astype(np.float64)
    if column.dtype.kind in "USM":
        raise UserError(f"column {name!r} holds {column.dtype} values, not numbers; name it in --key-columns "
                        "or leave it out with --feature-columns")
    out = np.empty(len(column), np.float64)
    for i, value in enumerate(column):
        try:
            out[i] = np.nan if value is None else float(value)
        except (TypeError, ValueError):
            out[i] = 0.0
            if not reasons[i]:
                reasons[i] = f"not a number in column {name!r}: {str(value)[:40]!r}"
    return out


def _fixed(shape: tuple[int, ...], size: int) -> tuple[int, ...] | None:
    """The input shape for a row of `size` values, filling one dynamic (-1) axis; None if it cannot fit."""
    known = int(np.prod([d for d in shape if d != -1])) if shape else 1
    dynamic = sum(1 for d in shape if d == -1)
    if dynamic == 0:
        return shape if size == known else None
    if dynamic == 1 and known and size % known == 0:
        return tuple(size // known if d == -1 else d for d in shape)
    return None


def _tensor(column: np.ndarray, spec: TensorIO, reasons: np.ndarray) -> np.ndarray:
    """A column of per-row arrays (fixed-shape ndarray or ragged object array) as (n, *shape) float64."""
    n = len(column)
    if column.dtype != object:
        shape = _fixed(spec.shape, int(np.prod(column.shape[1:])))
        if shape is not None:
            return column.reshape(n, *shape).astype(np.float64)
        for i in range(n):
            reasons[i] = reasons[i] or f"bad shape: a row of shape {tuple(column.shape[1:])} does not fit input " \
                                       f"{spec.name!r} of shape {spec.shape}"
        return np.zeros((n, *(1 if d == -1 else d for d in spec.shape)))
    rows = [np.asarray(v if v is not None else [], dtype=np.float64) for v in column]
    shape = next((s for r in rows if (s := _fixed(spec.shape, r.size)) is not None), None)
    shape = shape or tuple(1 if d == -1 else d for d in spec.shape)
    out = np.zeros((n, *shape))
    for i, row in enumerate(rows):
        if row.size == int(np.prod(shape)):
            out[i] = row.reshape(shape)
        elif not reasons[i]:
            reasons[i] = f"bad shape: a row of shape {row.shape} does not fit input {spec.name!r} of shape {shape}"
    return out


def bind_rows(batch: dict[str, np.ndarray], binding: Binding) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(model input -> array for every row, reject reason per row ("" = good)). Bad rows hold zeros."""
    n = _rows(batch)
    reasons = np.full(n, "", dtype=object)
    label = label_column(batch, binding)
    reserved = {PATH, *binding.key_columns, *([label] if label else [])}
    missing_keys = [k for k in binding.key_columns if k not in batch]
    if missing_keys and set(batch) - {PATH} != {"data"}:  # .npy files (one `data` column) have no keys
        has = ", ".join(c for c in batch if c != PATH)
        raise UserError(f"the data has no key column(s) {missing_keys} named by --key-columns; it has {has}")
    named = {s.name for s in binding.inputs}
    feeds = {}
    for spec in binding.inputs:
        others = reserved | (named - {spec.name} if len(binding.inputs) > 1 else set())
        columns = _columns_for(spec, batch, binding, others)
        if len(columns) == 1 and _is_tensor(batch[columns[0]]):
            values = _tensor(batch[columns[0]], spec, reasons)
        else:
            for c in columns:
                if _is_tensor(batch[c]):
                    raise UserError(f"column {c!r} holds arrays; feed it alone with --inputs {spec.name}={c}")
            matrix = np.stack([_as_float(batch[c], c, reasons) for c in columns], axis=1) if n else np.zeros((0, 0))
            shape = _fixed(spec.shape, len(columns))
            if shape is None:
                raise UserError(f"{len(columns)} feature column(s) ({', '.join(columns[:5])}"
                                f"{', ...' if len(columns) > 5 else ''}) do not fit model input {spec.name!r} of "
                                f"shape {spec.shape}; choose them with --feature-columns or --key-columns")
            values = matrix.reshape(n, *shape)
        flat = values.reshape(n, -1)
        bad = ~np.isfinite(flat).all(axis=1) if flat.size else np.zeros(n, bool)
        if binding.nan == "reject":
            for i in np.flatnonzero(bad):
                reasons[i] = reasons[i] or f"NaN or infinite value in input {spec.name!r} (--nan reject)"
        elif binding.nan == "zero":
            values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        feeds[spec.name] = values
    return feeds, reasons


def _run_isolating(run: Run, feeds: dict[str, np.ndarray], reasons: np.ndarray, good: np.ndarray):
    """Outputs for the good rows; rows the model fails on alone get a reason instead."""
    try:
        return run({k: v[good] for k, v in feeds.items()}), good
    except Exception:  # noqa: BLE001 - onnxruntime raises its own types; find the row(s) to blame
        pass
    kept, outs = [], []
    for i in good:
        try:
            outs.append(run({k: v[i:i + 1] for k, v in feeds.items()}))
            kept.append(i)
        except Exception as exc:  # noqa: BLE001
            reasons[i] = f"model error: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
    if not outs:
        return None, np.array([], dtype=np.int64)
    return [np.concatenate(parts) for parts in zip(*outs, strict=True)], np.asarray(kept, dtype=np.int64)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _looks_like_probabilities(x: np.ndarray) -> bool:
    return bool(len(x)) and bool((x >= 0).all() and (x <= 1).all() and np.allclose(x.sum(axis=1), 1, atol=1e-3))


def _column(values: np.ndarray):
    import pyarrow as pa

    if values.ndim == 1:
        return pa.array(values)
    if values.ndim == 2 and values.shape[1] == 1:
        return pa.array(values[:, 0])
    flat = np.ascontiguousarray(values.reshape(len(values), -1))
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])


def assemble(batch: dict[str, np.ndarray], binding: Binding, outputs: list[np.ndarray] | None, kept: np.ndarray,
             reasons: np.ndarray):
    """One pyarrow table, one row per input row: source, keys, label, outputs, probabilities/prediction, _reject."""
    import pyarrow as pa

    n = _rows(batch)
    columns: dict[str, object] = {}
    columns[SOURCE] = pa.array(batch[PATH] if PATH in batch else np.full(n, ""), pa.string())
    label = label_column(batch, binding)
    present = [k for k in binding.key_columns if k in batch]
    for key in (*present, *([label] if label and label not in present else [])):
        columns[key] = _column(np.asarray(batch[key])) if batch[key].dtype != object else pa.array(list(batch[key]))
    full = []
    for spec, out in zip(binding.outputs, outputs or [None] * len(binding.outputs), strict=True):
        shape = out.shape[1:] if out is not None else tuple(max(d, 1) for d in spec.shape)
        values = np.zeros((n, *shape), dtype=out.dtype if out is not None else np.float32)
        if out is not None:
            values[kept] = out
        full.append(values)
        columns[spec.name] = _column(values)
    if len(full) == 1 and full[0].ndim == 2 and full[0].shape[1] >= 2 and full[0].dtype.kind == "f":
        good = full[0][kept] if len(kept) else full[0][:0]
        probs = full[0] if _looks_like_probabilities(good) else _softmax(full[0].astype(np.float64))
        columns["probabilities"] = _column(probs.astype(np.float32))
        columns["prediction"] = pa.array(full[0].argmax(axis=1).astype(np.int64))
    columns[REJECT] = pa.array(reasons.astype(str) if n else np.array([], dtype=str), pa.string())
    return pa.table(columns)


def predict_batch(batch: dict[str, np.ndarray], binding: Binding, run: Run):
    """One batch: bind, check, run the good rows, assemble (see the module docstring)."""
    feeds, reasons = bind_rows(batch, binding)
    good = np.flatnonzero(reasons == "")
    outputs, kept = None, good
    if len(good):
        feeds = {s.name: np.ascontiguousarray(feeds[s.name], dtype=s.dtype) for s in binding.inputs}
        outputs, kept = _run_isolating(run, feeds, reasons, good)
    return assemble(batch, binding, outputs, kept, reasons)
