import pytest

from autoscale.cost import CostModel, PriceTable
from loadtests.capacity import (
    CapacityReport,
    SearchConfig,
    StepMeasurement,
    build_report,
    find_capacity,
    plan_capacity,
)
from optiserve.errors import UserError


def fake_server(capacity_rps: float, base_ms: float = 5.0):
    """An M/M/1-like replica: latency grows as load nears capacity; past it, throughput saturates."""
    calls = []

    def measure(rates, step_s):
        calls.append(list(rates))
        out = []
        for r in rates:
            rho = r / capacity_rps
            p95 = base_ms / (1 - rho) * 3 if rho < 1 else 10_000.0
            out.append(StepMeasurement(r, min(r, capacity_rps), base_ms, p95, p95 * 1.5, 0.0, int(r * step_s)))
        return out

    return measure, calls


def test_search_brackets_then_refines():
    measure, calls = fake_server(capacity_rps=100.0)
    cfg = SearchConfig(slo_p95_ms=50.0, start_rps=10, growth=2, max_rps=1000, refine_steps=3)
    curve = find_capacity(measure, cfg)
    # p95 = 15/(1-r/100) <= 50 -> r <= 70; coarse 10,20,40,80 (80 fails), refine 50,60,70
    assert calls[0][:5] == [10, 20, 40, 80, 160]
    assert calls[1] == [50, 60, 70]
    assert curve.capacity_rps == pytest.approx(70.0)
    assert curve.limited_by == "objective"
    assert [s.offered_rps for s in curve.steps] == sorted(s.offered_rps for s in curve.steps)


def test_saturation_and_errors_fail_a_step():
    def measure(rates, step_s):
        return [StepMeasurement(r, min(r, 30.0), 1, 2, 3, 0.0 if r < 60 else 0.5, 100) for r in rates]

    curve = find_capacity(measure, SearchConfig(slo_p95_ms=50, start_rps=10, growth=2, refine_steps=1))
    assert curve.capacity_rps == pytest.approx(30.0)
    assert curve.limited_by == "saturation"


def test_early_abort_and_unreachable():
    def measure(rates, step_s):  # the generator stopped after the first stair
        return [StepMeasurement(rates[0], rates[0], 100, 500, 900, 0.0, 10)]

    curve = find_capacity(measure, SearchConfig(slo_p95_ms=50, start_rps=10, refine_steps=2))
    assert curve.capacity_rps == 0.0
    assert curve.limited_by == "unreachable"


def test_max_rps_reached():
    measure, _ = fake_server(capacity_rps=1e6)
    curve = find_capacity(measure, SearchConfig(slo_p95_ms=50, start_rps=10, growth=2, max_rps=40))
    assert curve.limited_by == "max_rps"
    assert curve.capacity_rps == pytest.approx(40.0)


def test_plan_replicas_cost_and_autoscaling():
    measure, _ = fake_server(capacity_rps=100.0)
    curve = find_capacity(measure, SearchConfig(slo_p95_ms=50.0, start_rps=10, growth=2))
    cm = CostModel(PriceTable({"cpu-1": 0.05}))
    plan = plan_capacity(curve, peak_rps=500, slo_p95_ms=50, cost_model=cm, target_utilization=0.8, min_rps=50)
    # 70 req/s x 0.8 = 56 per replica -> ceil(500 / 56) = 9
    assert plan.replicas_needed == 9
    assert plan.cost_per_hour == pytest.approx(0.45)
    assert plan.cost_per_million == pytest.approx(0.45 / (500 * 3600) * 1e6)
    a = plan.autoscaling
    assert (a["min_replicas"], a["max_replicas"], a["policy"]) == (1, 12, "slo")
    assert a["policy_config"]["capacity_rps_per_replica"] == pytest.approx(70.0)
    assert a["policy_config"]["headroom"] == pytest.approx(0.25)


def test_report_recommends_cheapest_and_round_trips(tmp_path):
    cfg = SearchConfig(slo_p95_ms=50.0, start_rps=10, growth=2)
    small = find_capacity(fake_server(50.0)[0], cfg, label="cpu-1 b1")
    big = find_capacity(fake_server(400.0)[0], cfg, label="cpu-4 b8", replica_kind="cpu-4", max_batch_size=8)
    rep = build_report("m", cfg, [small, big], peak_rps=1000)
    # cpu-4 is 4x the price of cpu-1 but 8x the capacity here
    assert rep.recommended == "cpu-4 b8"
    back = CapacityReport.from_dict(__import__("json").loads(rep.save(tmp_path / "c.json").read_text()))
    assert back.plans == rep.plans
    assert back.curves[1].steps == rep.curves[1].steps


def test_plan_rejects_unreachable_or_bad_peak():
    measure, _ = fake_server(capacity_rps=100.0)
    curve = find_capacity(measure, SearchConfig(slo_p95_ms=50.0, start_rps=10, growth=2))
    with pytest.raises(UserError):
        plan_capacity(curve, peak_rps=0, slo_p95_ms=50)
    with pytest.raises(UserError):
        SearchConfig(slo_p95_ms=50, growth=1.0)


def test_poisson_shortfall_at_low_rates_is_not_saturation():
    # 10 req/s for 4 s: 28 answers instead of 40 is within 3 sigma (~19); 15 is not
    def measure(rates, step_s):
        return [StepMeasurement(r, (7.0 if r == 10 else r), 5, 6, 7, 0.0, 30, duration_s=4.0) for r in rates]

    curve = find_capacity(measure, SearchConfig(slo_p95_ms=50, start_rps=10, growth=2, max_rps=40))
    assert curve.steps[0].passed and curve.limited_by == "max_rps"

    def saturated(rates, step_s):
        return [StepMeasurement(r, 3.75, 5, 6, 7, 0.0, 15, duration_s=4.0) for r in rates]

    curve = find_capacity(saturated, SearchConfig(slo_p95_ms=50, start_rps=10, growth=2, max_rps=40,
                                                  refine_steps=0))
    assert curve.limited_by == "unreachable" and not curve.steps[0].passed


def test_refinement_rounds_narrow_the_bracket():
    measure, calls = fake_server(capacity_rps=100.0)
    cfg = SearchConfig(slo_p95_ms=50.0, start_rps=10, growth=2, max_rps=1000, refine_steps=3, refine_rounds=3)
    curve = find_capacity(measure, cfg)
    # round 1: 50, 60, 70 pass -> bracket [70, 80]; round 2: 72.5 fails -> [70, 72.5] is within 5 %: stop
    assert calls[2] == [72.5, 75.0, 77.5] and len(calls) == 3
    assert curve.capacity_rps == pytest.approx(70.0)
