import pytest

from autoscale.cost import CostModel, PriceTable
from optiserve.errors import UserError


def test_cost_of_run_adds_replicas_requests_and_misses():
    model = CostModel(PriceTable({"cpu-1": 0.36}), price_per_1k_requests=0.01, price_per_slo_miss=0.001)
    c = model.cost_of_run(replica_seconds=7200, replica_kind="cpu-1", requests=10_000, slo_misses=50)
    assert c.replica_cost == pytest.approx(0.72) and c.request_cost == pytest.approx(0.1)
    assert c.slo_miss_cost == pytest.approx(0.05) and c.total == pytest.approx(0.87)
    assert c.cost_per_1k_requests == pytest.approx(0.087)


def test_price_table_yaml_overrides_defaults(tmp_path):
    p = tmp_path / "prices.yaml"
    p.write_text("price_per_hour:\n  cpu-1: 0.5\n  my-gpu: 2\n")
    table = PriceTable.load(p)
    assert table.price("cpu-1") == 0.5 and table.price("my-gpu") == 2 and table.price("gpu-t4") > 0
    with pytest.raises(UserError):
        table.price("unknown")
    with pytest.raises(UserError):
        PriceTable({"cpu-1": -1})
