"""Port picking for servers that bind later (no Ray needed)."""

from __future__ import annotations

import socket

import pytest

from optiserve import ray_cluster

pytestmark = pytest.mark.skipif(not ray_cluster.picks_from_range(),
                                reason="needs Linux with an ephemeral port range clear of the pick range")


def test_picked_ports_are_free_and_outside_the_ephemeral_range():
    ports = [ray_cluster.free_port() for _ in range(20)] + ray_cluster.free_ports(20, exclude={20000})
    assert all(ray_cluster.PICK_RANGE[0] <= p < ray_cluster.PICK_RANGE[1] for p in ports), ports
    assert len(set(ports[20:])) == 20 and 20000 not in ports[20:]
    with socket.socket() as s:  # what was handed out can be bound
        s.bind(("127.0.0.1", ports[0]))


def test_a_port_in_use_is_passed_over(monkeypatch):
    taken, other = ray_cluster.free_ports(2)
    draws = iter([taken, other])
    monkeypatch.setattr(ray_cluster.random, "randrange", lambda a, b: next(draws))
    with socket.socket() as held:
        held.bind(("127.0.0.1", taken))
        assert ray_cluster.free_port() == other


def test_a_new_head_picks_its_ports_around_the_callers(monkeypatch, tmp_path):
    """`modelserve start --port P --grpc-port G` starts a head whose own ports must never be P or G."""
    monkeypatch.setenv("OPTISERVE_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    asked = {}

    def free_ports(count, exclude=frozenset()):
        asked.update(count=count, exclude=set(exclude))
        raise RuntimeError("stop before starting Ray")

    monkeypatch.setattr(ray_cluster, "free_ports", free_ports)
    with pytest.raises(RuntimeError, match="stop before"):
        ray_cluster.ensure_cluster(env={"RAY_SERVE_HAPROXY_STATS_PORT": "21000"}, exclude={25001, 25002})
    assert asked == {"count": 9, "exclude": {21000, 25001, 25002}}
