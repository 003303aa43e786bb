"""serve/_http1.py against a small asyncio HTTP/1.1 server: answers, kept-alive reuse, closes, refusals."""

import asyncio

import pytest

from serve._http1 import Http1Pool


async def start_server(answers: list[bytes]):
    """Answers each request with the next of `answers` (raw HTTP bytes); records (connection, request) pairs."""
    seen: list[tuple[int, bytes]] = []
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        me = connections
        while True:
            head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
            if not head:
                break
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            seen.append((me, head + await reader.readexactly(length)))
            answer = answers.pop(0)
            if not answer:  # close without answering, as a server closing an idle connection just then
                break
            writer.write(answer)
            await writer.drain()
            if b"connection: close" in answer.lower():
                break
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


def test_answers_reuse_one_connection_until_the_server_closes_it():
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-kind: a\r\n\r\nhello"
    closing = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nretry-after: 2\r\n"
               b"connection: close\r\n\r\nbusy")

    async def main():
        server, port, seen = await start_server([ok, ok, closing, ok])
        pool = Http1Pool("127.0.0.1", port)
        try:
            answers = [await pool.post("/a", b"x" * n, [("content-type", "t/x")]) for n in (1, 0, 3, 2)]
        finally:
            pool.close()
            server.close()
        return answers, seen

    answers, seen = asyncio.run(main())
    assert [status for status, _, _ in answers] == [200, 200, 503, 200]
    assert answers[0][2] == b"hello" and (b"x-kind", b"a") in answers[0][1]
    assert answers[2][2] == b"busy" and (b"retry-after", b"2") in answers[2][1]
    assert [connection for connection, _ in seen] == [1, 1, 1, 2]  # a new connection only after the close
    assert seen[0][1].startswith(b"POST /a HTTP/1.1\r\n") and seen[0][1].endswith(b"\r\n\r\nx")
    assert b"content-type: t/x\r\n" in seen[2][1]


def test_a_kept_alive_connection_closed_under_a_request_is_retried_once_on_a_new_one():
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    async def main():
        server, port, seen = await start_server([ok, b"", ok, b"", b""])
        pool = Http1Pool("127.0.0.1", port)
        try:
            first, second = await pool.post("/a", b"1", []), await pool.post("/a", b"2", [])
            with pytest.raises(ConnectionError):  # a new connection that fails is not retried
                await pool.post("/a", b"3", [])
        finally:
            pool.close()
            server.close()
        return first, second, seen

    first, second, seen = asyncio.run(main())
    assert first[2] == second[2] == b"ok"
    assert [connection for connection, _ in seen] == [1, 1, 2, 2, 3]


def test_concurrent_posts_each_get_their_own_answer():
    async def main():
        answers = [b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n%d" % i for i in range(8)]
        server, port, seen = await start_server(answers)
        pool = Http1Pool("127.0.0.1", port)
        try:
            got = await asyncio.gather(*(pool.post("/b", b"%d" % i, []) for i in range(8)))
        finally:
            pool.close()
            server.close()
        return got, seen

    got, seen = asyncio.run(main())
    assert sorted(body for _, _, body in got) == [b"%d" % i for i in range(8)]
    assert len({connection for connection, _ in seen}) == 8  # one request in flight per connection


def test_a_refused_connection_raises_oserror():
    async def main():
        server, port, _ = await start_server([])
        server.close()
        await server.wait_closed()
        with pytest.raises(OSError):
            await Http1Pool("127.0.0.1", port).post("/c", b"", [])

    asyncio.run(main())
