"""Data sets (inputs and optional labels, from `.npz`, CSV or Parquet files) and the input specs of a model.

One reader for every place that takes data (`load_dataset`), steered by `DataOptions` (the `--inputs`,
`--labels`/`--label-column` and `--feature-columns` flags):

- `.npz`: the array named `y`, `label(s)`, `target(s)` or `class` (any case) holds the labels; the other arrays
  are inputs. A file with a single input array may name it anything (`x`, `X`, `features`, `inputs`): it feeds
  a single-input model. `--inputs NAME=ARRAY` and `--labels ARRAY` say it explicitly.
- CSV / Parquet: the label column is named as above or by `--label-column`; the other columns (file order, or
  `--feature-columns a,b,c`) form one float32 matrix for a single-input model; `--inputs NAME=COL,COL` splits
  columns between inputs (see `_tabular.py`).

`bind` then matches the arrays to the model's inputs; when nothing matches it says, in one sentence, what the
file holds, what the model needs and which flag to use. Specs keep the batch axis dynamic (None); the other axes
are fixed.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from optiserve.errors import UserError

LABELS = "labels"
LABEL_NAMES = ("y", "label", "labels", "target", "targets", "class")  # compared case-insensitively
_NPZ_HINT = "pass --inputs INPUT=ARRAY to say which array feeds which model input (and --labels ARRAY)"
_TABLE_HINT = "pass --feature-columns a,b,c (or --inputs INPUT=COL,COL) and --label-column NAME"


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]  # without the batch axis
    dtype: str = "float32"


@dataclass(frozen=True)
class Dataset:
    inputs: dict[str, np.ndarray]  # name -> array with the batch axis first
    labels: np.ndarray | None = None
    origin: str = field(default="", compare=False)  # "calibration data file calib.csv": for messages
    found: str = field(default="", compare=False)  # what the file holds, in words: for messages
    tabular: bool = field(default=False, compare=False)  # rows of feature columns: may be reshaped to fit

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, n: int, start: int = 0) -> dict[str, np.ndarray]:
        return {k: v[start:start + n] for k, v in self.inputs.items()}

    def batches(self, size: int):
        for start in range(0, len(self), size):
            yield self.take(size, start)


@dataclass(frozen=True)
class DataOptions:
    """How to read data files when names alone do not tell (the same options apply to every data file)."""

    inputs: tuple[tuple[str, str], ...] = ()  # (model input, array name | comma-separated columns)
    labels: str | None = None  # label array or column; a file without it is read as unlabelled
    feature_columns: tuple[str, ...] = ()  # CSV/Parquet: the feature columns, in this order

    def __post_init__(self) -> None:
        names = [n for n, _ in self.inputs]
        if len(set(names)) != len(names):
            raise UserError(f"--inputs names an input more than once: {names}")
        if self.inputs and self.feature_columns:
            raise UserError("--inputs and --feature-columns both choose feature columns; give only one of them")

    @classmethod
    def from_flags(cls, inputs: list[str] | None = None, labels: str | None = None,
                   feature_columns: str | None = None) -> DataOptions:
        """`--inputs x=X` (repeatable), `--labels y`, `--feature-columns a,b,c` as typed on the command line."""
        pairs = []
        for text in inputs or []:
            name, sep, array = text.partition("=")
            if not sep or not name.strip() or not array.strip():
                raise UserError(f"--inputs {text!r} is not understood; write INPUT=ARRAY, e.g. --inputs input=X")
            pairs.append((name.strip(), array.strip()))
        columns = tuple(c.strip() for c in (feature_columns or "").split(",") if c.strip())
        return cls(tuple(pairs), labels or None, columns)

    @classmethod
    def from_dict(cls, data: dict) -> DataOptions:
        """From a grid/config file: `{inputs: {input: X}, labels: y, feature_columns: [a, b]}`."""
        unknown = sorted(set(data) - {"inputs", "labels", "feature_columns"})
        if unknown:
            raise UserError(f"data options {unknown} unknown; known: inputs, labels, feature_columns")
        inputs = data.get("inputs") or {}
        columns = data.get("feature_columns") or ()
        return cls(tuple((str(k), str(v)) for k, v in (inputs.items() if isinstance(inputs, dict) else inputs)),
                   data.get("labels"), tuple(columns.split(",") if isinstance(columns, str) else columns))


def load_dataset(path: Path, role: str = "data", options: DataOptions = DataOptions()) -> Dataset:
    """Read a data set (.npz, .csv, .tsv, .parquet); every failure is a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{role} file {path} does not exist")
    origin = f"{role} file {path}"
    name = path.name.lower()
    from optiserve import _tabular

    if name.endswith(_tabular.CSV_SUFFIXES + _tabular.PARQUET_SUFFIXES) or _tabular._is_parquet(path):
        inputs, labels, found = _tabular.load_table(path, role, options, LABEL_NAMES)
        tabular = True
    else:
        inputs, labels, found = _load_npz(path, role, options)
        tabular = False
    if labels is not None:
        labels = _as_labels(labels, origin)
    sizes = {len(a) if a.ndim else 0 for a in inputs.values()} | ({len(labels)} if labels is not None else set())
    if sizes == {0}:
        raise UserError(f"{origin} is empty: it holds no samples")
    if len(sizes) != 1:
        raise UserError(f"{origin} has arrays with different numbers of samples: {sorted(sizes)}")
    return Dataset(inputs, labels, origin, found, tabular)


