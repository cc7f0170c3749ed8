"""The PDF report's time chart: bins follow the period, and the bars are the decisions' counts.

Decisions are real ORM rows (not persisted: the chart is built from them alone), spread over
known times, so the expected counts per bin are computed here independently of the report.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from matplotlib.dates import date2num, num2date

from gateway.audit.report import aggregate
from gateway.audit.report_chart import TimeBins, time_bins, time_chart
from gateway.db.models import Decision

OUTCOMES = ("allowed", "prompt_blocked", "licence_denied")


def _decisions(start: datetime, span: timedelta, n: int, seed: int = 7) -> list[Decision]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        when = start + timedelta(seconds=rng.uniform(0, span.total_seconds()))
        out.append(
            Decision(
                id=f"dec_{i:032x}",
                tenant_id="ten_test",
                key_id="k",
                created_at=when,
                outcome=rng.choice(OUTCOMES),
                model_id="demo-tiny",
                licence_id="apache-2.0",
                intended_use="commercial",
                policy_version="ab" * 32,
                categories="",
                request={"prompt": "a lighthouse at dusk"},
                record={},
            )
        )
    return out


def _bars(bins: TimeBins) -> dict[datetime, float]:
    """Total bar height per bar left edge, read back from the drawn figure."""
    fig = time_chart(bins, list(OUTCOMES), {})
    heights: Counter[datetime] = Counter()
    for patch in fig.axes[0].patches:
        left = num2date(patch.get_x()).replace(microsecond=0)  # type: ignore[attr-defined]
        heights[left] += patch.get_height()  # type: ignore[attr-defined]
    return dict(heights)


def test_days_bins_equal_the_decisions_counts_and_bars_cover_their_day() -> None:
    start = datetime(2026, 3, 2, 5, 30, tzinfo=UTC)
    decisions = _decisions(start, timedelta(days=9, hours=7), 400)
    bins = time_bins(aggregate(decisions).per_hour, (None, None))
    assert bins.width == "day"
    expected: Counter[date] = Counter(d.created_at.date() for d in decisions)
    days = [start.date() + timedelta(days=i) for i in range(10)]
    assert [s.date() for s in bins.starts] == days  # every day, none skipped
    assert all(s.hour == 0 and s.minute == 0 for s in bins.starts)
    assert bins.totals() == [expected[d] for d in days]
    by_outcome = Counter((d.created_at.date(), d.outcome) for d in decisions)
    for s, counts in zip(bins.starts, bins.counts, strict=True):
        assert {o: counts[o] for o in OUTCOMES} == {o: by_outcome[s.date(), o] for o in OUTCOMES}
    assert sum(bins.totals()) == len(decisions)

    # the drawn bars: one stack per day, its left edge at midnight, as tall as the day's count
    bars = _bars(bins)
    assert sorted(bars) == bins.starts
    assert [round(bars[s]) for s in bins.starts] == bins.totals()
    # each tick label sits inside the bin it names
    ax = time_chart(bins, list(OUTCOMES), {}).axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    for tick, label in zip(ax.get_xticks(), labels, strict=True):
        day = num2date(tick)
        assert day.strftime("%d %b") == label
        assert 0 < (tick - date2num(day.replace(hour=0, minute=0, second=0, microsecond=0))) < 1


@pytest.mark.parametrize(
    ("span", "width", "step"),
    [
        (timedelta(hours=30), "hour", timedelta(hours=1)),
        (timedelta(days=40), "day", timedelta(days=1)),
        (timedelta(days=200), "week", timedelta(weeks=1)),
    ],
)
def test_the_bin_follows_the_span(span: timedelta, width: str, step: timedelta) -> None:
    start = datetime(2026, 1, 7, 13, 20, tzinfo=UTC)  # a Wednesday
    decisions = _decisions(start, span, 300)
    bins = time_bins(aggregate(decisions).per_hour, (None, None))
    assert bins.width == width
    assert all(b - a == step for a, b in zip(bins.starts, bins.starts[1:], strict=False))
    if width == "week":
        assert all(s.weekday() == 0 and s.hour == 0 for s in bins.starts)  # Mondays
    for s, total in zip(bins.starts, bins.totals(), strict=True):
        assert total == sum(s <= d.created_at < s + step for d in decisions)
    bars = _bars(bins)
    assert [round(bars[s]) for s in bins.starts] == bins.totals()


def test_the_period_not_just_the_decisions_sets_the_bins() -> None:
    since = datetime(2026, 5, 1, tzinfo=UTC)
    until = datetime(2026, 5, 8, tzinfo=UTC)  # exclusive
    decisions = _decisions(datetime(2026, 5, 3, 10, tzinfo=UTC), timedelta(hours=5), 20)
    bins = time_bins(aggregate(decisions).per_hour, (since, until))
    assert bins.width == "day"  # a week's report is in days, though the decisions span hours
    assert bins.starts[0] == since and bins.starts[-1] == datetime(2026, 5, 7, tzinfo=UTC)
    assert bins.totals() == [0, 0, 20, 0, 0, 0, 0]
