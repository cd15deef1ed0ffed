"""``index.html`` of a viz folder: every figure (SVG) with its caption, readable offline."""
from __future__ import annotations

import html
from pathlib import Path

__all__ = ["write_page"]


def write_page(out: Path, title: str, lines: list[str], figures: list[tuple[str, str]]) -> Path:
    """``figures``: (file name relative to ``out``, caption)."""
    body = "\n".join(f"<figure><a href='{html.escape(f)}'><img src='{html.escape(f)}' alt='{html.escape(c)}'></a>"
                     f"<figcaption>{html.escape(c)}</figcaption></figure>" for f, c in figures)
    info = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:1400px}img{max-width:100%}"
            "figure{margin:1.5em 0}figcaption{font-size:.9em;color:#444}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><ul>{info}</ul>{body}</body></html>")
    path = out / "index.html"
    path.write_text(text, encoding="utf-8")
    return path
