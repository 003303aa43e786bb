"""Argparse helpers shared by the subcommands."""

from __future__ import annotations

import argparse


def add_command(subparsers, name: str, help: str, epilog: str) -> argparse.ArgumentParser:
    """A subcommand parser whose --help ends with worked examples, kept as written."""
    return subparsers.add_parser(
        name, help=help, description=help, epilog="examples:\n" + epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


DATA_FORMATS = ".npz, .csv or .parquet"


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """--inputs / --labels / --feature-columns: how to read data files when array and column names do not tell."""
    g = p.add_argument_group(
        "data files",
        "  .npz: labels are the array named y, label(s), target(s) or class (any case); a single other array\n"
        "  feeds a single-input model whatever its name. CSV/Parquet: the label column is named likewise (or\n"
        "  --label-column); the other columns, in file order (or --feature-columns), are the features.")
    g.add_argument("--inputs", action="append", metavar="INPUT=ARRAY",
                   help="feed model input INPUT from this array (.npz) or these comma-separated columns (CSV, "
                   "Parquet); repeatable")
    g.add_argument("--labels", "--label-column", dest="labels", metavar="NAME",
                   help="the array or column holding the labels (class indices)")
    g.add_argument("--feature-columns", metavar="A,B,C", help="CSV/Parquet: the feature columns, in this order")


def data_options(args):
    from optiserve.data import DataOptions

    return DataOptions.from_flags(args.inputs, args.labels, args.feature_columns)


def add_settings_arguments(p: argparse.ArgumentParser, repeats: int = 100, overrides_only: bool = False) -> None:
    """The flags of `RunSettings` that quantize, prune and sweep share: budget, measurement, loading, data files.
    `overrides_only` (sweep): an unset flag stays None, so a grid file's value stands."""
    def default(value):
        return None if overrides_only else value

    p.add_argument("--max-accuracy-drop", type=float, default=default(1.0),
                   help="budget in accuracy points (or %% relative output error without labels); default 1")
    p.add_argument("--input-shape", help="input shape with batch first, e.g. 1,64 or x=1x1x8x8")
    p.add_argument("--threads", type=int, default=default(1), help="threads for timing (one replica's share); "
                   "default 1")
    p.add_argument("--repeats", type=int, default=default(repeats),
                   help=f"timed runs per variant and batch size (default {repeats})")
    p.add_argument("--batch-size", type=int, default=default(32), metavar="N",
                   help="the batch size the choice optimises for (the model must beat the others there; at the "
                   "other sizes timed, 1 and 32, it must only not be slower); default 32")
    p.add_argument("--allow-pickle", action="store_true", default=default(False),
                   help="load a pickled nn.Module (runs code: trust it)")
    add_data_arguments(p)


def settings_from(args) -> dict:
    """The `RunSettings` fields those flags set (an unset overrides-only flag, or no data flag, sets nothing)."""
    data = data_options(args) if args.inputs or args.labels or args.feature_columns else None
    given = {"max_accuracy_drop": args.max_accuracy_drop, "threads": args.threads, "repeats": args.repeats,
             "input_shape": args.input_shape, "allow_pickle": args.allow_pickle, "data": data,
             "batch_size": args.batch_size}
    return {k: v for k, v in given.items() if v is not None}


def with_progress(work):
    """Run `work(progress)` under a one-line status spinner on stderr that `progress(message)` updates."""
    from optiserve.console import console

    with console(stderr=True).status("starting") as status:
        return work(lambda message: status.update(message))
