"""The report's sliding least-squares slope against the direct formula (drift.slope), window by window."""

from hypothesis import given, settings
from hypothesis import strategies as st

from llmops.telemetry.drift import SlidingSlope, slope


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 50), st.floats(1e9, 8e10)), min_size=3, max_size=60),  # dt, bytes
       st.floats(5, 200))
def test_sliding_slope_equals_the_direct_fit_of_each_window(steps, window_s):
    t, points = 1.7e9, []
    for dt, y in steps:  # wall-clock times (1.7e9 s) and byte counts (1e9-8e10): the cancellation case
        t += dt + 0.5  # the monitor samples its peak at most once per interval
        points.append((t, y))
    sliding = SlidingSlope()
    for i, (x, y) in enumerate(points):
        sliding.add(x, y)
        sliding.drop_before(x - window_s)
        window = [(px, py) for px, py in points[: i + 1] if x - px <= window_s]
        assert len(sliding) == len(window)
        if len(window) >= 2:
            direct = slope(window)
            scale = max(abs(py) for _, py in window)  # rounding of sums of byte counts this large, in bytes/s
            assert abs(sliding.slope - direct) <= 1e-5 * abs(direct) + 1e-11 * scale  # ppm of an alert rate
