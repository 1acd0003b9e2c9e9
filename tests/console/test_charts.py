"""The Workers page's charts: points inside the drawing, the largest value at the top, nothing drawn from nothing."""

from __future__ import annotations

from producer.console.charts import HEIGHT, PADDING_PX, WIDTH, line_chart, stacked_bars


def test_a_line_spans_the_chart_with_its_peak_at_the_top() -> None:
    chart = line_chart([0, 5, 10])
    points = [tuple(float(n) for n in pair.split(",")) for pair in chart.points.split()]
    assert points[0] == (PADDING_PX, HEIGHT - PADDING_PX), "zero sits on the axis, at the left"
    assert points[-1] == (WIDTH - PADDING_PX, PADDING_PX), "the peak touches the top, at the right"
    assert chart.last == points[-1]
    assert chart.peak == 10


def test_no_samples_draw_nothing_and_one_sample_is_a_point() -> None:
    assert line_chart([]).empty
    single = line_chart([3])
    assert not single.empty
    assert single.last == (PADDING_PX, PADDING_PX)


def test_failed_jobs_stack_on_done_ones() -> None:
    chart = stacked_bars([("10:00", 2, 0), ("10:01", 1, 1)])
    done, failed = chart.bars[2], chart.bars[3]
    assert chart.peak == 2
    assert done.y + done.height == HEIGHT - PADDING_PX, "done bars stand on the axis"
    assert failed.y + failed.height == done.y, "failed ones on top of them"
    assert failed.height == done.height, "one job each"
    assert stacked_bars([]).empty
