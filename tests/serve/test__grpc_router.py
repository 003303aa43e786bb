"""The gRPC front end's place in the deployed application and the CLI (no Ray started; test_grpc.py runs it live)."""

import asyncio

import grpc
import pytest
import yaml

pytest.importorskip("tritonclient.grpc")

from optiserve.errors import UserError  # noqa: E402
from serve._deploy import serve_config, start_app  # noqa: E402
from serve._grpc_router import GRPC_APP, MAX_GROUP_BYTES, Abort, Coalescer, GrpcRouter, _answer, grpc_app  # noqa: E402
from serve.cli import main  # noqa: E402
from serve.config import ServeConfig  # noqa: E402


def test_serve_config_carries_the_grpc_app_without_an_http_route(repo):
    from ray.serve.schema import ServeDeploySchema

    doc = yaml.safe_load(yaml.safe_dump(serve_config(repo, ServeConfig(), port=8123, grpc_port=9123)))
    by_name = {a.name: a for a in ServeDeploySchema(**doc).applications}
    app = by_name[GRPC_APP]
    assert app.route_prefix is None and app.import_path == "serve._grpc_router:grpc_app"
    assert app.args["port"] == 9123 and app.args["host"] == "127.0.0.1" and app.args["models"] == ["cnn", "mlp"]
    grpc_app(app.args)  # the builder named by import_path builds from exactly these args
    assert GRPC_APP not in {a["name"] for a in serve_config(repo, ServeConfig())["applications"]}


def test_config_command_grpc_port_flag(repo, tmp_path):
    out = tmp_path / "serve.yaml"
    assert main(["config", "--repository", str(repo), "-o", str(out)]) == 0
    assert "serve._grpc_router:grpc_app" in out.read_text() and "port: 9000" in out.read_text()
    assert main(["config", "--repository", str(repo), "--grpc-port", "0", "-o", str(out)]) == 0
    assert "grpc" not in out.read_text()
    assert main(["config", "--repository", str(repo), "--grpc-port", "70000"]) == 2


def test_grpc_port_must_differ_from_the_http_port(repo):
    with pytest.raises(UserError, match="gRPC port"):
        start_app(repo, port=8123, grpc_port=8123)


def test_replica_answers_become_payloads_or_grpc_statuses():
    assert _answer((200, b"x", None)) == b"x"
    with pytest.raises(Abort) as info:
        _answer((400, "bad shape", None))
    assert info.value.code.name == "INVALID_ARGUMENT" and info.value.message == "bad shape"
    with pytest.raises(Abort) as info:
        _answer((503, "queue is full", 1.0))
    assert info.value.code.name == "UNAVAILABLE" and info.value.retry_after_s == 1.0


