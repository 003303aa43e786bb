import asyncio
import threading

import numpy as np
import pytest

from serve._batching import (
    Batcher,
    Overloaded,
    bucket_for,
    merge,
    pad,
    power_of_two_buckets,
    signature,
    split,
    unpad,
)


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
                    on_batch=lambda rows, n, s, padded: batches.append((rows, n)))
        xs = [np.full((i % 3 + 1, 2), i, np.float32) for i in range(20)]
        outs = await asyncio.gather(*(b.submit({"x": x}, len(x)) for x in xs))
        for x, out in zip(xs, outs, strict=True):
            np.testing.assert_array_equal(out["y"], x * 2)
        await b.close()

    asyncio.run(main())
    assert sum(calls) == sum(i % 3 + 1 for i in range(20))
    assert len(calls) < 20 and max(calls) <= 64
    assert sum(n for _, n in batches) == 20


def test_a_request_that_must_not_wait_takes_what_is_queued_along_without_waiting():
    # wait_s is a minute: a batch that waited for it would hit the 30 s guard instead
    calls = []

    def ones(rows):
        return {"x": np.ones((rows, 2), np.float32)}, rows

    async def main():
        b = Batcher(model(calls), max_rows=64, wait_s=60, max_queue=100)
        await asyncio.wait_for(asyncio.gather(b.submit(*ones(1)), b.submit(*ones(2), wait=False)), 30)
        gone = asyncio.ensure_future(b.submit(*ones(4), wait=False))
        await asyncio.sleep(0)  # queued: its caller gives up before the worker takes it
        gone.cancel()
        waiting = asyncio.ensure_future(b.submit(*ones(1)))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # an ordinary request waits again: what asked not to wait has left
        await asyncio.wait_for(asyncio.gather(waiting, b.submit(*ones(1), wait=False)), 30)
        await b.close()

    asyncio.run(main())
    assert calls == [3, 2]


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


# ---- shape-stable batching (buckets) -------------------------------------------------------------


def test_power_of_two_buckets_end_at_the_largest_batch():
    assert power_of_two_buckets(32) == (1, 2, 4, 8, 16, 32)
    assert power_of_two_buckets(48) == (1, 2, 4, 8, 16, 32, 48)
    assert power_of_two_buckets(1) == (1,)
    with pytest.raises(ValueError):
        power_of_two_buckets(0)


@pytest.mark.parametrize("rows, expected", [(1, 1), (2, 4), (4, 4), (5, 8), (32, 32), (33, 33), (0, 0)])
def test_bucket_for_is_the_smallest_bucket_holding_the_rows(rows, expected):
    assert bucket_for(rows, (1, 4, 8, 32)) == expected
    assert bucket_for(rows, ()) == rows  # no buckets: the batch runs at its own size


def test_pad_repeats_the_last_row_and_unpad_drops_the_padding():
    x = {"a": np.arange(6, dtype=np.float32).reshape(3, 2), "b": np.array([[1], [2], [3]], np.int64)}
    padded = pad(x, 5)
    assert padded["a"].shape == (5, 2) and padded["b"].shape == (5, 1)
    np.testing.assert_array_equal(padded["a"][:3], x["a"])
    np.testing.assert_array_equal(padded["a"][3:], [[4, 5], [4, 5]])  # copies of the last real row
    assert padded["b"][:, 0].tolist() == [1, 2, 3, 3, 3]
    assert pad(x, 3)["a"] is x["a"]
    with pytest.raises(ValueError, match="more than the 2"):
        pad(x, 2)
    back = unpad({"y": padded["a"] * 2}, 3, 5)
    np.testing.assert_array_equal(back["y"], x["a"] * 2)
    with pytest.raises(ValueError, match="expected 5 rows"):
        unpad({"y": np.zeros((4, 2))}, 3, 5)


def test_merged_batches_run_only_at_bucket_sizes_and_answers_hold_no_padding():
    calls, reports = [], []
    buckets = (1, 4, 8, 16)

    def run(feeds):
        calls.append(feeds["x"].shape[0])
        return {"y": feeds["x"] * 2, "rowsum": feeds["x"].sum(axis=1)}

    async def main():
        b = Batcher(run, max_rows=16, wait_s=0.05, max_queue=100, buckets=buckets,
                    on_batch=lambda rows, n, s, padded: reports.append((rows, padded)))
        xs = [np.full((i % 3 + 1, 2), i, np.float32) for i in range(15)]
        outs = await asyncio.gather(*(b.submit({"x": x}, len(x)) for x in xs))
        alone = await b.submit({"x": np.full((3, 2), 7, np.float32)}, 3)  # a batch of 3 alone runs at 4
        await b.close()
        return xs, outs, alone

    xs, outs, alone = asyncio.run(main())
    for x, out in zip(xs, outs, strict=True):
        assert out["y"].shape == x.shape and out["rowsum"].shape == (len(x),)
        np.testing.assert_array_equal(out["y"], x * 2)
    assert alone["y"].shape == (3, 2)
    assert set(calls) <= set(buckets) and calls[-1] == 4
    real = sum(len(x) for x in xs) + 3
    assert sum(r for r, _ in reports) == real
    assert sum(p for _, p in reports) == sum(calls) - real  # the padding reported is what the model computed extra
    assert all(bucket_for(r, buckets) == r + p for r, p in reports)


def test_buckets_are_not_used_when_requests_cannot_merge():
    calls = []

    async def main():
        b = Batcher(model(calls), max_rows=8, wait_s=0.01, max_queue=100, can_merge=False, buckets=(4, 8))
        outs = await asyncio.gather(*(b.submit({"x": np.ones((1, 2))}, 1) for _ in range(3)))
        await b.close()
        return outs

    assert all(out["y"].shape == (1, 2) for out in asyncio.run(main()))
    assert calls == [1, 1, 1]


def test_a_bad_request_fails_alone_in_a_padded_batch():
    calls = []

    async def main():
        b = Batcher(model(calls), max_rows=8, wait_s=0.05, max_queue=100, buckets=(2, 8))
        good = [b.submit({"x": np.ones((1, 2))}, 1) for _ in range(2)]
        bad = b.submit({"x": -np.ones((1, 2))}, 1)
        return await asyncio.gather(*good, bad, return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, dict) and r["y"].shape == (1, 2) for r in results[:2])
    assert isinstance(results[2], ValueError)
    assert calls[0] == 8 and calls[1:] == [2, 2, 2]  # the merged batch, then each request alone at bucket 2


@pytest.mark.parametrize("buckets", [(4, 2), (0, 4), (2, 2)])
def test_buckets_must_be_increasing_positive_sizes(buckets):
    with pytest.raises(ValueError, match="strictly increasing"):
        Batcher(model([]), max_rows=4, wait_s=0, max_queue=1, buckets=buckets)
