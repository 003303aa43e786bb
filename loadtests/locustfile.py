"""Locust load against a model served over the Open Inference Protocol, following an autoscale/ trace.

Works on its own with plain Locust:

    locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8000 \\
        --model digits-mlp --trace diurnal --trace-duration 300 --trace-params '{"peak_rps": 40}'

(every option also reads an environment variable: LOADTEST_MODEL, LOADTEST_TRACE, ...). `loadtest run`
launches it the same way in a subprocess, with `--trace-file` (the exact rate table the simulator uses),
`--bodies` (request bodies built from the manifest) and `--record` (a CSV of every request).

Open loop: a fixed pool of users each draws Poisson arrivals at rate(t) / users (by thinning), so the offered rate
follows the trace whatever the latency (as long as the pool is large enough: --users-per-rps), instead
of users waiting on each other's responses. The test stops when the trace ends.
"""

from __future__ import annotations

import json
import math
import random
import time
import urllib.request

from locust import FastHttpUser, LoadTestShape, constant, events, task

from loadtests.bodies import make_bodies
from loadtests.shapes import build_trace, read_trace

_state: dict = {"trace": None, "bodies": [], "record": None, "window": [], "stop": False}


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    g = parser.add_argument_group("optiserve load test")
    g.add_argument("--model", env_var="LOADTEST_MODEL", default="", help="model name (/v2/models/NAME/infer)")
    g.add_argument("--model-version", env_var="LOADTEST_MODEL_VERSION", default="", help="model version (optional)")
    g.add_argument("--trace", env_var="LOADTEST_TRACE", default="constant",
                   help="constant, step, spike, ramp, diurnal, bursty or replay")
    g.add_argument("--trace-duration", env_var="LOADTEST_TRACE_DURATION", type=float, default=60.0,
                   help="seconds the trace lasts (the test stops then)")
    g.add_argument("--trace-params", env_var="LOADTEST_TRACE_PARAMS", default="{}",
                   help='JSON trace parameters, e.g. {"peak_rps": 40}')
    g.add_argument("--trace-csv", env_var="LOADTEST_TRACE_CSV", default="", help="CSV to replay (--trace replay)")
    g.add_argument("--trace-file", env_var="LOADTEST_TRACE_FILE", default="",
                   help="JSON rate table written by `loadtest` (overrides --trace*)")
    g.add_argument("--bodies", env_var="LOADTEST_BODIES", default="",
                   help="JSON list of request bodies; default: random inputs from the model's metadata")
    g.add_argument("--record", env_var="LOADTEST_RECORD", default="",
                   help="CSV to append every request to: start_unix_s,latency_ms,ok,error")
    g.add_argument("--users-per-rps", env_var="LOADTEST_USERS_PER_RPS", type=float, default=1.0,
                   help="users per req/s of the trace's peak (more keeps the load open-loop at high latency)")
    g.add_argument("--max-users", env_var="LOADTEST_MAX_USERS", type=int, default=400)
    g.add_argument("--abort-p95-ms", env_var="LOADTEST_ABORT_P95_MS", type=float, default=0.0,
                   help="stop early once a window's p95 exceeds this (0: never)")
    g.add_argument("--abort-window-s", env_var="LOADTEST_ABORT_WINDOW_S", type=float, default=10.0)
    g.add_argument("--seed", env_var="LOADTEST_SEED", type=int, default=0)


def _options(environment):
    return environment.parsed_options


def _setup(environment, shape) -> None:
    """Load the trace and bodies, open the record file and mark the trace's t=0 in it (first shape tick)."""
    opts = _options(environment)
    if not opts.model:
        raise SystemExit("locustfile: --model (or LOADTEST_MODEL) is required")
    if opts.trace_file:
        _state["trace"] = read_trace(opts.trace_file)
    else:
        _state["trace"] = build_trace(opts.trace, opts.trace_duration, json.loads(opts.trace_params or "{}"),
                                      opts.trace_csv or None)
    if opts.bodies:
        with open(opts.bodies) as fh:
            raw = json.load(fh)
    else:
        with urllib.request.urlopen(f"{environment.host.rstrip('/')}{_model_path(opts)}", timeout=10) as r:
            raw = make_bodies(json.load(r)["inputs"], n=32, seed=opts.seed)
    _state["bodies"] = [json.dumps(b).encode() for b in raw]
    shape.reset_time()  # t=0 of the trace: after the (possibly slow) setup above
    if opts.record:
        _state["record"] = open(opts.record, "a", buffering=1 << 16)  # noqa: SIM115 - closed on quit
        _state["record"].write(f"#start,{time.time():.6f}\n")
        _state["record"].flush()


