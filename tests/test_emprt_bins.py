"""eMPRT's bin count: one bin is refused before anything runs (every map's entropy would be 0)."""
import pytest

from harness.errors import HarnessError
from harness.metrics.settings import MetricSettings


@pytest.mark.parametrize("bins", [1, "1"])
def test_one_bin_is_refused_in_one_line(bins):
    with pytest.raises(HarnessError) as refused:
        MetricSettings.from_config({"emprt_bins": bins})
    assert str(refused.value) == ("metrics.emprt_bins must be at least 2 (one bin gives every map entropy 0) or one "
                                  "of auto, fd, doane, scott, stone, rice, sturges, sqrt, got 1")


def test_two_bins_are_the_fewest_accepted():
    assert MetricSettings.from_config({"emprt_bins": 2}).emprt_bins == 2
