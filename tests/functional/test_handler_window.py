"""The extension stays off the CPU while the handler runs: held socket reads and the kept-alive /next."""

import asyncio

from capture_ext.core.ingest import HOLD_MAX_BYTES
from capture_ext.core.next_poll import NextPoller
from tests.functional.test_extension_loop import Harness
from tests.helpers import read_file_sink


async def _until_received(h: Harness, count: int, timeout: float = 5.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            health = await h.health()
            if health["received"] >= count:
                return health
            await asyncio.sleep(0.02)


async def _until_ledger(h: Harness, count: int, timeout: float = 5.0) -> None:
    """Wait for the ledger itself (a health request would read the held lines)."""
    async with asyncio.timeout(timeout):
        while True:
            if h.runtime.ledger.received >= count:
                return
            await asyncio.sleep(0.02)


async def _until_held(h: Harness, timeout: float = 5.0) -> None:
    """Wait until an INVOKE has reached the extension and it holds the socket."""
    async with asyncio.timeout(timeout):
        while True:
            if h.runtime.ingest.held:
                return
            await asyncio.sleep(0.01)


async def test_records_sent_while_the_handler_runs_are_read_after_runtime_done(tmp_path):
    async with Harness(tmp_path, CAPTURE_FLUSH_INTERVAL_S="60", CAPTURE_HOLD_SOCKET="1") as h:
        request_id = await h.api.invoke()
        await h.api.wait_idle()  # no flush due: back in /next at once, the socket held
        h.client.handler_started(request_id)
        h.client.capture(input="during", request_id=request_id)
        h.client.handler_done(request_id)
        await asyncio.sleep(0.2)
        assert h.runtime.ingest.held and h.runtime.ledger.received == 0  # still in the kernel's buffer
        await h.api.runtime_done(request_id)
        await _until_ledger(h, 1)
        assert not h.runtime.ingest.held
        assert await h.shutdown() == 0
        assert [r["input"] for r in read_file_sink(h.out)] == ["during"]


async def test_a_flush_due_invoke_reads_the_held_records_before_flushing(tmp_path):
    async with Harness(tmp_path, CAPTURE_FLUSH_INTERVAL_S="0", CAPTURE_HOLD_SOCKET="1") as h:
        for i in range(3):
            request_id = await h.api.invoke()
            h.client.handler_started(request_id)
            h.client.capture(input=i, request_id=request_id)
            h.client.handler_done(request_id)
            await h.api.runtime_done(request_id)
            await h.api.wait_idle()
            assert sorted(r["input"] for r in read_file_sink(h.out)) == list(range(i + 1))


async def test_a_function_that_captures_a_lot_is_not_held_on_its_next_invoke(tmp_path):
    async with Harness(tmp_path, CAPTURE_FLUSH_INTERVAL_S="60", CAPTURE_HOLD_SOCKET="1") as h:
        request_id = await h.api.invoke()
        big = HOLD_MAX_BYTES // 1000 + 10
        for i in range(big):  # about 1 KB each: over the hold limit in one invoke
            h.client.capture(input="x" * 1000, metadata={"i": i}, request_id=request_id)
        assert h.client.flush(5000)
        await h.api.runtime_done(request_id)
        await _until_received(h, big)
        request_id = await h.api.invoke()
        await h.api.wait_idle()
        h.client.capture(input="read at once", request_id=request_id)
        await _until_received(h, big + 1)  # without any runtimeDone
        await h.api.runtime_done(request_id)
        request_id = await h.api.invoke()  # the last invoke was small again: held
        await h.api.wait_idle()
        h.client.capture(input="held", request_id=request_id)
        await asyncio.sleep(0.2)
        assert h.runtime.ledger.received == big + 1
        await h.api.runtime_done(request_id)
        await _until_ledger(h, big + 2)


async def test_a_lost_runtime_done_leaves_nothing_held_past_the_next_invoke(tmp_path):
    async with Harness(tmp_path, CAPTURE_FLUSH_INTERVAL_S="60", CAPTURE_HOLD_SOCKET="1") as h:
        request_id = await h.api.invoke()  # its runtimeDone never comes
        await h.api.wait_idle()
        h.client.capture(input="a", request_id=request_id)
        await h.api.invoke()
        await _until_received(h, 1)
        assert await h.shutdown() == 0
        assert [r["input"] for r in read_file_sink(h.out)] == ["a"]


async def _serve_next(framing: str, served: list[int]) -> tuple[asyncio.Server, int]:
    """A minimal Extensions API: answers each /next, then drops the connection as an idle server may."""
    body = b'{"eventType":"INVOKE","deadlineMs":1,"requestId":"r%d"}'

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"GET /2020-01-01/extension/event/next HTTP/1.1\r\n")
            assert b"\r\nLambda-Extension-Identifier: id-1\r\n" in head
            served.append(1)
            payload = body % len(served)
            if framing == "chunked":
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload))
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
            await writer.drain()
            if len(served) % 2 == 0:  # every second answer: close without saying so
                writer.close()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_by_default_nothing_is_held(tmp_path):
    async with Harness(tmp_path, CAPTURE_FLUSH_INTERVAL_S="60") as h:
        request_id = await h.api.invoke()
        await h.api.wait_idle()
        h.client.capture(input="read at once", request_id=request_id)
        await _until_ledger(h, 1)
        assert not h.runtime.ingest.held


