import asyncio
import threading

import numpy as np
import pytest

from serve._batching import Batcher, Overloaded, merge, signature, split


def test_merge_and_split_round_trip():
    a, b = {"x": np.ones((2, 3))}, {"x": np.zeros((1, 3))}
    merged = merge([a, b])
    assert merged["x"].shape == (3, 3)
    parts = split(merged, [2, 1])
    np.testing.assert_array_equal(parts[0]["x"], a["x"])
    np.testing.assert_array_equal(parts[1]["x"], b["x"])
    with pytest.raises(ValueError, match="expected 4 rows"):
        split(merged, [2, 2])
    assert signature(a) == signature(b) != signature({"x": np.ones((1, 4))})


def model(calls):
    def run(feeds):
        calls.append(feeds["x"].shape[0])
        if (feeds["x"] < 0).any():
            raise ValueError("negative input")
        return {"y": feeds["x"] * 2}
    return run


def test_concurrent_requests_merge_into_few_calls_and_get_their_own_rows():
    calls, batches = [], []

    async def main():
        b = Batcher(model(calls), max_rows=64, wait_s=0.05, max_queue=100,
                    on_batch=lambda rows, n, s: batches.append((rows, n)))
        xs = [np.full((i % 3 + 1, 2), i, np.float32) for i in range(20)]
        outs = await asyncio.gather(*(b.submit({"x": x}, len(x)) for x in xs))
        for x, out in zip(xs, outs, strict=True):
            np.testing.assert_array_equal(out["y"], x * 2)
        await b.close()

    asyncio.run(main())
    assert sum(calls) == sum(i % 3 + 1 for i in range(20))
    assert len(calls) < 20 and max(calls) <= 64
    assert sum(n for _, n in batches) == 20


def test_max_rows_caps_a_batch_and_no_merging_when_disabled():
    calls = []

    async def main(can_merge):
        b = Batcher(model(calls), max_rows=4, wait_s=0.05, max_queue=100, can_merge=can_merge)
        await asyncio.gather(*(b.submit({"x": np.ones((1, 2))}, 1) for _ in range(10)))
        await b.close()

    asyncio.run(main(True))
    assert max(calls) <= 4 and sum(calls) == 10
    calls.clear()
    asyncio.run(main(False))
    assert calls == [1] * 10


def test_a_bad_request_fails_alone_not_its_batch():
    calls = []

    async def main():
        b = Batcher(model(calls), max_rows=64, wait_s=0.05, max_queue=100)
        good = [b.submit({"x": np.ones((1, 2))}, 1) for _ in range(3)]
        bad = b.submit({"x": -np.ones((1, 2))}, 1)
        return await asyncio.gather(*good, bad, return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, dict) for r in results[:3])
    assert isinstance(results[3], ValueError)


def test_full_queue_refuses_with_overloaded():
    gate = threading.Event()

    def slow(feeds):
        gate.wait(5)
        return {"y": feeds["x"]}

    async def main():
        b = Batcher(slow, max_rows=1, wait_s=0, max_queue=2, retry_after_s=3)
        first = asyncio.ensure_future(b.submit({"x": np.ones((1, 1))}, 1))
        await asyncio.sleep(0.05)  # the first request is running, the queue is empty
        queued = [asyncio.ensure_future(b.submit({"x": np.ones((1, 1))}, 1)) for _ in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as exc:
            await b.submit({"x": np.ones((1, 1))}, 1)
        gate.set()
        await asyncio.gather(first, *queued)
        await b.close()
        return exc.value.retry_after_s

    assert asyncio.run(main()) == 3