def load_npz(path: Path, what: str = "data") -> Dataset:
    """`load_dataset` with the default options (kept for callers that only ever read .npz files)."""
    return load_dataset(path, what)


def _load_npz(path: Path, what: str, options: DataOptions):
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(f"{what} file {path} is not a readable .npz of arrays, CSV or Parquet file ({exc})") from None
    explicit = {a for _, a in options.inputs}
    if options.labels is not None:
        label = options.labels if options.labels in arrays else None  # absent: this file is unlabelled
    else:
        guesses = [k for k in arrays if k.lower() in LABEL_NAMES and k not in explicit]
        if len(guesses) > 1:
            guesses = [k for k in guesses if k == LABELS] or guesses
        if len(guesses) > 1:
            raise UserError(f"{what} file {path} has several label-like arrays {guesses}; say which one holds the "
                            "labels with --labels NAME")
        label = guesses[0] if guesses else None
    labels = arrays.pop(label) if label else None
    found = _describe(arrays) + (f" and labels {label!r}" if label else " and no labels")
    if options.inputs:
        missing = sorted(explicit - set(arrays))
        if missing:
            raise UserError(f"{what} file {path} has no array(s) {missing} named by --inputs; it holds {found}")
        arrays = {name: arrays[a] for name, a in options.inputs}
    if not arrays:
        raise UserError(f"{what} file {path} has no input arrays (only labels {label!r})")
    return arrays, labels, found


def _describe(arrays: dict[str, np.ndarray]) -> str:
    return "arrays " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items()) if arrays else "no input arrays"


