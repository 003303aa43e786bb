"""A small keep-alive HTTP/1.1 client on the event loop (httptools parses the answers): the gRPC router's way to
the model replicas through the same front end HTTP uses (HAProxy's port), with no thread hand-offs."""

from __future__ import annotations

import asyncio

import httptools


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the connection closed before the answer"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(ConnectionError(f"bad HTTP answer: {exc}"))
            self.transport.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        answer = (self.parser.get_status_code(), self.headers, b"".join(self.body))
        if not self.parser.should_keep_alive():
            self.closed = True
            self.transport.close()
        self.headers, self.body = [], []
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(answer)

    async def request(self, head: bytes, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(head + body)
        try:
            return await self.waiter
        finally:
            self.waiter = None


class Http1Pool:
    """POSTs to one host:port over reused connections, one request in flight per connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._idle: list[_Connection] = []

    async def post(self, path: str, body: bytes, headers: list[tuple[str, str]]) -> tuple[int, list, bytes]:
        """(status, headers, body). A kept-alive connection that fails before its answer is retried once on a
        new one: a server may close an idle connection just as it is reused (the router's calls are inference,
        which has no side effects, so a retry is safe)."""
        head = (f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\ncontent-length: {len(body)}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("latin-1")
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                try:
                    return self._keep(connection, await connection.request(head, body))
                except ConnectionError:
                    connection.transport.close()
                except BaseException:
                    connection.transport.close()
                    raise
                break
        _, connection = await asyncio.get_running_loop().create_connection(_Connection, self.host, self.port)
        try:
            return self._keep(connection, await connection.request(head, body))
        except BaseException:
            connection.transport.close()
            raise

    def _keep(self, connection: _Connection, answer: tuple[int, list, bytes]) -> tuple[int, list, bytes]:
        if not connection.closed:
            self._idle.append(connection)
        return answer

    def close(self) -> None:
        for connection in self._idle:
            connection.transport.close()
        self._idle.clear()
