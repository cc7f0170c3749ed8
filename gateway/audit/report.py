"""The PDF audit report a compliance team hands to a regulator or a client.

One streaming pass over the decisions gathers counts (and at most ``refused_cap`` refused or
filtered rows); reportlab lays the report out and matplotlib (Agg, no pyplot state) draws
the charts, embedded as PNG.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any
from xml.sax.saxutils import escape

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from reportlab.lib import colors  # type: ignore[import-untyped]
from reportlab.lib.pagesizes import A4  # type: ignore[import-untyped]
from reportlab.lib.units import mm  # type: ignore[import-untyped]
from reportlab.platypus import (  # type: ignore[import-untyped]
    Image,
    Paragraph,
    SimpleDocTemplate,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.audit.export import flagged_categories
from gateway.audit.report_chart import bin_start, time_bins, time_chart
from gateway.audit.report_layout import (
    Styles,
    count_table,
    facts_table,
    para,
    small,
    table,
)
from gateway.audit.search import iso_utc
from gateway.auth.names import Names
from gateway.db.models import Decision, PolicyVersion

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
    "cancelled": "#cfd8dc",
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
    by_tenant: Counter[str] = field(default_factory=Counter)  # tenant ids
    per_hour: dict[datetime, Counter[str]] = field(default_factory=dict)  # UTC hour -> outcomes
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
        self.by_tenant[d.tenant_id] += 1
        self.per_hour.setdefault(bin_start(when, "hour"), Counter())[outcome] += 1
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
                    (
                        d.id,
                        _time(when)[:16],
                        label,
                        ", ".join(categories) or "—",
                        d.model_id,
                        _prompt(d),
                    )
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
    names: Names | None = None,
    approvals: Mapping[str, str] | None = None,
) -> None:
    """Write the report for ``decisions`` (one pass) covering ``period`` to ``out``; tenants
    appear by name (``names``)."""
    names = names or Names()
    totals = aggregate(decisions, refused_cap=refused_cap)
    generated = generated_at or datetime.now(UTC)
    styles = Styles()
    story: list[Any] = [
        Paragraph(escape(title), styles.title),
        facts_table(
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
        count_table(styles, "Outcome", totals.by_outcome, totals.total),
    ]
    if totals.total:
        story += [
            Paragraph("Decisions over time", styles.h2),
            _chart_over_time(totals, period),
            Paragraph("Flagged categories", styles.h2),
            _chart_categories(totals) if totals.by_category else para(styles, "None flagged."),
        ]
    for heading, label, counts in (
        ("By category (a decision may count under several)", "Category", totals.by_category),
        ("By tenant", "Tenant", _named(totals.by_tenant, names)),
        ("By model", "Model", totals.by_model),
        ("By licence", "Licence", totals.by_licence),
        ("By intended use", "Intended use", totals.by_use),
    ):
        story += [Paragraph(heading, styles.h3), count_table(styles, label, counts, totals.total)]
    story += _versions_section(styles, totals, approvals or {})
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


def policy_approvals(session: Session, names: Names) -> dict[str, str]:
    """Per published policy version's content hash: ``v<id>, <approver's name>``."""
    rows = session.execute(
        select(PolicyVersion.sha256, PolicyVersion.id, PolicyVersion.decided_by).where(
            PolicyVersion.status.in_(("published", "retired"))
        )
    )
    return {sha: f"v{vid}, {names.key(by) or '—'}" for sha, vid, by in rows}


def _versions_section(
    styles: Styles, totals: ReportTotals, approvals: Mapping[str, str]
) -> list[Any]:
    rows: list[list[Any]] = [
        ["Policy version (content hash)", "First seen", "Last seen", "Decisions", "Approved by"]
    ]
    for version, span in sorted(totals.versions.items(), key=lambda kv: kv[1].first):
        cells = [
            _time(span.first),
            _time(span.last),
            f"{span.decisions:,}",
            approvals.get(version, "—"),
        ]
        rows.append([Paragraph(escape(version), styles.hash)] + [small(styles, c) for c in cells])
    widths = [82 * mm, 25 * mm, 25 * mm, 18 * mm, 24 * mm]
    return [
        Paragraph("Policy versions in force", styles.h2),
        table(styles, rows, widths) if len(rows) > 1 else para(styles, "None."),
    ]


def _refused_section(styles: Styles, totals: ReportTotals, cap: int) -> list[Any]:
    out: list[Any] = [Paragraph("Refused and filtered requests", styles.h2)]
    if not totals.refused_total:
        return [*out, para(styles, "None in this period.")]
    if totals.refused_total > len(totals.refused):
        out.append(
            para(
                styles,
                f"Showing the first {len(totals.refused):,} of {totals.refused_total:,} "
                f"(cap {cap:,}); the CSV or JSON Lines export lists them all.",
            )
        )
    rows: list[list[Any]] = [["Decision", "Time (UTC)", "Outcome", "Categories", "Model", "Prompt"]]
    for decision_id, *cells in totals.refused:
        rows.append(
            [Paragraph(escape(decision_id), styles.mono)] + [small(styles, c) for c in cells]
        )
    widths = [50 * mm, 28 * mm, 25 * mm, 20 * mm, 20 * mm, 31 * mm]
    return [*out, table(styles, rows, widths)]


def _verification_section(styles: Styles, verification: dict[str, Any] | None) -> list[Any]:
    out: list[Any] = [Paragraph("Audit trail verification", styles.h2)]
    if verification is None:
        return [
            *out,
            para(
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
                f"{_mismatches(int(verification.get('row_error_count', 0)))}",
            )
        )
    else:
        facts.append(("Decision records", "not checked against their events"))
    out.append(facts_table(styles, facts, markup_rows=1))
    errors = verification.get("row_errors") or []
    if errors:
        count = int(verification.get("row_error_count") or len(errors))
        shown = errors[:ROW_ERRORS_SHOWN]
        out.append(
            para(
                styles,
                f"<b>Stored values that do not match the audit trail</b> "
                f"({len(shown):,} of {count:,} shown): the records in this report may have "
                "been altered.",
            )
        )
        rows: list[list[Any]] = [["Decision", "Table", "Field", "Why"]]
        for e in shown:
            cells = (e.get("table"), e.get("field"), e.get("reason"))
            decision = Paragraph(escape(str(e.get("decision_id") or "—")), styles.mono)
            rows.append([decision] + [small(styles, str(c)) for c in cells])
        out.append(table(styles, rows, [50 * mm, 20 * mm, 44 * mm, 60 * mm]))
    return out


# -- charts ----------------------------------------------------------------------------------


def _chart_over_time(
    totals: ReportTotals, period: tuple[datetime | None, datetime | None]
) -> Image:
    bins = time_bins(totals.per_hour, period)
    outcomes = [o for o, _ in totals.by_outcome.most_common()]
    return _png(time_chart(bins, outcomes, _OUTCOME_COLOURS), 170 * mm)


def _named(counts: Counter[str], names: Names) -> Counter[str]:
    out: Counter[str] = Counter()
    for tenant_id, n in counts.items():
        out[names.tenant(tenant_id) or tenant_id] += n
    return out


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


def _mismatches(n: int) -> str:
    return f"{n:,} mismatch" + ("" if n == 1 else "es")
