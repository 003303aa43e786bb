"""Reading one input shard as a stream of column batches. Pure (pyarrow and numpy; no Ray).

`read_batches(file, rows)` yields `{column: numpy array}` of at most `rows` rows, in file order, each with the
file's path in `path`, so `predict_batch` sees the same batches whatever
the format. Parquet is read by record batch (only the shard's row groups) and CSV by block: bounded memory
however large the file. An .npy is memory-mapped; an .npz is loaded whole (a zip member cannot be streamed).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from optiserve.errors import UserError
from serve.batch._plan import InputFile
from serve.batch._predict import PATH

CSV_BLOCK_BYTES = 4 << 20


def _numpy(column) -> np.ndarray:
    """One Arrow column as numpy: fixed-size lists as a 2-D array, lists as an object array of arrays."""
    import pyarrow as pa

    if pa.types.is_fixed_size_list(column.type) and column.null_count == 0:
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
    return column.to_numpy(zero_copy_only=False)


def _tables(file: InputFile, rows: int):
    import pyarrow as pa

    if file.format == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetFile(file.path) as parquet:
            groups = list(range(*file.row_groups)) if file.row_groups else None
            yield from parquet.iter_batches(batch_size=rows, row_groups=groups, use_threads=False)
        return
    import pyarrow.csv as pcsv

    read = pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False,
                            column_names=None if file.header else [f"f{i}" for i in range(file.ncols)])
    with pa.input_stream(file.path, compression="detect") as stream:
        yield from pcsv.open_csv(stream, read_options=read, parse_options=pcsv.ParseOptions(delimiter=file.delimiter))


def _arrays(file: InputFile) -> dict[str, np.ndarray]:
    loaded = np.load(file.path, mmap_mode="r" if file.format == "npy" else None, allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        return {"data": loaded if loaded.ndim else loaded.reshape(1)}
    with loaded as npz:
        arrays = {k: npz[k] for k in npz.files}
    lengths = {len(a) for a in arrays.values() if a.ndim}
    if len(lengths) != 1:
        raise UserError(f"{file.path} holds arrays with different numbers of rows ({sorted(lengths)}); every array "
                        "of an .npz must have one entry per row")
    return arrays


def read_batches(file: InputFile, rows: int) -> Iterator[dict[str, np.ndarray]]:
    """The file's rows in order, at most `rows` per batch, as numpy columns plus `path`."""
    if file.format in ("npy", "npz"):
        arrays = _arrays(file)
        n = len(next(iter(arrays.values())))
        for start in range(0, n, rows):
            batch = {k: np.asarray(a[start:start + rows]) for k, a in arrays.items()}
            batch[PATH] = np.full(len(next(iter(batch.values()))), file.path, dtype=object)
            yield batch
        return
    for table in _tables(file, rows):
        for start in range(0, table.num_rows, rows):
            part = table.slice(start, rows)
            batch = {name: _numpy(part.column(i)) for i, name in enumerate(part.schema.names)}
            batch[PATH] = np.full(part.num_rows, file.path, dtype=object)
            yield batch
