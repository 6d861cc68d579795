"""harness.bitwise: the bitwise equality the randomization self-check and the scorer share."""
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
