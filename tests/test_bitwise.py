"""harness.bitwise: the bitwise equality of the randomization self-check."""
import numpy as np
import pytest

from harness.bitwise import same_bits


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int64, np.bool_, np.complex128])
def test_same_bits_compares_bytes(dtype):
    """The randomization self-check's and the scorer's comparison: bytes, not values (NaN is unchanged,
    -0.0 is a change), of any layout, shape and dtype."""
    a = np.arange(12).reshape(3, 4).astype(dtype)
    assert same_bits(a, a.copy()) and same_bits(a.T, a.T.copy())
    b = a.copy()
    b.flat[5] = 1 - b.flat[5] if dtype is np.bool_ else b.flat[5] + 1
    assert not same_bits(a, b)
    assert not same_bits(a, a.reshape(4, 3)) and not same_bits(a, np.zeros(a.shape, np.int8))
    if np.issubdtype(dtype, np.floating):
        assert same_bits(np.array([np.nan, 1], dtype), np.array([np.nan, 1], dtype))
        assert not same_bits(np.array([0.0], dtype), np.array([-0.0], dtype))
        assert same_bits(np.array(2.5, dtype), np.array(2.5, dtype))  # 0-d


def test_same_bits_of_one_memory_and_of_large_arrays():
    """Views of one memory are compared by their values like any arrays (the same bits only with the
    same layout); in an array past the first values compared (a model's kernel), a change anywhere
    counts. Red with the strides or the rest of the array left unchecked."""
    a = np.arange(16, dtype=np.int64).reshape(4, 4)
    assert same_bits(a, a) and same_bits(a.T, a.T) and same_bits(a[1:], a[1:])
    crossed = np.lib.stride_tricks.as_strided(a, (2, 2), a.strides[::-1])  # a[:2, :2] transposed
    assert not same_bits(a[:2, :2], crossed)
    big = np.zeros(10_000, np.float32)
    for at in (10, 9_000, 9_999):
        changed = big.copy()
        changed[at] = 1.0
        assert not same_bits(big, changed) and not same_bits(changed, big)
    assert same_bits(big, big.copy())
