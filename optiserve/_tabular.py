"""CSV and Parquet files as model data: feature columns -> one float32 matrix per model input, a label column.

Read with pyarrow (`pyarrow.csv`, `pyarrow.parquet`). Without `--inputs`, the feature columns (all but the
label column, in file order, or `--feature-columns`) form one matrix called `features`, which a single-input
model takes whatever its input is named. With `--inputs NAME=COL,COL`, each model input gets its own columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from optiserve.errors import UserError

FEATURES = "features"  # the name of the feature matrix when --inputs does not split the columns
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")


def read_table(path: Path, what: str):
    """The whole file as a pyarrow Table; any reading failure is a UserError naming the file."""
    import pyarrow as pa

    name = path.name.lower()
    try:
        if name.endswith(PARQUET_SUFFIXES) or _is_parquet(path):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        import pyarrow.csv as pcsv

        parse = pcsv.ParseOptions(delimiter="\t" if name.endswith((".tsv", ".tsv.gz")) else ",")
        table = pcsv.read_csv(path, parse_options=parse)
        if all(_is_number(c) for c in table.column_names):  # no header row: columns are named f0, f1, ...
            table = pcsv.read_csv(path, parse_options=parse, read_options=pcsv.ReadOptions(
                column_names=[f"f{i}" for i in range(table.num_columns)]))
        return table
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"{what} file {path} is not a readable table ({str(exc).splitlines()[0]})") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_parquet(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PAR1"


def _column(table, name: str, path: Path, what: str, numeric: bool = True) -> np.ndarray:
    import pyarrow as pa

    col = table.column(name)
    if col.null_count:
        raise UserError(f"{what} file {path} has {col.null_count} missing value(s) in column {name!r}; fill or "
                        "drop them first")
    if not numeric:
        return col.to_numpy(zero_copy_only=False)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)):
        raise UserError(f"{what} file {path} has column {name!r} of type {col.type}, not numbers; leave it out "
                        "with --feature-columns or encode it as numbers")
    return col.to_numpy()


def _matrix(table, columns: list[str], path: Path, what: str) -> np.ndarray:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise UserError(f"{what} file {path} has no column(s) {missing}; its columns are {_names(table.column_names)}")
    if not columns:
        raise UserError(f"{what} file {path} has no feature columns (only {_names(table.column_names)})")
    return np.stack([_column(table, c, path, what).astype(np.float32) for c in columns], axis=1)


def _names(columns: list[str], limit: int = 12) -> str:
    if len(columns) <= limit:
        return ", ".join(columns)
    return f"{', '.join(columns[:limit - 2])}, ..., {', '.join(columns[-2:])} ({len(columns)} columns)"


def load_table(path: Path, what: str, options, label_names: tuple[str, ...]):
    """(inputs, labels, description of what was found) from a CSV or Parquet file and the DataOptions."""
    table = read_table(path, what)
    columns = list(table.column_names)
    if table.num_rows == 0:
        raise UserError(f"{what} file {path} is empty: it holds no rows")
    explicit = {c.strip() for _, spec in options.inputs for c in spec.split(",")} | set(options.feature_columns)
    if options.labels is not None:
        label = options.labels if options.labels in columns else None  # absent: this file is unlabelled
    else:
        guesses = [c for c in columns if c.lower() in label_names and c not in explicit]
        if len(guesses) > 1:
            raise UserError(f"{what} file {path} has several label-like columns {guesses}; say which one holds "
                            "the labels with --label-column NAME")
        label = guesses[0] if guesses else None
    if options.inputs:
        inputs = {name: _matrix(table, [c.strip() for c in spec.split(",")], path, what)
                  for name, spec in options.inputs}
        found = "; ".join(f"columns {spec} for {name!r}" for name, spec in options.inputs)
    else:
        features = list(options.feature_columns) or [c for c in columns if c != label]
        inputs = {FEATURES: _matrix(table, features, path, what)}
        found = f"{len(features)} feature column(s) {_names(features)}"
    found += f" and label column {label!r}" if label else " and no label column"
    labels = _column(table, label, path, what, numeric=False) if label else None
    return inputs, labels, found
