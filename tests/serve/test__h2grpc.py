"""serve/_h2grpc.py against grpcio's own client: statuses, metadata, sizes, cancellation, connection retirement."""

import asyncio
import threading

import grpc
import pytest

from serve._h2grpc import MAX_STREAMS_PER_CONNECTION, GrpcServer, RpcError


class Handlers:
    def __init__(self) -> None:
        self.metadata: list = []
        self.started = threading.Event()
        self.cancelled = threading.Event()

    async def echo(self, raw: bytes, metadata) -> bytes:
        self.metadata = metadata
        return raw[::-1]

    async def refuse(self, raw: bytes, metadata) -> bytes:
        raise RpcError(grpc.StatusCode.UNAVAILABLE, "model büsy: 100% of slots", [(b"retry-after", b"2")])

    async def crash(self, raw: bytes, metadata) -> bytes:
        raise ValueError("a bug")

    async def hang(self, raw: bytes, metadata) -> bytes:
        self.started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return b""

    def table(self) -> dict:
        return {"/t.S/Echo": self.echo, "/t.S/Refuse": self.refuse, "/t.S/Crash": self.crash, "/t.S/Hang": self.hang}


def serve_while(client, handlers: Handlers, max_message_bytes: int = 1 << 20):
    """Runs the server on an event loop in this thread while `client(port)` runs in another."""
    async def main():
        server = GrpcServer(handlers.table(), max_message_bytes=max_message_bytes)
        await server.start("127.0.0.1", 0)
        try:
            return await asyncio.to_thread(client, server.port)
        finally:
            await server.stop(grace_s=1)

    return asyncio.run(main())


def error_of(call, body: bytes) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(body)
    return info.value


def test_answers_errors_and_metadata_reach_grpcs_own_client():
    handlers = Handlers()

    def client(port):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary("/t.S/Echo")
            assert echo(b"abc", metadata=(("authorization", "Bearer t"),)) == b"cba"
            assert echo(b"") == b""  # an empty message is a message
            refused = error_of(channel.unary_unary("/t.S/Refuse"), b"x")
            crash = error_of(channel.unary_unary("/t.S/Crash"), b"x")
            missing = error_of(channel.unary_unary("/t.S/Nope"), b"x")
            zipped = error_of(lambda body: echo(body, compression=grpc.Compression.Gzip), b"x" * 100)
            return refused, crash, missing, zipped

    refused, crash, missing, zipped = serve_while(client, handlers)
    assert (b"authorization", b"Bearer t") not in handlers.metadata  # the last call sent none
    assert refused.code() == grpc.StatusCode.UNAVAILABLE and refused.details() == "model büsy: 100% of slots"
    assert ("retry-after", "2") in tuple(refused.trailing_metadata())
    assert crash.code() == grpc.StatusCode.INTERNAL and "a bug" not in crash.details()  # no internals leak
    assert missing.code() == grpc.StatusCode.UNIMPLEMENTED
    assert zipped.code() == grpc.StatusCode.UNIMPLEMENTED and "compressed" in zipped.details()


def test_metadata_is_handed_to_the_handler():
    handlers = Handlers()

    def client(port):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            channel.unary_unary("/t.S/Echo")(b"a", metadata=(("authorization", "Bearer t"),))

    serve_while(client, handlers)
    assert (b"authorization", b"Bearer t") in handlers.metadata
    assert not any(name.startswith(b":") for name, _ in handlers.metadata)  # pseudo-headers are not metadata


def test_messages_past_the_flow_control_window_and_past_the_limit():
    def client(port):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary("/t.S/Echo")
            big = bytes(range(256)) * 3500  # ~900 KB: many HTTP/2 windows of 64 KiB
            assert echo(big) == big[::-1]
            return error_of(echo, b"x" * (2 << 20))

    too_large = serve_while(client, Handlers())
    assert too_large.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "1048576 bytes" in too_large.details()


def test_a_connection_is_retired_before_zttps_stream_limit_without_a_failed_call():
    calls = 2 * MAX_STREAMS_PER_CONNECTION + 1000  # zttp 0.0.35 drops a connection at its 4,096th stream

    def client(port):
        async def run():  # 64 calls in flight at every retirement: none may fail
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                echo, slots = channel.unary_unary("/t.S/Echo"), asyncio.Semaphore(64)

                async def one(i: int) -> bool:
                    async with slots:
                        return await echo(b"%d" % i) == (b"%d" % i)[::-1]

                return sum(await asyncio.gather(*(one(i) for i in range(calls))))

        return asyncio.run(run())

    assert serve_while(client, Handlers()) == calls


def test_a_client_that_gives_up_or_runs_out_of_time_cancels_its_handler():
    handlers = Handlers()

    def client(port):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            future = channel.unary_unary("/t.S/Hang").future(b"x")
            assert handlers.started.wait(10)
            future.cancel()
            assert handlers.cancelled.wait(10)
            handlers.started.clear()
            handlers.cancelled.clear()
            late = error_of(lambda body: channel.unary_unary("/t.S/Hang")(body, timeout=0.5), b"x")
            assert handlers.cancelled.wait(10)
            return late, channel.unary_unary("/t.S/Echo")(b"ok")  # the connection still serves

    late, answer = serve_while(client, handlers)
    assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED and answer == b"ko"


def test_a_port_in_use_is_refused():
    async def main():
        first = GrpcServer({})
        await first.start("127.0.0.1", 0)
        try:
            with pytest.raises(RuntimeError, match="cannot bind the gRPC port"):
                await GrpcServer({}).start("127.0.0.1", first.port)
        finally:
            await first.stop()

    asyncio.run(main())
