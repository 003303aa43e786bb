"""A lean gRPC server for unary calls: HTTP/2 parsed by zttp (a Zig core) on the caller's asyncio event loop.

Why not grpc.aio: it runs HTTP/2 on its own poller and EventEngine threads and hands every call to the
event loop's thread and back (~1.3 ms of latency per call, measured in a replica), and it capped optiserve's
gRPC front end at about half the HTTP JSON path's throughput. Here a call costs one zttp parse, one task and a
share of one socket write per turn of the loop: answering fixed bytes to h2load at 16 connections, 22-25 us of
CPU per call against ~190 us for a grpc.aio server doing the same (the router with this server: 1.4x / 1.6x the
throughput at 16 / 64 connections, BENCHMARKS.md).

Scope: what unary gRPC needs, no more. A handler is `async (request bytes, metadata) -> response bytes` or
raises `RpcError(code, message, trailing metadata)`. Compressed messages, streaming calls and unknown methods
get their gRPC status (UNIMPLEMENTED), a request larger than `max_message_bytes` RESOURCE_EXHAUSTED, a
content type other than gRPC's an HTTP 415. A client that resets its stream cancels its handler.

zttp 0.0.35 closes a connection with "HTTP/2 flood detected" at its 4,096th stream, so a connection is
retired gracefully before that (GOAWAY after `MAX_STREAMS_PER_CONNECTION` streams: the streams it names
finish, later ones are refused unprocessed, which gRPC clients retry on a new connection without error),
as gRPC servers do for `max_connection_age`.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import grpc
import zttp

log = logging.getLogger("optiserve.serve")

Metadata = list[tuple[bytes, bytes]]
Handler = Callable[[bytes, Metadata], Awaitable[bytes]]
MAX_STREAMS_PER_CONNECTION = 3840  # zttp refuses the 4,096th; the margin covers streams already in flight
RESPONSE_HEADERS = [(b"content-type", b"application/grpc")]
_PREFIX = struct.Struct(">BI")  # gRPC's length-prefixed message: compressed flag, length


@dataclass
class RpcError(Exception):
    code: grpc.StatusCode
    message: str = ""
    trailing: Metadata = field(default_factory=list)


def _status_trailers(code: grpc.StatusCode, message: str = "", trailing: Metadata | None = None) -> Metadata:
    out = [(b"grpc-status", str(code.value[0]).encode())]
    if message:  # percent-encoded (gRPC over HTTP/2: grpc-message)
        out.append((b"grpc-message", quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode()))
    return out + list(trailing or ())


class _Call:
    __slots__ = ("path", "metadata", "body", "too_large", "task")

    def __init__(self, path: bytes, metadata: Metadata) -> None:
        self.path, self.metadata = path, metadata
        self.body = bytearray()
        self.too_large = False
        self.task: asyncio.Task | None = None


class _Connection(asyncio.Protocol):
    def __init__(self, server: GrpcServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.conn = zttp.Connection(zttp.SERVER, protocol=zttp.HTTP2)
        self.transport: asyncio.Transport | None = None
        self.calls: dict[int, _Call] = {}
        self.streams = 0
        self.last_stream: int | None = None  # set once the connection is retired (GOAWAY sent)
        self.flush_scheduled = False

    # ---- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.server.connections.add(self)
        self.conn.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        for call in self.calls.values():
            if call.task is not None:
                call.task.cancel()
        self.calls.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self.conn.receive_data(data)
            while (event := self.conn.next_event()) is not zttp.NEED_DATA:
                self._event(event)
        except zttp.ProtocolError as exc:
            log.warning("gRPC connection closed: %s", exc)
            self.flush()
            self.transport.close()
            return
        self.flush()

    # ---- events -----------------------------------------------------------------------------------

    def _event(self, event) -> None:
        if isinstance(event, zttp.Data):
            call = self.calls.get(event.stream_id)
            if call is not None and not call.too_large:
                call.body += event.data
                if len(call.body) > self.server.max_message_bytes + _PREFIX.size:
                    call.too_large, call.body = True, bytearray()
        elif isinstance(event, zttp.Request):
            self._request(event)
        elif isinstance(event, zttp.EndOfMessage):
            call = self.calls.get(event.stream_id)
            if call is not None and call.task is None:
                call.task = self.loop.create_task(self._run(event.stream_id, call))
        elif isinstance(event, zttp.RstStream):
            call = self.calls.pop(event.stream_id, None)
            if call is not None and call.task is not None:
                call.task.cancel()
        elif isinstance(event, zttp.GoAway):
            self._retire()

    def _request(self, event) -> None:
        sid = event.stream_id
        if self.last_stream is not None and sid > self.last_stream:
            self.conn.stream(sid).reset(7)  # REFUSED_STREAM: never processed, the client retries it
            return
        headers = event.headers if isinstance(event.headers, list) else event.headers.to_list()  # HTTP/2: lowercase
        content_type = next((v for k, v in headers if k == b"content-type"), b"")
        if event.method != b"POST" or not content_type.startswith(b"application/grpc"):
            stream = self.conn.stream(sid)
            stream.send_response(415, [(b"content-type", b"text/plain")])
            stream.send_data(b"gRPC calls only: POST with content-type application/grpc\n")
            stream.end_message()
            return
        call = self.calls[sid] = _Call(event.path, [(k, v) for k, v in headers if not k.startswith(b":")])
        if event.end_stream:  # no body follows (no EndOfMessage either)
            call.task = self.loop.create_task(self._run(sid, call))
        self.streams += 1
        if self.streams >= MAX_STREAMS_PER_CONNECTION:
            self._retire(sid)

    def _retire(self, last_stream: int | None = None) -> None:
        if self.last_stream is None:
            self.last_stream = last_stream if last_stream is not None else max(self.calls, default=0)
            self.conn.close(0, self.last_stream)  # GOAWAY, NO_ERROR
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self.last_stream is not None and not self.calls and self.transport is not None:
            self.flush()
            self.transport.close()

    # ---- calls ------------------------------------------------------------------------------------

    async def _run(self, sid: int, call: _Call) -> None:
        try:
            message = await self._answer(call)
            trailers = _status_trailers(grpc.StatusCode.OK)
        except RpcError as exc:
            message, trailers = None, _status_trailers(exc.code, exc.message, exc.trailing)
        except asyncio.CancelledError:
            return  # the client reset the stream or went away: nothing to answer
        except Exception:
            log.exception("gRPC call %s failed", call.path.decode(errors="replace"))
            message = None
            trailers = _status_trailers(grpc.StatusCode.INTERNAL, "internal error (see the server's log)")
        if self.calls.pop(sid, None) is None:
            return  # reset while the handler ran
        stream = self.conn.stream(sid)
        stream.send_response(200, RESPONSE_HEADERS)
        if message is not None:
            stream.send_data(_PREFIX.pack(0, len(message)) + message)
        stream.end_message(trailers)
        self.flush_soon()
        self._close_if_done()

    async def _answer(self, call: _Call) -> bytes:
        handler = self.server.handlers.get(call.path)
        if handler is None:
            raise RpcError(grpc.StatusCode.UNIMPLEMENTED, f"method {call.path.decode(errors='replace')} is not served")
        if call.too_large:
            raise RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "the request is larger than the server accepts "
                                                               f"({self.server.max_message_bytes} bytes)")
        body = call.body
        if len(body) < _PREFIX.size:
            raise RpcError(grpc.StatusCode.INTERNAL, "the request carries no gRPC message")
        compressed, length = _PREFIX.unpack_from(body)
        if compressed:
            raise RpcError(grpc.StatusCode.UNIMPLEMENTED, "compressed messages are not accepted")
        if length != len(body) - _PREFIX.size:
            raise RpcError(grpc.StatusCode.UNIMPLEMENTED, "one request message per call (unary calls only)")
        return await handler(bytes(memoryview(body)[_PREFIX.size:]), call.metadata)

    # ---- writes -----------------------------------------------------------------------------------

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.transport is not None and not self.transport.is_closing():
            out = self.conn.data_to_send()
            if out:
                self.transport.write(out)

    def flush_soon(self) -> None:
        """One socket write for every answer that completes in this turn of the event loop."""
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)


class GrpcServer:
    """Serves `handlers` ({"/package.Service/Method": handler}) on host:port until `stop()`."""

    def __init__(self, handlers: dict[str, Handler], max_message_bytes: int = 8 << 20) -> None:
        self.handlers = {path.encode(): fn for path, fn in handlers.items()}
        self.max_message_bytes = max_message_bytes
        self.connections: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> None:
        """Binds host:port (not shared with another socket: a second server on a port in use fails)."""
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: _Connection(self), host, port, reuse_port=False)
        except OSError as exc:
            raise RuntimeError(f"cannot bind the gRPC port {host}:{port} ({exc.strerror or exc})") from None

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1] if self._server else 0

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stops accepting, retires every connection (GOAWAY) and waits up to `grace_s` for calls in flight."""
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection._retire()
            connection.flush()
        deadline = asyncio.get_running_loop().time() + grace_s
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.transport.close()
        self._server = None