@events.quitting.add_listener
def _on_quit(**_kw) -> None:
    if _state["record"] is not None:
        _state["record"].close()
        _state["record"] = None


@events.request.add_listener
def _record(response_time, exception=None, start_time=None, response=None, **_kw) -> None:
    ok = exception is None
    if _state["record"] is not None:
        row = f"{start_time or time.time():.6f},{response_time:.3f},{int(ok)},{_error_kind(exception, response)}\n"
        _state["record"].write(row)
    if ok:
        _state["window"].append(response_time)


def _error_kind(exception, response) -> str:
    if exception is None:
        return ""
    code = getattr(response, "status_code", 0) or 0
    if code >= 400:
        return f"HTTP {code}"
    return type(exception).__name__


def _model_path(opts) -> str:
    version = f"/versions/{opts.model_version}" if opts.model_version else ""
    return f"/v2/models/{opts.model}{version}"


class TraceShape(LoadTestShape):
    """Holds a fixed user pool for the trace's duration; stops at its end (or early, see --abort-p95-ms)."""

    _next_check = 0.0

    def tick(self):
        if _state["trace"] is None:
            _setup(self.runner.environment, self)
        trace = _state["trace"]
        t = self.get_run_time()
        if _state["record"] is not None:
            _state["record"].flush()  # the parent may kill us after a grace period: keep the file current
        if t >= trace.duration_s or _state["stop"] or self._breached(t):
            return None
        users = _pool_size(trace.peak_rps, self.runner.environment.parsed_options)
        return users, users

    def _breached(self, t: float) -> bool:
        """Over --abort-p95-ms, or saturated (under 60% of the window's demand answered): stop early."""
        opts = self.runner.environment.parsed_options
        if opts.abort_p95_ms <= 0 or t < self._next_check:
            return False
        window, _state["window"] = _state["window"], []
        t0, self._next_check = self._next_check - opts.abort_window_s, t + opts.abort_window_s
        trace = _state["trace"]
        expected = sum(trace.rate_at(t0 + (i + 0.5) * (t - t0) / 20) for i in range(20)) * (t - t0) / 20
        if t0 < 0 or expected < 20:
            return False
        if len(window) < 0.6 * expected:
            return True
        window.sort()
        return window[int(0.95 * (len(window) - 1))] > opts.abort_p95_ms


def _pool_size(peak_rps: float, opts) -> int:
    return int(min(max(math.ceil(peak_rps * opts.users_per_rps), 2), opts.max_users))


class InferenceUser(FastHttpUser):
    """Posts one inference per arrival; arrivals are this user's share of the trace's Poisson process."""

    wait_time = constant(0)  # pacing happens in `infer`, against the trace's clock
    connection_timeout = 10.0
    network_timeout = 30.0

    def on_start(self) -> None:
        self._rng = random.Random(hash((_options(self.environment).seed, id(self))))
        self._next_at = time.perf_counter()
        self._url = _model_path(_options(self.environment)) + "/infer"

    def _sleep_until_next_arrival(self) -> None:
        # Thinning (Lewis-Shedler): candidates at this user's share of the trace's peak rate, each kept with
        # probability rate(t) / peak, gives exact non-homogeneous Poisson arrivals, steps included.
        shape, trace = self.environment.shape_class, _state["trace"]
        while True:
            peak = trace.peak_rps / max(1, self.environment.runner.user_count) if trace is not None else 0.0
            now = time.perf_counter()
            if peak <= 0:
                time.sleep(0.2)  # gevent-patched: yields to the other users
                continue
            # A backlog older than 1 s is dropped rather than fired at once (it would be a burst, not demand).
            self._next_at = max(self._next_at, now - 1.0) + self._rng.expovariate(peak)
            if self._next_at > now:
                time.sleep(self._next_at - now)
            if self._rng.random() * trace.peak_rps <= trace.rate_at(shape.get_run_time()):
                return

    @task
    def infer(self) -> None:
        self._sleep_until_next_arrival()
        body = self._rng.choice(_state["bodies"])
        with self.client.post(self._url, data=body, headers={"Content-Type": "application/json"},
                              catch_response=True) as resp:
            if resp.status_code == 200 and b'"outputs"' not in (resp.content or b""):
                resp.failure("response has no outputs")
