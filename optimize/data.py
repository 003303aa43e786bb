"""Data sets (`.npz` files of inputs and optional labels) and the input specs of a model.

An `.npz` holds one array per model input plus an optional `labels` array. A file with a single input
array may name it anything (`inputs` is what `optimize example` writes); it is matched to the model's
only input. Specs keep the batch axis dynamic (None); the other axes are fixed.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optimize._errors import UserError

LABELS = "labels"


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]  # without the batch axis
    dtype: str = "float32"


@dataclass(frozen=True)
class Dataset:
    inputs: dict[str, np.ndarray]  # name -> array with the batch axis first
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, n: int, start: int = 0) -> dict[str, np.ndarray]:
        return {k: v[start:start + n] for k, v in self.inputs.items()}

    def batches(self, size: int):
        for start in range(0, len(self), size):
            yield self.take(size, start)


def load_npz(path: Path, what: str = "data") -> Dataset:
    """Read a data set; every failure is a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(f"{what} file {path} is not a readable .npz of arrays ({exc})") from None
    labels = arrays.pop(LABELS, None)
    if not arrays:
        raise UserError(f"{what} file {path} has no input arrays (only {LABELS!r})")
    sizes = {len(a) if a.ndim else 0 for a in arrays.values()} | ({len(labels)} if labels is not None else set())
    if sizes == {0}:
        raise UserError(f"{what} file {path} is empty: it holds no samples")
    if len(sizes) != 1:
        raise UserError(f"{what} file {path} has arrays with different numbers of samples: {sorted(sizes)}")
    return Dataset(arrays, labels)


def bind(dataset: Dataset, specs: list[InputSpec], what: str = "data") -> Dataset:
    """Rename a data set's arrays to the model's input names and check their shapes."""
    arrays = dict(dataset.inputs)
    if len(specs) == 1 and len(arrays) == 1:
        arrays = {specs[0].name: next(iter(arrays.values()))}
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise UserError(
            f"{what} has arrays {sorted(arrays)} but the model needs inputs {[s.name for s in specs]}; "
            "name the .npz arrays after the model inputs"
        )
    bound = {}
    for spec in specs:
        array = arrays[spec.name]
        if tuple(array.shape[1:]) != spec.shape:
            raise UserError(
                f"{what} input {spec.name!r} has samples of shape {tuple(array.shape[1:])} but the model "
                f"expects {spec.shape}"
            )
        bound[spec.name] = np.ascontiguousarray(array, dtype=spec.dtype)
    return Dataset(bound, dataset.labels)


def specs_from_data(dataset: Dataset, names: list[str] | None = None) -> list[InputSpec]:
    arrays = list(dataset.inputs.items())
    if names and len(names) == len(arrays) == 1:
        arrays = [(names[0], arrays[0][1])]
    dtype = {np.dtype("float64"): "float32"}  # data files often hold float64; models take float32
    return [InputSpec(k, tuple(v.shape[1:]), dtype.get(v.dtype, str(v.dtype))) for k, v in arrays]


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
