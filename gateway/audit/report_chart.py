"""The report's "decisions over time" chart: counts binned to the period, bars on their bins.

The bin follows the span the report covers: hours up to two days, days up to 92 days, weeks
(Monday 00:00 UTC) beyond. Every bin from the first to the last is drawn, empty ones too; a
bar covers its bin (its left edge at the bin's start), and each tick label sits under the
middle of the bin it names, so a day's bar is not centred on midnight.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from matplotlib.dates import date2num
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

BinWidth = Literal["hour", "day", "week"]
HOUR_SPAN = timedelta(days=2)
DAY_SPAN = timedelta(days=92)
MAX_TICKS = 10
_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}
_LABEL = {"hour": "%H:00\n%d %b", "day": "%d %b", "week": "%d %b"}


@dataclass(frozen=True)
class TimeBins:
    width: BinWidth
    starts: list[datetime]  # every bin, in order, each ``step`` long
    counts: list[Counter[str]]  # per bin: decisions by outcome

    @property
    def step(self) -> timedelta:
        return _STEP[self.width]

    def totals(self) -> list[int]:
        return [sum(c.values()) for c in self.counts]


def bin_width(first: datetime, last: datetime) -> BinWidth:
    span = last - first
    if span <= HOUR_SPAN:
        return "hour"
    return "day" if span <= DAY_SPAN else "week"


def bin_start(when: datetime, width: BinWidth) -> datetime:
    """The start (UTC) of the bin holding ``when``."""
    t = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    hour = t.replace(minute=0, second=0, microsecond=0)
    if width == "hour":
        return hour
    day = hour.replace(hour=0)
    return day if width == "day" else day - timedelta(days=day.weekday())


def time_bins(
    per_hour: Mapping[datetime, Counter[str]],
    period: tuple[datetime | None, datetime | None],
) -> TimeBins:
    """Rebin hourly counts (at least one) to the period's width, covering the whole period
    (``until`` is exclusive): bins without decisions are kept, as zero."""
    hours = sorted(per_hour)
    since, until = period
    first = min(hours[0], since) if since is not None else hours[0]
    last = max(hours[-1], until - timedelta(microseconds=1)) if until is not None else hours[-1]
    width = bin_width(first, last)
    start, end = bin_start(first, width), bin_start(last, width)
    starts: list[datetime] = []
    t = start
    while t <= end:
        starts.append(t)
        t = _next(t, width)
    index = {s: i for i, s in enumerate(starts)}
    counts: list[Counter[str]] = [Counter() for _ in starts]
    for hour in hours:
        counts[index[bin_start(hour, width)]].update(per_hour[hour])
    return TimeBins(width, starts, counts)


def _next(t: datetime, width: BinWidth) -> datetime:
    return t + _STEP[width]


def time_chart(bins: TimeBins, outcomes: list[str], colours: Mapping[str, str]) -> Figure:
    """Stacked bars per bin and outcome, each bar spanning its bin."""
    x = [float(date2num(s)) for s in bins.starts]  # type: ignore[no-untyped-call]
    step_days = bins.step / timedelta(days=1)
    fig = Figure(figsize=(7.0, 3.0))
    ax = fig.add_subplot()
    bottom = [0] * len(x)
    for outcome in outcomes:
        values = [c[outcome] for c in bins.counts]
        ax.bar(
            x,
            values,
            width=step_days * 0.9,
            align="edge",
            bottom=bottom,
            label=outcome,
            color=colours.get(outcome),
        )
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xlim(x[0] - step_days * 0.05, x[-1] + step_days * 1.05)
    every = max(1, -(-len(x) // MAX_TICKS))  # at most MAX_TICKS labels
    shown = list(range(0, len(x), every))
    ax.set_xticks([x[i] + step_days * 0.45 for i in shown])
    ax.set_xticklabels([bins.starts[i].strftime(_LABEL[bins.width]) for i in shown])
    ax.set_ylabel(f"decisions per {bins.width}")
    years = sorted({bins.starts[0].year, bins.starts[-1].year})
    what = "weeks from Monday" if bins.width == "week" else f"{bins.width}s"
    ax.set_xlabel(f"{what}, UTC, {'–'.join(str(y) for y in years)}", fontsize=7)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.tick_params(labelsize=7)
    return fig
