"""The Ray edge of batch inference: a pool of actors, each scoring whole input files into their shards.

    actors = [_ShardScorer(num_cpus=threads, num_gpus=...) x pool size]
    each actor, once ready, is handed one pending file; its marker comes back; it is handed the next

Each actor holds one onnxruntime session, verified and warmed up once (serve._session.load), and scores a file
from end to end (`_shards.score_file`): it reads it in batches, predicts, writes the shard and commits it with
its marker. Rows never leave the process that reads them, and a file scored by one process needs no ordering to
be exact. The pool is plain Ray actors rather than Ray Data's `map_batches` over the file list, which this module
used before: with the same actor code, Ray Data's executor (its start, its stats actors, its scheduling loop on the
driver) held a run to 0.80x of a plain onnxruntime loop on a 2-core machine where plain actors reach ~0.9x
(BENCHMARKS.md); Ray Data's readers were not used anyway, since an actor reads its own file. Everything that is
not Ray lives in the pure modules beside this one.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path

from optiserve.errors import UserError
from optiserve.repository import list_models, list_versions, verify
from serve.batch._plan import InputFile, Marker, discover, plan, prepare
from serve.batch._predict import Binding, binding_for
from serve.batch._shards import REJECTS_FILE, merge_rejects, score_file, too_many_rejects
from serve.batch.config import BatchConfig
from serve.batch.summary import SUMMARY_FILE, BatchSummary, build

KILL_AFTER_ROWS_ENV = "OPTISERVE_BATCH_KILL_AFTER_ROWS"  # fault injection for tests: SIGKILL the run after N rows
KILL_ACTOR_AFTER_ROWS_ENV = "OPTISERVE_BATCH_KILL_ACTOR_AFTER_ROWS"  # tests: SIGKILL one actor once, after N rows
KILLED_ONCE = ".actor-killed"  # in the output folder: the actor kill above happened
RESTARTS = 2  # actors that die midway are replaced (their file redone) this many times before the run fails


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


class _ShardScorer:
    """One pool actor: one verified, warmed-up onnxruntime session; scores whole files into their shards."""

    def __init__(self, repository: str, model: str, version: str, device: str, threads: int, binding: Binding,
                 out: str, model_sha256: str, batch_rows: int, max_rejects: int, kill_after_rows: int = 0,
                 kill_pid: int = 0, kill_actor_after_rows: int = 0) -> None:
        from serve._session import load

        threads = min(threads, os.cpu_count() or threads)  # Ray's logical CPUs may outnumber the machine's cores
        _, self.session = load(Path(repository), model, version, device=device, threads=threads)
        self.binding, self.out, self.sha = binding, Path(out), model_sha256
        self.batch_rows, self.max_rejects = batch_rows, max_rejects
        self.names = [o.name for o in binding.outputs]
        self.kill_after, self.kill_pid, self.rows = kill_after_rows, kill_pid, 0
        self.kill_actor_after = kill_actor_after_rows

    def _run(self, feeds):
        return self.session.run(self.names, feeds)

    def _after_batch(self, rows_in_file: int) -> None:
        if self.kill_after and self.rows + rows_in_file >= self.kill_after:  # fault injection: the run dies here
            os.kill(self.kill_pid, signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)
        if self.kill_actor_after and self.rows + rows_in_file >= self.kill_actor_after:  # the actor alone, once
            try:
                (self.out / KILLED_ONCE).open("x").close()
            except FileExistsError:
                return
            os.kill(os.getpid(), signal.SIGKILL)

    def ready(self) -> None:
        """Returns once the constructor has run: the session is loaded and warmed up."""

    def score(self, spec: str) -> str:
        """Score one file (an InputFile as JSON) into its shard; its marker, as JSON."""
        marker = score_file(InputFile(**json.loads(spec)), self.out, self.sha, self.binding, self._run,
                            self.batch_rows, self.max_rejects, self._after_batch)
        self.rows += marker.rows
        return marker.to_json()


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
    free = ray.available_resources()
    return {"nodes": len(nodes), "cpus": sum(n.get("CPU", 0) for n in nodes),
            "gpus": sum(n.get("GPU", 0) for n in nodes),
            "max_node_cpus": max((n.get("CPU", 0) for n in nodes), default=0),
            "max_node_gpus": max((n.get("GPU", 0) for n in nodes), default=0),
            "node_cpus": [n.get("CPU", 0) for n in nodes], "node_gpus": [n.get("GPU", 0) for n in nodes],
            "free_cpus": free.get("CPU", 0), "free_gpus": free.get("GPU", 0)}


class ClusterBusy(UserError):
    """Too few CPUs (or GPUs) are free now for --min-actors actors (the cluster could host them)."""


# Ray returns a killed actor's CPUs only once its process has exited: a run that starts right after another ended
# (or after a test's) can find them still held for a moment, so a busy cluster is asked again for this long.
BUSY_WAIT_S = 10.0


def sized_pool(config: BatchConfig, wait_s: float = BUSY_WAIT_S) -> tuple[dict, tuple[int, int, int]]:
    """The cluster's resources and `check_resources`'s pool, asking again for up to `wait_s` while it is busy."""
    deadline = time.monotonic() + wait_s
    while True:
        cluster = cluster_resources()
        try:
            return cluster, check_resources(config, cluster)
        except ClusterBusy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def check_resources(config: BatchConfig, cluster: dict) -> tuple[int, int, int]:
    """(min actors, max actors, CPUs reserved per actor); a UserError when no node can host even one, or too few
    are free now. Pure.

    By default an actor takes a node's CPUs (the smallest CPU node's, at most what is free): one onnxruntime
    session using every core of a node scores faster than several single-threaded ones, which each pay their
    own process start and memory (BENCHMARKS.md), and the files are spread over one actor per node. The pool
    is sized from what is free when the run starts, not from the totals: CPUs held by other work (a job's own
    entrypoint, another run) would otherwise leave it waiting for ever for actors that cannot be placed."""
    gpus = config.gpus_per_actor
    if gpus > 0:
        if cluster["gpus"] == 0:
            raise UserError(f"--gpus-per-actor {gpus:g} asks for GPU actors, but the Ray cluster has no GPUs "
                            f"({cluster['nodes']} node(s), CPUs only); drop --gpus-per-actor to run on CPUs, or "
                            "give --address of a cluster with GPU nodes")
        if cluster["max_node_gpus"] < gpus:
            raise UserError(f"--gpus-per-actor {gpus:g} is more than any node has (at most "
                            f"{cluster['max_node_gpus']:g} GPU(s) per node); ask for fewer GPUs per actor")
    node_cpus = [c for c in cluster["node_cpus"] if c > 0]
    if config.threads_per_actor is not None:
        cpus = config.threads_per_actor
        if cluster["max_node_cpus"] < cpus:
            raise UserError(f"--threads-per-actor {cpus} reserves more CPUs than any node has (at most "
                            f"{cluster['max_node_cpus']:g}); use fewer threads per actor")
    else:
        cpus = 1 if gpus > 0 else max(1, int(min(min(node_cpus, default=1), cluster["free_cpus"])))
    fit = min(sum(int(c // cpus) for c in node_cpus), int(cluster["free_cpus"] // cpus))
    if gpus > 0:
        fit = min(fit, int(cluster["free_gpus"] // gpus))
    if fit < config.min_actors:
        what = f"{cpus} CPU(s)" + (f" and {gpus:g} GPU(s)" if gpus else "")
        raise ClusterBusy(f"--min-actors {config.min_actors} needs {config.min_actors} actor(s) of {what}, but the "
                        f"cluster has room for {fit} now ({cluster['free_cpus']:g} of {cluster['cpus']:g} CPUs "
                        f"free); lower --min-actors or --threads-per-actor, or wait for other work to finish")
    return config.min_actors, max(config.min_actors, min(config.max_actors or fit, fit)), cpus


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
    before = plan(files, out, manifest.sha256)
    log(f"batch: {config.model} version {version}: {len(files)} shard(s), {len(before.complete)} already "
        f"complete, {len(before.pending)} to score -> {out}")
    cluster: dict = {}
    error: BaseException | None = None
    if before.pending:
        prepare(out, before.pending, keep={f.shard_id for f, _ in before.complete})
        owned = _connect(config.address)
        try:
            cluster, pool = sized_pool(config)
            cluster["pool"] = dict(zip(("min_actors", "max_actors", "cpus_per_actor"), pool, strict=True))
            log(f"batch: {pool[1]} actor(s) at most, {pool[2]} CPU(s) each, over {cluster['nodes']} node(s)")
            _stream(config, binding, version, manifest.sha256, before, pool, log)
        except BaseException as exc:  # noqa: BLE001 - recorded in the summary, then raised as one sentence
            error = exc
        finally:
            if owned:
                import ray

                ray.shutdown()
    after = plan(files, out, manifest.sha256)  # what is committed on disk, whatever happened
    done_before = {f.shard_id for f, _ in before.complete}  # shard ids: a split file's parts share its path
    new = [m for f, m in after.complete if f.shard_id not in done_before]
    failures: list[str] = []
    if error is not None:
        user = error if isinstance(error, UserError) else _user_error(error)
        failures.append(str(user) if user else _reason(error))
    summary = build(
        model=config.model, version=version, model_sha256=manifest.sha256, output=str(out), shards=len(files),
        markers=[m for _, m in after.complete], skipped=len(before.complete), written=len(new),
        rows_this_run=sum(m.rows for m in new), elapsed_s=time.monotonic() - started, failures=failures,
        config={k: v for k, v in json.loads(config.to_json()).items() if k != "extra"}, cluster=cluster,
    )
    merge_rejects(out, files)
    (out / SUMMARY_FILE).write_text(summary.to_json())
    if error is not None:
        if isinstance(error, KeyboardInterrupt):
            raise error
        if isinstance(error, UserError) or _user_error(error):
            raise UserError(failures[0]) from None
        raise UserError(f"the batch run failed: {failures[0][:400]}; {len(after.complete)} of {len(files)} shard(s) "
                        "are complete and kept: rerun the same command to resume") from error
    log(f"batch: {summary.line()}")
    log(f"batch: shards in {out / 'shards'}, rejects in {out / REJECTS_FILE}, summary in {out / SUMMARY_FILE}")
    return summary


def _stream(config: BatchConfig, binding: Binding, version: str, model_sha256: str, the_plan,
            pool: tuple[int, int, int], log) -> None:
    """Score the pending files on the actor pool; log each shard as its marker arrives; stop past --max-rejects.

    Each actor is handed one file as soon as it is ready and the next when it commits one, so a fast node takes
    more files and an actor that cannot be placed takes none."""
    import ray

    pending, total = list(the_plan.pending), len(the_plan.pending)
    rejected = sum(m.rejected for _, m in the_plan.complete)
    reasons = [r for _, m in the_plan.complete for r in m.reasons]
    scorer = ray.remote(_ShardScorer).options(num_cpus=pool[2], num_gpus=config.gpus_per_actor or 0)
    kwargs = {"repository": str(Path(config.repository).resolve()), "model": config.model, "version": version,
              "device": config.device, "threads": pool[2], "binding": binding,
              "out": str(Path(config.output).resolve()), "model_sha256": model_sha256,
              "batch_rows": config.batch_size, "max_rejects": config.max_rejects,
              "kill_after_rows": int(os.environ.get(KILL_AFTER_ROWS_ENV, "0") or 0), "kill_pid": os.getpid(),
              "kill_actor_after_rows": int(os.environ.get(KILL_ACTOR_AFTER_ROWS_ENV, "0") or 0)}
    actors = [scorer.remote(**kwargs) for _ in range(min(pool[1], len(pending)))]
    waiting = {actor.ready.remote(): (actor, None) for actor in actors}  # ref -> (actor, the file it scores)
    started, rows, done, restarts = time.monotonic(), 0, 0, 0
    try:
        while waiting:
            [ref], _ = ray.wait(list(waiting), num_returns=1)
            actor, file = waiting.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError:
                if file is None or restarts == RESTARTS:  # a constructor that fails fails again
                    raise
                # the actor died midway (killed, out of memory, its node lost): a new one scores the file again
                restarts += 1
                log(f"batch: the actor scoring {Path(file.path).name} died; starting another and scoring the file "
                    f"again (restart {restarts} of {RESTARTS})")
                pending.insert(0, file)
                actors[actors.index(actor)] = actor = scorer.remote(**kwargs)
                waiting[actor.ready.remote()] = (actor, None)
                continue
            if result is not None:
                marker = Marker(**json.loads(result))
                done, rows = done + 1, rows + marker.rows
                if config.progress:
                    log(f"batch: shard {done}/{total} done: {marker.rows:,} rows, {marker.rejected} rejected "
                        f"({Path(marker.input).name}); {rows / (time.monotonic() - started):,.0f} rows/s so far")
                rejected += marker.rejected
                reasons += marker.reasons
                if rejected > config.max_rejects:
                    raise too_many_rejects(rejected, config.max_rejects, reasons)
            if pending:
                file = pending.pop(0)
                waiting[actor.score.remote(json.dumps(asdict(file)))] = (actor, file)
            else:
                ray.kill(actor)  # nothing left for it: its CPUs go back to the cluster while the others finish
    finally:
        for actor in actors:
            ray.kill(actor)
