"""``attnbench viz``: draw what each attention looks at over real images (see docs/viz.md)."""
from __future__ import annotations

import shlex
import sys

import click

__all__ = ["command"]


def _query(value: str) -> tuple[float, float]:
    try:
        y, x = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected 'Y,X', fractions of the image in [0, 1), e.g. 0.4,0.6")
    if not (0 <= y < 1 and 0 <= x < 1):
        raise click.BadParameter(f"{value!r}: expected fractions in [0, 1)")
    return y, x


@click.command("viz")
@click.argument("images", nargs=-1, metavar="[IMAGE|FOLDER|skimage:NAME]...")
@click.option("--run", "run_dir", type=click.Path(file_okay=False), default=None,
              help="Trained weights: the accuracy cells of this run directory.")
@click.option("--official", default=None, metavar="MODEL=CHECKPOINT",
              help="An official checkpoint loaded into a registered model, e.g. debiformer_t=debi_tiny.pth.")
@click.option("--random", "random_", is_flag=True, help="Randomly initialised swap models (labelled as such).")
@click.option("--attention", "attentions_", multiple=True,
              help="Only these attentions (repeat) [default: all in the run; the five with --random].")
@click.option("--macro", default="tiny", show_default=True, help="Macro design of the --random models.")
@click.option("--size", type=int, default=224, show_default=True, help="Square input side the images are resized to.")
@click.option("--query", default="0.5,0.5", show_default=True, help="Query point 'Y,X' as fractions of the image.")
@click.option("--stage", "stages", multiple=True, type=int, help="Stages to draw, 1-based (repeat) [default: all].")
@click.option("--slot", type=click.Choice(["first", "last"]), default="last", show_default=True,
              help="Which attention slot of a stage to show.")
@click.option("--erf-images", type=int, default=16, show_default=True,
              help="Average the ERF over up to this many of the images (0: no ERF).")
@click.option("--dpi", type=int, default=90, show_default=True, help="Resolution of the PNG files.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder [default: RUN_DIR/viz with --run, else reports/viz].")
def command(images, run_dir, official, random_, attentions_, macro, size, query, stages, slot, erf_images, dpi,
            out_dir) -> None:
    """Draw routing, sampling points, agent maps, query attention and ERFs of each model over IMAGES.

    IMAGES are files, folders or photos scikit-image ships (skimage:astronaut, chelsea, coffee, rocket, cat);
    default skimage:astronaut. Figures go into --out as PNG and SVG with an index.html.
    """
    from pathlib import Path

    from attnbench.errors import UserError
    from attnbench.viz import from_official, from_run, load_images, random_init, render

    if sum(map(bool, (run_dir, official, random_))) != 1:
        raise UserError("viz: give exactly one of --run RUN_DIR, --official MODEL=CHECKPOINT, --random")
    if size < 16:
        raise UserError(f"--size {size}: expected an image side >= 16")
    q = _query(query)
    if run_dir:
        sources = from_run(run_dir, attentions_ or None)
    elif official:
        if "=" not in official:
            raise UserError(f"--official {official!r}: expected MODEL=CHECKPOINT, e.g. debiformer_t=debi_tiny.pth")
        name, path = official.split("=", 1)
        sources = from_official(name, path)
    else:
        sources = random_init(attentions_ or ("mhsa", "bra", "dat", "agent", "dbra"), macro, size)
    imgs = load_images(images or ("skimage:astronaut",), size)
    out = Path(out_dir) if out_dir else (Path(run_dir) / "viz" if run_dir else Path("reports") / "viz")
    written = render(sources, imgs, out, q, [s - 1 for s in stages] or None, slot, erf_images, dpi,
                     command="attnbench viz " + " ".join(shlex.quote(a) for a in sys.argv[2:]))
    click.echo(f"viz of {', '.join(s.label for s in sources)} on {imgs[0].name} ({len(imgs)} image(s))")
    click.echo(f"  {out / 'index.html'}  ({len(written)} files)")
