"""The PDF report's layout pieces: paragraph styles, fonts and tables (reportlab)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import matplotlib
from reportlab.lib import colors  # type: ignore[import-untyped]
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet  # type: ignore[import-untyped]
from reportlab.lib.units import mm  # type: ignore[import-untyped]
from reportlab.pdfbase import pdfmetrics  # type: ignore[import-untyped]
from reportlab.pdfbase.ttfonts import TTFont  # type: ignore[import-untyped]
from reportlab.platypus import Paragraph, Table, TableStyle  # type: ignore[import-untyped]


class Styles:
    def __init__(self) -> None:
        self.font, bold = fonts()
        base = getSampleStyleSheet()
        self.title = ParagraphStyle("t", parent=base["Title"], fontName=bold, fontSize=17)
        self.h2 = ParagraphStyle(
            "h2", parent=base["Heading2"], fontName=bold, spaceBefore=10, keepWithNext=1
        )
        self.h3 = ParagraphStyle("h3", parent=base["Heading4"], fontName=bold, keepWithNext=1)
        self.body = ParagraphStyle("b", parent=base["BodyText"], fontName=self.font, fontSize=9)
        self.small = ParagraphStyle("s", parent=self.body, fontSize=7, leading=8.5)
        # ids and hashes on one line (Courier is 0.6 em wide): a 36-character decision id
        # at 5.8 pt is 125 pt (a 50 mm column less padding: 130 pt); a sha256 at 5.4 pt is
        # 207 pt (82 mm less padding: 220 pt)
        self.mono = ParagraphStyle("m", parent=self.small, fontName="Courier", fontSize=5.8)
        self.hash = ParagraphStyle("h", parent=self.small, fontName="Courier", fontSize=5.4)
        self.bold = bold


def fonts() -> tuple[str, str]:
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


def small(styles: Styles, text: str) -> Paragraph:
    return Paragraph(escape(text), styles.small)


def para(styles: Styles, markup: str) -> Paragraph:
    return Paragraph(markup, styles.body)


def table(styles: Styles, rows: list[list[Any]], widths: list[float] | None = None) -> Table:
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


def count_table(styles: Styles, label: str, counts: Counter[str], total: int) -> Any:
    if not counts:
        return para(styles, "None.")
    rows: list[list[Any]] = [[label, "Decisions", "Share"]]
    for key, n in counts.most_common():
        rows.append([Paragraph(escape(key), styles.small), f"{n:,}", f"{100 * n / total:.1f}%"])
    return table(styles, rows, [90 * mm, 25 * mm, 20 * mm])


def facts_table(styles: Styles, facts: list[tuple[str, str]], markup_rows: int = 0) -> Table:
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