def _as_labels(labels: np.ndarray, origin: str) -> np.ndarray:
    """Class indices as int64: integral numbers as they are; one-hot rows by their argmax."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    elif labels.ndim == 2 and np.issubdtype(labels.dtype, np.number):
        labels = labels.argmax(1)  # one-hot / probability rows
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.number) or labels.dtype == bool):
        raise UserError(f"{origin} has labels of type {labels.dtype} and shape {labels.shape}; labels must be one "
                        "class index per sample (0..K-1), so encode them as integers first")
    if np.issubdtype(labels.dtype, np.floating) and not np.all(np.mod(labels, 1) == 0):
        raise UserError(f"{origin} has labels that are not whole numbers; accuracy needs one class index per "
                        "sample (0..K-1): give a file without labels to measure output agreement instead")
    return labels.astype(np.int64)


def _needs(specs: list[InputSpec] | list[str]) -> str:
    if specs and isinstance(specs[0], str):
        return f"input{'s' if len(specs) > 1 else ''} {', '.join(map(repr, specs))}"
    what = ", ".join(f"{s.name!r} of shape {s.shape}" for s in specs)
    return f"input{'s' if len(specs) > 1 else ''} {what} per sample"


def _no_match(dataset: Dataset, specs: list[InputSpec] | list[str], what: str) -> UserError:
    found = dataset.found or _describe(dataset.inputs)
    hint = _TABLE_HINT if dataset.tabular else _NPZ_HINT
    return UserError(f"{dataset.origin or what} holds {found} ({len(dataset)} samples) but the model needs "
                     f"{_needs(specs)}; {hint}")


def _match(dataset: Dataset, names: list[str]) -> dict[str, np.ndarray] | None:
    """Model input name -> array: by name (any case), or the only array for the only input; None if not all."""
    arrays = dict(dataset.inputs)
    if len(names) == 1 and len(arrays) == 1:
        return {names[0]: next(iter(arrays.values()))}
    matched = {}
    for name in names:
        same = [k for k in arrays if k == name] or [k for k in arrays if k.lower() == name.lower()]
        if len(same) != 1:
            return None
        matched[name] = arrays[same[0]]
    return matched


def bind(dataset: Dataset, specs: list[InputSpec], what: str = "data") -> Dataset:
    """Rename a data set's arrays to the model's input names and check their shapes."""
    arrays = _match(dataset, [s.name for s in specs])
    if arrays is None:
        raise _no_match(dataset, specs, what)
    bound = {}
    for spec in specs:
        array = arrays[spec.name]
        if tuple(array.shape[1:]) != spec.shape:
            if dataset.tabular and array.ndim == 2 and array.shape[1] == int(np.prod(spec.shape)):
                array = array.reshape(len(array), *spec.shape)  # a row of 64 pixel columns -> (1, 8, 8)
            else:
                hint = _TABLE_HINT if dataset.tabular else _NPZ_HINT
                raise UserError(f"{dataset.origin or what} holds {dataset.found or _describe(dataset.inputs)}: "
                                f"samples of shape {tuple(array.shape[1:])} do not fit the model's input "
                                f"{spec.name!r} of shape {spec.shape}; check the file, or {hint}")
        bound[spec.name] = np.ascontiguousarray(array, dtype=spec.dtype)
    return Dataset(bound, dataset.labels, dataset.origin, dataset.found, dataset.tabular)


def specs_from_data(dataset: Dataset, names: list[str] | None = None) -> list[InputSpec]:
    """Input specs read off the data, for models that do not record shapes; `names` are the model's inputs."""
    if names:
        arrays = _match(dataset, names)
        if arrays is None:
            raise _no_match(dataset, names, "data")
    else:
        arrays = dataset.inputs
    dtype = {np.dtype("float64"): "float32"}  # data files often hold float64; models take float32
    return [InputSpec(k, tuple(v.shape[1:]), dtype.get(v.dtype, str(v.dtype))) for k, v in arrays.items()]


_SHAPE = re.compile(r"^(?:(?P<name>[A-Za-z_][\w.:]*)=)?(?P<dims>\d+(?:[x,]\d+)*)$")


def parse_input_shape(text: str, default_name: str = "input") -> InputSpec:
    """`--input-shape 1,64` or `--input-shape x=1x1x8x8`: the first dimension is the (dynamic) batch."""
    match = _SHAPE.match(text.strip())
    if not match:
        raise UserError(f"--input-shape {text!r} is not understood; write e.g. 1,64 or input=1x1x8x8")
    dims = tuple(int(d) for d in re.split(r"[x,]", match["dims"]))
    if len(dims) < 2:
        raise UserError(f"--input-shape {text!r} needs a batch axis and at least one more, e.g. 1,64")
    return InputSpec(match["name"] or default_name, dims[1:])


def generated(specs: list[InputSpec], n: int, seed: int = 0) -> Dataset:
    """Inputs drawn from U[0, 1) when the user gave no data: enough to check output agreement."""
    rng = np.random.default_rng(seed)
    return Dataset({s.name: rng.random((n, *s.shape)).astype(s.dtype) for s in specs})
