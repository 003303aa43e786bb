"""The Ray Data edge of batch inference: read the pending shards, predict on an actor pool, write in order.

    read_parquet / read_csv / read_numpy / read_binary_files(.npz) (include_paths)
      -> map_batches(_Predictor, compute=ActorPoolStrategy(min_size, max_size), num_cpus=threads, num_gpus=...)
      -> iter_batches on this driver, order preserved -> one ShardWriter per input file -> commit + marker

Each actor holds one onnxruntime session, verified and warmed up once (serve._session.load). Order is preserved
(`DataContext.execution_options.preserve_order`), so rows reach the driver file after file and in file order:
the driver numbers them, and a shard is committed as soon as the next file's rows begin. Everything that is
not Ray lives in the pure modules beside this one.
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

import numpy as np

from optiserve.errors import UserError
from optiserve.repository import list_models, list_versions, verify
from serve.batch._plan import (
    InputFile,
    discover,
    expected_rows,
    plan,
    prepare,
)
from serve.batch._predict import PATH, Binding, binding_for, predict_batch
from serve.batch._shards import REJECTS_FILE, ShardWriter, merge_rejects, split_runs
from serve.batch.config import BatchConfig
from serve.batch.summary import SUMMARY_FILE, BatchSummary, build

READ_CPUS = 0  # see _read
KILL_AFTER_ROWS_ENV = "OPTISERVE_BATCH_KILL_AFTER_ROWS"  # fault injection for tests: SIGKILL self after N rows


def resolve_version(repository: Path, model: str, version: str | None) -> str:
    versions = list_versions(repository, model)
    if not versions:
        known = ", ".join(list_models(repository)) or "no models"
        raise UserError(f"model {model!r} is not in repository {repository} (it holds {known}); check --model "
                        "and --repository, or publish it with `optimize quantize MODEL --publish REPO --name NAME`")
    if version is None:
        return versions[-1]
    if str(version) not in versions:
        raise UserError(f"model {model!r} has no version {version} in {repository} (versions: "
                        f"{', '.join(versions)}); leave --version out for the newest")
    return str(version)


class _Predictor:
    """One map_batches actor: one verified, warmed-up onnxruntime session."""

    def __init__(self, repository: str, model: str, version: str, device: str, threads: int,
                 binding: Binding) -> None:
        from serve._session import load

        _, self.session = load(Path(repository), model, version, device=device, threads=threads)
        self.binding = binding
        self.names = [o.name for o in binding.outputs]

    def __call__(self, batch: dict[str, np.ndarray]):
        return predict_batch(batch, self.binding, lambda feeds: self.session.run(self.names, feeds))


def _decode_arrays(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """read_binary_files rows (one file per call) -> an .npz's arrays (an .npy's as `data`) as columns, + `path`."""
    out: dict[str, list[np.ndarray]] = {}
    for data, path in zip(batch["bytes"], batch[PATH], strict=True):
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            arrays = {"data": loaded}
        else:
            with loaded as npz:
                arrays = {k: npz[k] for k in npz.files}
        n = {len(a) for a in arrays.values() if a.ndim}
        if len(n) != 1:
            raise UserError(f"{path} holds arrays with different numbers of rows ({sorted(n)}); every array of an "
                            ".npz must have one entry per row")
        arrays[PATH] = np.full(n.pop(), path, dtype=object)
        for k, v in arrays.items():
            out.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in out.items()}


def _groups(files: list[InputFile]) -> list[list[InputFile]]:
    """Files read by one Ray Data reader call: same format and columns (a batch may span files), input order."""
    groups: dict[tuple, list[InputFile]] = {}
    for f in files:
        key = (f.format, f.delimiter, f.header, f.columns)  # one schema per read: batches never mix layouts
        groups.setdefault(key, []).append(f)
    return list(groups.values())


def _read(group: list[InputFile]):
    """One Ray Data read of same-layout files. Reading reserves no CPUs: the actors hold every CPU the pool may
    take, and a read task that waited for one would wait for ever on a cluster the pool fills (e.g. 1 CPU)."""
    import ray.data

    paths = [f.path for f in group]
    first = group[0]
    free = {"num_cpus": READ_CPUS}
    if first.format == "parquet":
        return ray.data.read_parquet(paths, include_paths=True, **free)
    if first.format in ("npz", "npy"):  # whole files (no streaming format); read_numpy takes no ray_remote_args
        return ray.data.read_binary_files(paths, include_paths=True, **free).map_batches(
            _decode_arrays, batch_size=1, batch_format="numpy", num_cpus=READ_CPUS)
    import pyarrow.csv as pcsv

    kwargs = {"parse_options": pcsv.ParseOptions(delimiter=first.delimiter)}
    if not first.header:
        kwargs["read_options"] = pcsv.ReadOptions(column_names=[f"f{i}" for i in range(first.ncols)])
    return ray.data.read_csv(paths, include_paths=True, **free, **kwargs)


def _connect(address: str | None) -> bool:
    """Join --address / RAY_ADDRESS, or start a local Ray for this command. True when we started it."""
    import ray

    from optiserve.ray_cluster import use_token_auth_if_available

    if ray.is_initialized():
        return False
    use_token_auth_if_available()
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        else:
            # "local": a Ray of our own for this command, even where a `ray start` head runs (ray.init() would join it)
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"cannot connect to the Ray cluster at {address}: {str(exc).splitlines()[0]}; check "
                        "--address / RAY_ADDRESS") from None
    return True


def cluster_resources() -> dict:
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    return {"nodes": len(nodes), "cpus": sum(n.get("CPU", 0) for n in nodes),
            "gpus": sum(n.get("GPU", 0) for n in nodes),
            "max_node_cpus": max((n.get("CPU", 0) for n in nodes), default=0),
            "max_node_gpus": max((n.get("GPU", 0) for n in nodes), default=0)}


def check_resources(config: BatchConfig, cluster: dict) -> tuple[int, int, float]:
    """(min actors, max actors, CPUs reserved per actor); a UserError when no node can host even one. Pure.

    One CPU of the cluster always stays unreserved: Ray Data's file listing and read tasks need one, and a pool
    holding every CPU would leave them waiting for ever. Actors then reserve less than their threads (sharing
    cores with reading) where the pool would otherwise take that last CPU."""
    if config.gpus_per_actor > 0:
        if cluster["gpus"] == 0:
            raise UserError(f"--gpus-per-actor {config.gpus_per_actor:g} asks for GPU actors, but the Ray cluster "
                            f"has no GPUs ({cluster['nodes']} node(s), CPUs only); drop --gpus-per-actor to run on "
                            "CPUs, or give --address of a cluster with GPU nodes")
        if cluster["max_node_gpus"] < config.gpus_per_actor:
            raise UserError(f"--gpus-per-actor {config.gpus_per_actor:g} is more than any node has (at most "
                            f"{cluster['max_node_gpus']:g} GPU(s) per node); ask for fewer GPUs per actor")
        fit = int(cluster["gpus"] // config.gpus_per_actor)
    else:
        if cluster["max_node_cpus"] < config.threads_per_actor:
            raise UserError(f"--threads-per-actor {config.threads_per_actor} reserves more CPUs than any node has "
                            f"(at most {cluster['max_node_cpus']:g}); use fewer threads per actor")
        fit = int(cluster["cpus"] // config.threads_per_actor)
    top = config.max_actors or max(1, fit)
    if config.min_actors > fit:
        raise UserError(f"--min-actors {config.min_actors} needs more than the cluster has: it can host {fit} "
                        f"actor(s) of {config.threads_per_actor} CPU(s)"
                        + (f" and {config.gpus_per_actor:g} GPU(s)" if config.gpus_per_actor else "")
                        + "; lower --min-actors")
    top = max(config.min_actors, top)
    per_actor = min(float(config.threads_per_actor), max(0.0, cluster["cpus"] - 1) / top)
    return config.min_actors, top, round(per_actor, 3)


def _user_error(exc: BaseException) -> UserError | None:
    """A UserError raised inside an actor or task reaches us wrapped by Ray, as the text of its traceback."""
    import re

    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, UserError):
            return e
        stack += [e.__cause__, e.__context__, getattr(e, "cause", None)]
        if hasattr(e, "as_instanceof_cause"):
            try:
                stack.append(e.as_instanceof_cause())
            except Exception:  # noqa: BLE001
                pass
    for e in seen_errors(exc):
        found = re.findall(r"(?:optimize\._errors|optiserve\.errors)\.UserError: (.+)", str(e))
        if found:
            return UserError(found[-1].strip())
    return None


def _reason(exc: BaseException) -> str:
    """The innermost 'SomeError: message' line of a (Ray-wrapped) exception, for a one-sentence report."""
    import re

    for e in reversed(seen_errors(exc)):
        found = re.findall(r"^\s*([\w.]*(?:Error|Exception)): (.+)$", str(e), flags=re.M)
        if found:
            return f"{found[-1][0].rsplit('.', 1)[-1]}: {found[-1][1].strip()}"
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def seen_errors(exc: BaseException) -> list[BaseException]:
    chain, e = [], exc
    while e is not None and e not in chain and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or getattr(e, "cause", None)
    return chain


class _Driver:
    """Consumes the ordered stream of predicted rows and turns it into committed shards."""

    def __init__(self, config: BatchConfig, out: Path, pending: list[InputFile], model_sha256: str,
                 rejected_before: int, log, output_columns: tuple[str, ...] = ()) -> None:
        self.config, self.out, self.sha, self.log = config, out, model_sha256, log
        self.output_columns = output_columns
        self.by_path = {f.path: f for f in pending}
        self.done: dict[str, object] = {}
        self.writer: ShardWriter | None = None
        self.rejected = rejected_before
        self.rows = 0
        self.first_reasons: list[str] = []
        self.kill_after = int(os.environ.get(KILL_AFTER_ROWS_ENV, "0") or 0)
        self.total = len(pending)

    def feed(self, table) -> None:
        for source, rows in split_runs(table):
            if self.writer is None or self.writer.file.path != source:
                self.finish()
                file = self.by_path.get(os.path.abspath(source))
                if file is None or file.path in self.done:
                    raise RuntimeError(f"rows of {source} arrived out of order; not writing a shard from them")
                self.writer = ShardWriter(self.out, file, self.sha, self.output_columns)
            rejected = self.writer.write(rows)
            self.rows += rows.num_rows
            if rejected:
                self.rejected += rejected
                if len(self.first_reasons) < 3:
                    reasons = rows.column("_reject").to_pylist()
                    self.first_reasons += [r for r in reasons if r][: 3 - len(self.first_reasons)]
                if self.rejected > self.config.max_rejects:
                    raise UserError(
                        f"{self.rejected} rows were rejected, more than --max-rejects {self.config.max_rejects} "
                        f"(first reasons: {'; '.join(self.first_reasons)}); fix the data, choose --nan, or raise "
                        "--max-rejects (completed shards are kept: rerun to resume)")
            if self.kill_after and self.rows >= self.kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    def finish(self, file: InputFile | None = None) -> None:
        writer = self.writer
        if writer is None and file is None:
            return
        if writer is None:
            writer = ShardWriter(self.out, file, self.sha, self.output_columns)
        expected = expected_rows(writer.file)
        if expected is not None and expected != writer.rows:
            writer.abort()
            raise RuntimeError(f"{writer.file.path} holds {expected} rows but {writer.rows} came back; the shard "
                               "is not marked complete")
        marker = writer.commit()
        self.done[writer.file.path] = marker
        self.writer = None
        self.log(f"batch: shard {len(self.done)}/{self.total} done: {marker.rows:,} rows, {marker.rejected} "
                 f"rejected ({writer.file.name})")

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


def run_batch(config: BatchConfig, log=print) -> BatchSummary:
    """Score every input row with the model; resumable (see the package docstring). Returns the summary."""
    started = time.monotonic()
    repository = Path(config.repository)
    version = resolve_version(repository, config.model, config.version)
    manifest = verify(repository, config.model, version)
    binding = binding_for(manifest, key_columns=config.key_columns, feature_columns=config.feature_columns,
                          input_map=config.input_map, label_column=config.label_column, nan=config.nan)
    files = discover(config.inputs)
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    the_plan = plan(files, out, manifest.sha256)
    log(f"batch: {config.model} version {version}: {len(files)} shard(s), {len(the_plan.complete)} already "
        f"complete, {len(the_plan.pending)} to score -> {out}")
    markers = {f.path: m for f, m in the_plan.complete}
    failures: list[str] = []
    cluster: dict = {}
    driver = None
    error: BaseException | None = None
    if the_plan.pending:
        prepare(out, the_plan.pending)
        owned = _connect(config.address)
        try:
            cluster = cluster_resources()
            min_actors, max_actors, actor_cpus = check_resources(config, cluster)
            driver = _Driver(config, out, the_plan.pending, manifest.sha256,
                             sum(m.rejected for m in markers.values()), log, tuple(o.name for o in binding.outputs))
            _stream(config, binding, version, the_plan.pending, driver, min_actors, max_actors, actor_cpus)
        except BaseException as exc:  # noqa: BLE001 - recorded in the summary, then raised as one sentence
            error = exc
            if driver is not None:
                driver.abort()
        finally:
            if owned:
                import ray

                ray.shutdown()
        if driver is not None:
            markers.update(driver.done)
    if error is not None:
        user = error if isinstance(error, UserError) else _user_error(error)
        failures.append(str(user) if user else _reason(error))
    summary = build(
        model=config.model, version=version, model_sha256=manifest.sha256, output=str(out), shards=len(files),
        markers=list(markers.values()), skipped=len(the_plan.complete), written=len(driver.done) if driver else 0,
        rows_this_run=driver.rows if driver else 0, elapsed_s=time.monotonic() - started, failures=failures,
        config={k: v for k, v in json.loads(config.to_json()).items() if k != "extra"}, cluster=cluster,
    )
    merge_rejects(out, files)
    (out / SUMMARY_FILE).write_text(summary.to_json())
    if error is not None:
        if isinstance(error, KeyboardInterrupt):
            raise error
        if isinstance(error, UserError) or _user_error(error):
            raise UserError(failures[0]) from None
        raise UserError(f"the batch run failed: {failures[0][:400]}; {len(markers)} of {len(files)} shard(s) "
                        "are complete and kept: rerun the same command to resume") from error
    log(f"batch: {summary.line()}")
    log(f"batch: shards in {out / 'shards'}, rejects in {out / REJECTS_FILE}, summary in {out / SUMMARY_FILE}")
    return summary


def _stream(config: BatchConfig, binding: Binding, version: str, pending: list[InputFile], driver: _Driver,
            min_actors: int, max_actors: int, actor_cpus: float) -> None:
    import logging

    import ray.data

    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars)
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    data_logger.setLevel(logging.CRITICAL)  # its logged stack traces: the failure is reported in one sentence
    context.execution_options.preserve_order = True
    context.enable_progress_bars = config.progress
    try:
        for group in _groups(pending):
            dataset = _read(group).map_batches(
                _Predictor, batch_size=config.batch_size, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(min_size=min_actors, max_size=max_actors),
                num_cpus=actor_cpus, num_gpus=config.gpus_per_actor or None,
                fn_constructor_kwargs={"repository": str(Path(config.repository).resolve()), "model": config.model,
                                       "version": version, "device": config.device,
                                       "threads": config.threads_per_actor, "binding": binding},
            )
            for table in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
                driver.feed(table)
            driver.finish()
            for file in group:  # files that produced no rows (empty tables) still get their (empty) shard
                if file.path not in driver.done:
                    driver.finish(file)
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        data_logger.setLevel(level)