class FakeModel:
    """A model deployment's group call: records each group, answers when the test releases it."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.groups: list[list[bytes]] = []
        self.gates: list[asyncio.Event] = []
        self.fail = fail

    async def send(self, raws: list[bytes]) -> list[tuple[int, bytes, None]]:
        self.groups.append(list(raws))
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.fail is not None:
            raise self.fail
        return [(200, b"answer:" + raw, None) for raw in raws]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_coalescer_gathers_calls_that_arrive_while_its_slots_are_busy():
    async def scenario():
        model = FakeModel()
        co = Coalescer(model.send, lambda: 1)
        first = asyncio.ensure_future(co.submit(b"a"))
        await settle()
        assert model.groups == [[b"a"]]  # nothing in flight: it left alone, without waiting for company
        rest = [asyncio.ensure_future(co.submit(bytes([c]))) for c in b"bcde"]
        await settle()
        assert model.groups == [[b"a"]] and co.in_flight == 1  # the only slot is busy: they wait together
        model.gates[0].set()
        assert await first == (200, b"answer:a", None)
        await settle()
        assert model.groups[1] == [b"b", b"c", b"d", b"e"]  # one call for all four
        model.gates[1].set()
        assert await asyncio.gather(*rest) == [(200, b"answer:" + bytes([c]), None) for c in b"bcde"]
        assert co.in_flight == 0

    asyncio.run(scenario())


def test_coalescer_bounds_groups_by_count_and_bytes_and_uses_every_slot():
    async def scenario():
        model = FakeModel()
        slots = [1]
        co = Coalescer(model.send, lambda: slots[0], max_group=3, max_bytes=10)
        blocker = asyncio.ensure_future(co.submit(b"0"))
        await settle()
        calls = [asyncio.ensure_future(co.submit(bytes([c]))) for c in b"1234567"]
        big = asyncio.ensure_future(co.submit(b"x" * 20))  # over max_bytes: still goes, alone
        await settle()
        slots[0] = 4  # more replicas: more groups in flight at once
        model.gates[0].set()
        await blocker
        await settle()
        assert model.groups[1:] == [[b"1", b"2", b"3"], [b"4", b"5", b"6"], [b"7"], [b"x" * 20]]
        assert co.in_flight == 4
        for gate in model.gates[1:]:
            gate.set()
        assert [r[1] for r in await asyncio.gather(*calls, big)] == \
            [b"answer:" + bytes([c]) for c in b"1234567"] + [b"answer:" + b"x" * 20]

    asyncio.run(scenario())


def test_coalescer_holds_a_group_to_its_share_of_the_callers_while_another_is_in_flight():
    async def scenario():
        model = FakeModel()
        co = Coalescer(model.send, lambda: 2)
        first = [asyncio.ensure_future(co.submit(b"a%d" % i)) for i in range(8)]
        await settle()
        assert [len(g) for g in model.groups] == [8]  # nothing in flight: all that arrived leave at once
        second = [asyncio.ensure_future(co.submit(b"b%d" % i)) for i in range(6)]
        await settle()
        # a slot is free, but 6 of the 14 callers are less than their share (14 / 2): sent now, the group would
        # split the callers unevenly, and each small group costs a model run and a round trip
        assert [len(g) for g in model.groups] == [8] and co.in_flight == 1
        second += [asyncio.ensure_future(co.submit(b"b%d" % i)) for i in (6, 7)]
        await settle()
        assert [len(g) for g in model.groups] == [8, 8]  # 8 of 16: its share
        late = asyncio.ensure_future(co.submit(b"c"))
        model.gates[0].set()
        assert [r[1] for r in await asyncio.gather(*first)] == [b"answer:a%d" % i for i in range(8)]
        await settle()
        assert [len(g) for g in model.groups] == [8, 8]  # one group still in flight: "c" waits for company ...
        model.gates[1].set()
        await asyncio.gather(*second)
        await settle()
        assert model.groups[2] == [b"c"]  # ... but never past the groups in flight: with none, it leaves alone
        model.gates[2].set()
        assert await late == (200, b"answer:c", None)

    asyncio.run(scenario())


def test_coalescer_hands_a_failed_call_to_each_of_its_requests_and_skips_callers_that_gave_up():
    async def scenario():
        overloaded = Abort(grpc.StatusCode.UNAVAILABLE, "model m is overloaded", 1.0)
        model = FakeModel(fail=overloaded)
        co = Coalescer(model.send, lambda: 1)
        blocker = asyncio.ensure_future(co.submit(b"0"))
        await settle()
        waiting = [asyncio.ensure_future(co.submit(c)) for c in (b"1", b"2", b"3")]
        await settle()
        waiting[1].cancel()  # its client's deadline passed while it waited
        model.gates[0].set()
        with pytest.raises(Abort):
            await blocker
        await settle()
        assert model.groups[1] == [b"1", b"3"]
        model.gates[1].set()
        for call in (waiting[0], waiting[2]):
            with pytest.raises(Abort) as info:
                await call
            assert info.value.code.name == "UNAVAILABLE" and info.value.retry_after_s == 1.0
        model.fail = None  # the slot was freed: later calls go on
        later = asyncio.ensure_future(co.submit(b"4"))
        await settle()
        model.gates[2].set()
        assert await later == (200, b"answer:4", None)

    asyncio.run(scenario())


def test_coalescer_refuses_a_group_answer_of_the_wrong_length():
    async def scenario():
        async def short(raws):
            return [(200, b"", None)]

        co = Coalescer(short, lambda: 1)
        first = asyncio.ensure_future(co.submit(b"0"))
        await settle()
        pair = [asyncio.ensure_future(co.submit(c)) for c in (b"1", b"2")]
        assert await first == (200, b"", None)
        for call in pair:
            with pytest.raises(RuntimeError, match="1 results for a group of 2"):
                await call

    asyncio.run(scenario())


def test_a_large_group_or_one_whose_answers_outgrew_serves_grpc_transport_goes_by_reference():
    class Bare(GrpcRouter.func_or_class):
        def __del__(self) -> None:  # no server was started
            pass

    router = object.__new__(Bare)  # its methods alone: no port, no Ray
    sent = []

    async def call(model, method, raws, by_reference=False):
        sent.append((len(raws), by_reference))
        if not by_reference and raws[0] == b"huge answer":
            raise grpc.aio.AioRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       "Received message larger than max")
        if not by_reference and raws[0] == b"down":
            raise grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata())
        return [(200, b"ok", None)] * len(raws)

    router._call, router._http = call, None  # no HTTP port known: every group through the handle
    small, big = [b"x" * 100] * 3, [b"x" * (MAX_GROUP_BYTES + 1)]
    assert asyncio.run(router._infer_group("m", small)) == [(200, b"ok", None)] * 3
    assert asyncio.run(router._infer_group("m", big)) == [(200, b"ok", None)]
    assert asyncio.run(router._infer_group("m", [b"huge answer"])) == [(200, b"ok", None)]
    assert sent == [(3, False), (1, True), (1, False), (1, True)]
    with pytest.raises(grpc.aio.AioRpcError):  # any other transport failure is not retried
        asyncio.run(router._infer_group("m", [b"down"]))


def test_groups_go_over_http_and_an_answer_about_the_whole_post_is_every_requests():
    from serve import _grpc

    class Bare(GrpcRouter.func_or_class):
        def __del__(self) -> None:  # no server was started
            pass

    class FakePool:
        def __init__(self) -> None:
            self.posts, self.answer = [], None

        async def post(self, path, body, headers):
            self.posts.append((path, _grpc.unpack_group(body), dict(headers)))
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer

    router = object.__new__(Bare)
    router._http, router._authorization, router._max_post = FakePool(), "Bearer t", MAX_GROUP_BYTES
    handled = []

    async def call(model, method, raws, by_reference=False):
        handled.append((len(raws), by_reference))
        return [(200, b"by handle", None)] * len(raws)

    router._call = call
    router._http.answer = (200, [], _grpc.pack_results([(200, b"a", None), (400, "bad", None)]))
    assert asyncio.run(router._infer_group("mlp", [b"1", b"2"])) == [(200, b"a", None), (400, "bad", None)]
    path, raws, headers = router._http.posts[0]
    assert path == "/v2/models/mlp/infer" and raws == [b"1", b"2"]
    assert headers == {"content-type": _grpc.GROUP_CONTENT_TYPE, "authorization": "Bearer t"}
    router._http.answer = (503, [(b"retry-after", b"3")], b'{"error": "no replica is up"}')
    assert asyncio.run(router._infer_group("mlp", [b"1", b"2"])) == [(503, "no replica is up", 3.0)] * 2
    router._http.answer = (503, [], b"<html>503 Service Unavailable</html>")  # HAProxy's own page
    assert asyncio.run(router._infer_group("mlp", [b"1"])) == [(503, "<html>503 Service Unavailable</html>", 1.0)]
    router._http.answer = ConnectionRefusedError("refused")
    with pytest.raises(Abort) as info:
        asyncio.run(router._infer_group("mlp", [b"1"]))
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and info.value.retry_after_s == 1.0
    assert asyncio.run(router._infer_group("mlp", [b"x" * (MAX_GROUP_BYTES + 1)])) == [(200, b"by handle", None)]
    router._max_post = 1000  # a server with a small max_body_bytes: a group over it goes by handle, never a 413
    assert asyncio.run(router._infer_group("mlp", [b"x" * 500] * 2)) == [(200, b"by handle", None)] * 2
    assert handled == [(1, True), (2, False)] and len(router._http.posts) == 4
