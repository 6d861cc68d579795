"""harness.bitwise: the bitwise equality the randomization self-check and the scorer share."""
import numpy as np
import pytest

from harness.bitwise import same_bits, same_rows


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


def test_same_rows_is_same_bits_row_by_row():
    """The scorer's check of a whole unit's maps against their references at once: per row what
    same_bits says (a NaN is unchanged, -0.0 is a change), for stacks of any layout; stacks that
    differ in shape or dtype are an error, not rows that differ. Red with values compared, not bits."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 5, 4))
    a[2, 1, 1] = np.nan
    b = a.copy()
    b[1, 4, 3] += 1e-12
    b[3, 0, 0] = -a[3, 0, 0] if a[3, 0, 0] == 0 else b[3, 0, 0]
    a[4, 2, 2], b[4, 2, 2] = 0.0, -0.0
    for x, y in ((a, b), (a.transpose(0, 2, 1), b.transpose(0, 2, 1))):
        assert same_rows(x, y).tolist() == [same_bits(r, s) for r, s in zip(x, y)] == \
            [True, False, True, True, False, True]
    assert same_rows(a[:0], b[:0]).shape == (0,)
    with pytest.raises(ValueError, match="stacks differ"):
        same_rows(a, b.astype(np.float32))
