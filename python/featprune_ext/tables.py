"""Plain-text (Markdown) tables: the one formatter every report and CLI table uses."""

from __future__ import annotations

__all__ = ["markdown_table", "plain_table"]


def markdown_table(head: list, rows: list[list]) -> str:
    """A Markdown table; cells are str()-ed and columns padded to their widest cell."""
    cells = [[str(c) for c in head]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(cells[0]), "| " + " | ".join("-" * w for w in widths) + " |"] + [fmt(r) for r in cells[1:]])


def plain_table(head: list, rows: list[list], right_from: int = 1) -> str:
    """A console table without rules between columns: two spaces apart, columns from
    `right_from` on right-aligned (numbers), a dashed line under the head."""
    cells = [[str(c) for c in head]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < right_from else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
