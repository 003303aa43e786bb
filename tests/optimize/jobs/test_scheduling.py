"""Scheduling by resources on a simulated two-node cluster (ray.cluster_utils.Cluster): only the worker node
has a (logical) GPU, so GPU runs land there, queue for it, and a request no node can hold is refused."""

import json
from pathlib import Path

import pytest

from optimize.jobs import JobService, Recipe, RunState
from optiserve.errors import UserError

pytestmark = [pytest.mark.ray, pytest.mark.slow]
FAKE = str(Path(__file__).with_name("fake_recipe.py"))


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    from ray.cluster_utils import Cluster

    from optiserve.ray_cluster import free_port

    root = tmp_path_factory.mktemp("sched-state")
    model = root / "model.pt"
    model.write_bytes(b"not really a model, the recipe only hashes it")
    def ports():  # free ports for every per-node agent: other Rays on this machine hold the defaults
        return {"dashboard_agent_listen_port": free_port(), "metrics_agent_port": free_port(),
                "metrics_export_port": free_port(), "runtime_env_agent_port": free_port()}

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": free_port(),
        "gcs_server_port": free_port(), **ports()})
    try:
        gpu_node = cluster.add_node(num_cpus=2, num_gpus=1, **ports())
        cluster.wait_for_nodes()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("OPTISERVE_STATE_DIR", str(root))
            service = JobService(address="http://" + cluster.webui_url, watcher=False)
            service.create_job("gpu-job", model, Recipe(FAKE, kind="python"))
            yield service, gpu_node.node_id
            service.close()
    finally:
        cluster.shutdown()


def test_gpu_runs_land_on_the_gpu_node_and_queue_for_it(two_nodes):
    service, gpu_node_id = two_nodes
    first = service.run("gpu-job", gpus=1, args=["--sleep", "3", "--tag", "first"])
    second = service.run("gpu-job", gpus=1, args=["--tag", "second"])
    first, second = service.wait(first.id, timeout_s=180), service.wait(second.id, timeout_s=180)
    reports = []
    for run in (first, second):
        assert run.state == RunState.SUCCEEDED, run.message
        info = service._ray(run.dashboard_url).client.get_job_info(run.submission_id)
        assert info.driver_node_id == gpu_node_id  # never on the CPU-only head
        reports.append(json.loads((Path(run.output_dir) / "report.json").read_text()))
    assert [r["cuda_visible_devices"] for r in reports] == ["0", "0"]
    # one GPU: the runs never overlapped. Either may go first: Ray's job queue does not promise submission order
    # (a CI run saw the second start 2 s before the first).
    earlier, later = sorted(reports, key=lambda r: r["started"])
    assert later["started"] >= earlier["ended"]


def test_a_request_no_node_can_hold_is_refused(two_nodes):
    service, _ = two_nodes
    with pytest.raises(UserError, match="2 GPU"):
        service.run("gpu-job", gpus=2)
    with pytest.raises(UserError, match="no node"):
        service.run("gpu-job", gpus=1, cpus=4)  # GPUs on one node, CPUs on no single node