async def test_the_next_connection_is_kept_alive_and_reopened_when_the_server_drops_it():
    for framing in ("length", "chunked"):
        served: list[int] = []
        server, port = await _serve_next(framing, served)
        poller = NextPoller(
            "127.0.0.1", port, "/2020-01-01/extension/event/next", {"Lambda-Extension-Identifier": "id-1"}
        )
        try:
            bodies = [await poller.next() for _ in range(5)]
        finally:
            poller.close()
            server.close()
            await server.wait_closed()
        assert [b for _, b in bodies] == [
            b'{"eventType":"INVOKE","deadlineMs":1,"requestId":"r%d"}' % i for i in range(1, 6)
        ]
        assert {s for s, _ in bodies} == {200} and len(served) == 5


async def test_after_a_freeze_the_last_invokes_lines_are_read_at_the_next_invoke_and_its_own_stay_held(tmp_path):
    """Lambda delivers the runtimeDone of an invoke with no flush due only after the next thaw."""
    async with Harness(tmp_path, CAPTURE_FLUSH_INTERVAL_S="60", CAPTURE_HOLD_SOCKET="1") as h:
        first = await h.api.invoke()
        await h.api.wait_idle()
        h.client.capture(input="first", request_id=first)
        await asyncio.sleep(0.1)
        second = await h.api.invoke()  # the thaw: the first invoke's lines are read in this wake-up
        await h.api.wait_idle()
        await _until_ledger(h, 1)
        h.client.capture(input="second", request_id=second)
        await h.api.runtime_done(first)  # late, during the second handler: not the one held for
        await asyncio.sleep(0.2)
        assert h.runtime.ledger.received == 1
        await h.api.runtime_done(second)
        await _until_ledger(h, 2)


async def test_a_health_request_reads_the_held_lines_before_it_counts(tmp_path):
    async with Harness(tmp_path, CAPTURE_FLUSH_INTERVAL_S="60", CAPTURE_HOLD_SOCKET="1") as h:
        request_id = await h.api.invoke()
        await h.api.wait_idle()
        h.client.capture(input="held", request_id=request_id)
        await asyncio.sleep(0.1)
        assert h.runtime.ingest.held and h.runtime.ledger.received == 0
        assert (await h.health())["received"] == 1


async def test_stay_awake_reads_the_held_lines_after_runtime_done_and_before_next(tmp_path):
    async with Harness(tmp_path, CAPTURE_FLUSH_INTERVAL_S="60", CAPTURE_STAY_AWAKE="1") as h:
        first = await h.api.invoke()  # no client connected yet: nothing to stay awake for
        await h.api.wait_idle(2)
        h.client.capture(input="first", request_id=first)
        await h.api.runtime_done(first)
        await _until_ledger(h, 1)
        for i in range(3):
            request_id = await h.api.invoke()
            await _until_held(h)  # the INVOKE reached the extension before the handler's lines
            h.client.handler_started(request_id)
            h.client.capture(input=i, request_id=request_id)
            h.client.handler_done(request_id)
            await asyncio.sleep(0.2)
            # Not back in /next (Lambda would not freeze the environment), and nothing read yet.
            assert not h.api.idle.is_set() and h.runtime.ledger.received == 1 + i
            await h.api.runtime_done(request_id)
            await h.api.wait_idle(5)
            assert h.runtime.ledger.received == 2 + i  # read before it asked for the next event
        assert await h.shutdown() == 0
        assert [r["input"] for r in read_file_sink(h.out)] == ["first", 0, 1, 2]


async def test_stay_awake_with_a_lost_runtime_done_reads_after_the_grace_and_loses_nothing(tmp_path):
    async with Harness(tmp_path, CAPTURE_FLUSH_INTERVAL_S="60", CAPTURE_STAY_AWAKE="1") as h:
        h.client.capture(input="connect")
        await _until_ledger(h, 1)
        request_id = await h.api.invoke()  # its runtimeDone never comes
        await _until_held(h)
        h.client.handler_started(request_id)
        h.client.capture(input="late", request_id=request_id)
        h.client.handler_done(request_id)
        await h.api.wait_idle(5)  # after the 1 s grace: the client's done line counts
        assert h.runtime.ledger.received == 2
        assert await h.shutdown() == 0
        assert sorted(r["input"] for r in read_file_sink(h.out)) == ["connect", "late"]
