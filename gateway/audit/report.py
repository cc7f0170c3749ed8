"""The PDF audit report a compliance team hands to a regulator or a client.

One streaming pass over the decisions gathers counts (and at most ``refused_cap`` refused or
filtered rows); reportlab lays the report out and matplotlib (Agg, no pyplot state) draws
the charts, embedded as PNG.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any
from xml.sax.saxutils import escape

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import date2num
from matplotlib.figure import Figure
from reportlab.lib import colors  # type: ignore[import-untyped]
from reportlab.lib.pagesizes import A4  # type: ignore[import-untyped]
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet  # type: ignore[import-untyped]
from reportlab.lib.units import mm  # type: ignore[import-untyped]
from reportlab.pdfbase import pdfmetrics  # type: ignore[import-untyped]
from reportlab.pdfbase.ttfonts import TTFont  # type: ignore[import-untyped]
from reportlab.platypus import (  # type: ignore[import-untyped]
    Image,
    Paragraph,
    SimpleDocTemplate,
    Table,
    TableStyle,
)

from gateway.audit.export import flagged_categories
from gateway.audit.search import iso_utc
from gateway.db.models import Decision

DEFAULT_TITLE = "Image generation governance: audit report"
REFUSED_OUTCOMES = ("prompt_blocked", "licence_denied", "output_filtered", "partially_filtered")
PROMPT_CHARS = 80
ROW_ERRORS_SHOWN = 50  # row mismatches listed in the verification section
_OUTCOME_COLOURS = {
    "allowed": "#2e7d32",
    "partially_filtered": "#f9a825",
    "output_filtered": "#ef6c00",
    "prompt_blocked": "#c62828",
    "licence_denied": "#6a1b9a",
    "model_unavailable": "#546e7a",
    "queue_full": "#90a4ae",
    "safety_system_unavailable": "#37474f",
    "aborted": "#000000",
    "failed": "#4e342e",
    "open": "#bdbdbd",
}


@dataclass
class VersionSpan:
    first: datetime
    last: datetime
    decisions: int = 0


@dataclass
class ReportTotals:
    """Everything the report shows, gathered in one pass (counts, not rows)."""

    total: int = 0
    first: datetime | None = None
    last: datetime | None = None
    by_outcome: Counter[str] = field(default_factory=Counter)
    by_category: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    by_licence: Counter[str] = field(default_factory=Counter)
    by_use: Counter[str] = field(default_factory=Counter)
    per_day: dict[date, Counter[str]] = field(default_factory=dict)
    versions: dict[str, VersionSpan] = field(default_factory=dict)
    refused_total: int = 0
    refused: list[tuple[str, str, str, str, str, str]] = field(default_factory=list)

    def add(self, d: Decision, refused_cap: int) -> None:
        when = d.created_at if d.created_at.tzinfo else d.created_at.replace(tzinfo=UTC)
        outcome = d.outcome or "open"
        categories = flagged_categories(d)
        self.total += 1
        self.first = when if self.first is None else min(self.first, when)
        self.last = when if self.last is None else max(self.last, when)
        self.by_outcome[outcome] += 1
        self.by_category.update(categories)
        self.by_model[d.model_id] += 1
        self.by_licence[d.licence_id or "—"] += 1
        self.by_use[d.intended_use or "—"] += 1
        self.per_day.setdefault(when.astimezone(UTC).date(), Counter())[outcome] += 1
        span = self.versions.setdefault(d.policy_version, VersionSpan(when, when))
        span.first, span.last = min(span.first, when), max(span.last, when)
        span.decisions += 1
        images = (d.record or {}).get("images") or []
        quarantined = any(i.get("action") == "quarantine" for i in images)
        if outcome in REFUSED_OUTCOMES or quarantined:
            self.refused_total += 1
            if len(self.refused) < refused_cap:
                label = outcome + (" (quarantined)" if quarantined else "")
                self.refused.append(
                    (d.id, _time(when), label, ", ".join(categories) or "—", d.model_id, _prompt(d))
                )


def aggregate(decisions: Iterable[Decision], *, refused_cap: int = 500) -> ReportTotals:
    totals = ReportTotals()
    for decision in decisions:
        totals.add(decision, refused_cap)
    return totals


def write_pdf_report(
    out: IO[bytes],
    decisions: Iterable[Decision],
    *,
    period: tuple[datetime | None, datetime | None],
    verification: dict[str, Any] | None,
    title: str = DEFAULT_TITLE,
    generated_at: datetime | None = None,
    refused_cap: int = 500,
) -> None:
    """Write the report for ``decisions`` (one pass) covering ``period`` to ``out``."""
    totals = aggregate(decisions, refused_cap=refused_cap)
    generated = generated_at or datetime.now(UTC)
    styles = _Styles()
    story: list[Any] = [
        Paragraph(escape(title), styles.title),
        _facts_table(
            styles,
            [
                ("Period covered", _period(period)),
                ("Decisions in period", f"{totals.total:,}"),
                (
                    "First / last decision",
                    f"{_time(totals.first)} / {_time(totals.last)}" if totals.total else "—",
                ),
                ("Refused or filtered", f"{totals.refused_total:,}"),
                ("Generated", _time(generated)),
            ],
        ),
        Paragraph("Totals", styles.h2),
        _count_table(styles, "Outcome", totals.by_outcome, totals.total),
    ]
    if totals.total:
        story += [
            Paragraph("Decisions over time", styles.h2),
            _chart_per_day(totals),
            Paragraph("Flagged categories", styles.h2),
            _chart_categories(totals) if totals.by_category else _para(styles, "None flagged."),
        ]
    for heading, label, counts in (
        ("By category (a decision may count under several)", "Category", totals.by_category),
        ("By model", "Model", totals.by_model),
        ("By licence", "Licence", totals.by_licence),
        ("By intended use", "Intended use", totals.by_use),
    ):
        story += [Paragraph(heading, styles.h3), _count_table(styles, label, counts, totals.total)]
    story += _versions_section(styles, totals)
    story += _refused_section(styles, totals, refused_cap)
    story += _verification_section(styles, verification)

    def decorate(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont(styles.font, 7)
        canvas.setFillColor(colors.grey)
        canvas.drawString(18 * mm, 10 * mm, f"{title} · generated {_time(generated)}")
        canvas.drawRightString(A4[0] - 18 * mm, 10 * mm, f"page {doc.page}")
        canvas.restoreState()

    doc = SimpleDocTemplate(
        out,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=16 * mm,
        bottomMargin=18 * mm,
        title=title,
        author="governed image gateway",
        subject=f"Audit report, {_period(period)}",
    )
    doc.build(story, onFirstPage=decorate, onLaterPages=decorate)


# -- sections --------------------------------------------------------------------------------


def _versions_section(styles: _Styles, totals: ReportTotals) -> list[Any]:
    rows: list[list[Any]] = [
        ["Policy version (content hash)", "First seen", "Last seen", "Decisions", "Approved by"]
    ]
    for version, span in sorted(totals.versions.items(), key=lambda kv: kv[1].first):
        cells = [_time(span.first), _time(span.last), f"{span.decisions:,}", "—"]
        rows.append([Paragraph(escape(version), styles.mono)] + [_small(styles, c) for c in cells])
    widths = [64 * mm, 30 * mm, 30 * mm, 20 * mm, 30 * mm]
    return [
        Paragraph("Policy versions in force", styles.h2),
        _table(styles, rows, widths) if len(rows) > 1 else _para(styles, "None."),
    ]


def _refused_section(styles: _Styles, totals: ReportTotals, cap: int) -> list[Any]:
    out: list[Any] = [Paragraph("Refused and filtered requests", styles.h2)]
    if not totals.refused_total:
        return [*out, _para(styles, "None in this period.")]
    if totals.refused_total > len(totals.refused):
        out.append(
            _para(
                styles,
                f"Showing the first {len(totals.refused):,} of {totals.refused_total:,} "
                f"(cap {cap:,}); the CSV or JSON Lines export lists them all.",
            )
        )
    rows: list[list[Any]] = [["Decision", "Time", "Outcome", "Categories", "Model", "Prompt"]]
    for row in totals.refused:
        rows.append([_small(styles, cell) for cell in row])
    widths = [33 * mm, 22 * mm, 29 * mm, 22 * mm, 26 * mm, 42 * mm]
    return [*out, _table(styles, rows, widths)]


def _verification_section(styles: _Styles, verification: dict[str, Any] | None) -> list[Any]:
    out: list[Any] = [Paragraph("Audit trail verification", styles.h2)]
    if verification is None:
        return [
            *out,
            _para(
                styles,
                "<b>Not verified.</b> This report was produced without verifying the audit "
                "trail; run <font face='Courier'>gateway audit verify</font> to check it.",
            ),
        ]
    ok = bool(verification.get("ok"))
    result = "<font color='#2e7d32'><b>intact</b></font>"
    if not ok:
        result = "<font color='#c62828'><b>FAILED</b></font>"
    facts = [
        ("Result", result),
        ("Summary", str(verification.get("summary", ""))),
    ]
    checkpoint = verification.get("checkpoint") or {}
    if checkpoint:
        facts += [
            ("Checkpoint size", f"{checkpoint.get('size', '—')}"),
            ("Merkle root", str(checkpoint.get("merkle_root", "—"))),
            ("Signing key id", str(checkpoint.get("key_id", "—"))),
            ("Checkpoint created", str(checkpoint.get("created_at", "—"))),
        ]
    else:
        facts.append(("Checkpoint", "none: verified from the start of the trail"))
    if verification.get("rows_verified"):
        facts.append(
            (
                "Decision records",
                f"{verification.get('rows_checked', 0):,} checked against their events; "
                f"{verification.get('row_error_count', 0):,} mismatch(es)",
            )
        )
    else:
        facts.append(("Decision records", "not checked against their events"))
    out.append(_facts_table(styles, facts, markup_rows=1))
    errors = verification.get("row_errors") or []
    if errors:
        count = int(verification.get("row_error_count") or len(errors))
        shown = errors[:ROW_ERRORS_SHOWN]
        out.append(
            _para(
                styles,
                f"<b>Stored values that do not match the audit trail</b> "
                f"({len(shown):,} of {count:,} shown): the records in this report may have "
                "been altered.",
            )
        )
        rows: list[list[Any]] = [["Decision", "Table", "Field", "Why"]]
        for e in shown:
            cells = (e.get("decision_id") or "—", e.get("table"), e.get("field"), e.get("reason"))
            rows.append([_small(styles, str(c)) for c in cells])
        out.append(_table(styles, rows, [40 * mm, 22 * mm, 50 * mm, 58 * mm]))
    return out


# -- charts ----------------------------------------------------------------------------------


def _chart_per_day(totals: ReportTotals) -> Image:
    days = sorted(totals.per_day)
    x = date2num(days)  # type: ignore[no-untyped-call]
    outcomes = [o for o, _ in totals.by_outcome.most_common()]
    fig = Figure(figsize=(7.0, 3.0))
    ax = fig.add_subplot()
    bottom = [0] * len(days)
    for outcome in outcomes:
        values = [totals.per_day[d][outcome] for d in days]
        ax.bar(x, values, bottom=bottom, label=outcome, color=_OUTCOME_COLOURS.get(outcome))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.xaxis_date()
    ax.set_ylabel("decisions per day (UTC)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.tick_params(labelsize=7)
    fig.autofmt_xdate()
    return _png(fig, 170 * mm)


def _chart_categories(totals: ReportTotals) -> Image:
    items = totals.by_category.most_common()
    fig = Figure(figsize=(7.0, 0.6 + 0.3 * len(items)))
    ax = fig.add_subplot()
    bars = ax.barh([c for c, _ in items][::-1], [n for _, n in items][::-1], color="#c62828")
    ax.bar_label(bars, fontsize=7, padding=2)
    ax.margins(x=0.1)
    ax.set_xlabel("decisions flagging the category")
    ax.tick_params(labelsize=7)
    return _png(fig, 170 * mm)


def _png(fig: Figure, width: float) -> Image:
    fig.tight_layout()
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_figure(buffer, format="png", dpi=150)
    w, h = fig.get_size_inches()
    buffer.seek(0)
    return Image(buffer, width=width, height=width * h / w)


# -- layout helpers --------------------------------------------------------------------------


class _Styles:
    def __init__(self) -> None:
        self.font, bold = _fonts()
        base = getSampleStyleSheet()
        self.title = ParagraphStyle("t", parent=base["Title"], fontName=bold, fontSize=17)
        self.h2 = ParagraphStyle(
            "h2", parent=base["Heading2"], fontName=bold, spaceBefore=10, keepWithNext=1
        )
        self.h3 = ParagraphStyle("h3", parent=base["Heading4"], fontName=bold, keepWithNext=1)
        self.body = ParagraphStyle("b", parent=base["BodyText"], fontName=self.font, fontSize=9)
        self.small = ParagraphStyle("s", parent=self.body, fontSize=7, leading=8.5)
        self.mono = ParagraphStyle("m", parent=self.small, fontName="Courier", fontSize=6.5)
        self.bold = bold


def _fonts() -> tuple[str, str]:
    """DejaVu Sans (shipped with matplotlib) covers far more scripts than Helvetica."""
    registered = pdfmetrics.getRegisteredFontNames()
    if "GwDejaVu" in registered and "GwDejaVu-Bold" in registered:
        return "GwDejaVu", "GwDejaVu-Bold"
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    try:
        pdfmetrics.registerFont(TTFont("GwDejaVu", str(folder / "DejaVuSans.ttf")))
        pdfmetrics.registerFont(TTFont("GwDejaVu-Bold", str(folder / "DejaVuSans-Bold.ttf")))
    except Exception:  # fonts missing: fall back to the standard (Latin-1) ones
        return "Helvetica", "Helvetica-Bold"
    return "GwDejaVu", "GwDejaVu-Bold"


def _small(styles: _Styles, text: str) -> Paragraph:
    return Paragraph(escape(text), styles.small)


def _para(styles: _Styles, markup: str) -> Paragraph:
    return Paragraph(markup, styles.body)


def _table(styles: _Styles, rows: list[list[Any]], widths: list[float] | None = None) -> Table:
    table = Table(rows, colWidths=widths, repeatRows=1, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 0), (-1, -1), styles.font),
                ("FONTNAME", (0, 0), (-1, 0), styles.bold),
                ("FONTSIZE", (0, 0), (-1, -1), 8),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e0e0e0")),
                ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f5f5f5")]),
                ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#9e9e9e")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    return table


def _count_table(styles: _Styles, label: str, counts: Counter[str], total: int) -> Any:
    if not counts:
        return _para(styles, "None.")
    rows: list[list[Any]] = [[label, "Decisions", "Share"]]
    for key, n in counts.most_common():
        rows.append([Paragraph(escape(key), styles.small), f"{n:,}", f"{100 * n / total:.1f}%"])
    return _table(styles, rows, [90 * mm, 25 * mm, 20 * mm])


def _facts_table(styles: _Styles, facts: list[tuple[str, str]], markup_rows: int = 0) -> Table:
    """Label / value rows; the first ``markup_rows`` values are trusted markup, not text."""
    rows = [
        [
            Paragraph(f"<b>{escape(k)}</b>", styles.body),
            Paragraph(v if i < markup_rows else escape(v), styles.body),
        ]
        for i, (k, v) in enumerate(facts)
    ]
    table = Table(rows, colWidths=[45 * mm, 125 * mm], hAlign="LEFT")
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
    return table


def _period(period: tuple[datetime | None, datetime | None]) -> str:
    since, until = period
    start = _time(since) if since else "the first record"
    end = _time(until) if until else "the time of generation"
    return f"{start} to {end}"


def _time(value: datetime | None) -> str:
    text = iso_utc(value)
    return "—" if text is None else text.replace("T", " ")[:19] + " UTC"


def _prompt(d: Decision) -> str:
    prompt = (d.request or {}).get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return "[erased]" if d.erased_at else "—"
    return prompt if len(prompt) <= PROMPT_CHARS else prompt[: PROMPT_CHARS - 1] + "…"
