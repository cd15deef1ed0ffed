"""Link the pictures of ``attnbench viz`` from a report, when a run has them (``<run>/viz/viz.json``).

The pictures are copied into ``<report>/viz/<run id>/`` so that the report folder stays whole when moved; a section
listing them is appended to ``summary.md`` and inserted into ``index.html``. No torch: it only copies files.
"""
from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Sequence

__all__ = ["link_viz"]


def link_viz(run_dirs: Sequence[str | Path], out: Path) -> list[Path]:
    """Copy each run's ``viz/`` into ``out/viz/<run>/`` and link its figures from summary.md and index.html."""
    found = []
    for run in map(Path, run_dirs):
        meta_path = run / "viz" / "viz.json"
        if not meta_path.is_file():
            continue
        dest = out / "viz" / run.name
        shutil.copytree(run / "viz", dest, dirs_exist_ok=True)
        found.append((run.name, json.loads(meta_path.read_text()), dest))
    if not found:
        return []
    md = ["", "## What each attention looks at (attnbench viz)", ""]
    items = []
    for run_id, meta, dest in found:
        md.append(f"Run `{run_id}`: `{meta.get('command', '')}` ({meta.get('date', '')}); "
                  f"[all figures](viz/{run_id}/index.html)")
        md.append("")
        for fig in meta.get("figures", []):
            if fig.startswith("side_by_side"):
                png = fig.rsplit(".", 1)[0] + ".png"
                md.append(f"![{fig}](viz/{run_id}/{png})")
                items.append(f"<figure><img src='viz/{html.escape(run_id)}/{html.escape(fig)}' alt='{html.escape(fig)}'>"
                             f"<figcaption>{html.escape(run_id)}: {html.escape(fig)}</figcaption></figure>")
        items.append(f"<p><a href='viz/{html.escape(run_id)}/index.html'>all viz figures of {html.escape(run_id)}</a></p>")
    with open(out / "summary.md", "a", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    page = out / "index.html"
    if page.is_file():
        text = page.read_text(encoding="utf-8")
        block = "<h2>What each attention looks at (attnbench viz)</h2>" + "".join(items)
        text = text.replace("</body>", block + "</body>") if "</body>" in text else text + block
        page.write_text(text, encoding="utf-8")
    return [dest for _, _, dest in found]
