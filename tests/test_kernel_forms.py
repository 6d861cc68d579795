"""How `kernels.run_kernel` splits a chunk of a few rows: one call or one call per row, whichever it
measured faster (by SPLIT_MARGIN) for that kernel, row shape and row count, then kept."""
import numpy as np
import pytest
import tensorflow as tf

from harness.methods import kernels


class FakeKernel:
    """An (images, targets) kernel whose call of n rows takes `seconds(n)` on a fake clock."""

    def __init__(self, seconds, clock):
        self.seconds, self.clock, self.calls = seconds, clock, []

    def __call__(self, x, targets):
        self.calls.append(int(x.shape[0]))
        self.clock[0] += self.seconds(int(x.shape[0]))
        return x * 2.0 + tf.cast(targets, tf.float32)[:, None, None, None]


@pytest.fixture
def clock(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(kernels.time, "perf_counter", lambda: now[0])
    return now


def _rows(n):
    return np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2, 1), np.arange(n, dtype=np.int32)


def test_slow_small_batches_become_one_row_calls_and_the_choice_is_kept(clock):
    eigen = FakeKernel(lambda n: 0.001 if n == 1 else 0.030, clock)  # a 2-4 row call ~30x a one-row call
    x, t = _rows(3)
    np.testing.assert_array_equal(kernels.run_kernel(eigen, x, t, 256), x * 2 + t[:, None, None, None])
    assert ((2, 2, 1), 3) in kernels.split_forms()
    eigen.calls.clear()
    kernels.run_kernel(eigen, x, t, 256)
    assert eigen.calls == [1, 1, 1]  # kept: no more trials
    eigen.calls.clear()
    kernels.run_kernel(eigen, *_rows(kernels.SPLIT_ROWS + 1), 256)
    assert eigen.calls == [kernels.SPLIT_ROWS + 1]  # beyond SPLIT_ROWS: one call, untimed


def test_batches_stay_one_call_unless_one_row_calls_win_by_the_margin(clock):
    onednn = FakeKernel(lambda n: 0.002 + 0.001 * n, clock)  # one call of 3 rows: 5 ms; 3 one-row calls: 9 ms
    near = FakeKernel(lambda n: 0.010 if n == 1 else 0.035, clock)  # one-row calls only 1.17x faster
    for kernel in (onednn, near):
        x, t = _rows(3)
        np.testing.assert_array_equal(kernels.run_kernel(kernel, x, t, 256), x * 2 + t[:, None, None, None])
        kernel.calls.clear()
        kernels.run_kernel(kernel, x, t, 256)
        assert kernel.calls == [3]


def test_costly_rows_are_not_timed_both_ways(clock):
    inception = FakeKernel(lambda n: 0.2 * n if n > 1 else 0.3, clock)  # one-row calls faster, but 0.3 s each
    x, t = _rows(2)
    kernels.run_kernel(inception, x, t, 256)
    assert inception.calls == [1, 2]  # one row (0.3 s: too costly to time both forms), then one call
    assert ((2, 2, 1), 2) not in kernels.split_forms()


def test_one_row_calls_give_each_row_its_own_rows_values():
    """The real kernels: a split chunk returns the one-row calls' values, row for row in order."""
    fn = tf.function(lambda x, targets: tf.reduce_sum(x, [1, 2, 3]) * tf.cast(targets, tf.float32))
    x, t = _rows(4)
    np.testing.assert_array_equal(np.concatenate([c.numpy() for c in kernels._one_row_calls(fn, x, t)]),
                                  x.sum((1, 2, 3)) * t)
