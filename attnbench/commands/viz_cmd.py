"""``attnbench viz``: draw what each attention looks at over real images (see docs/viz.md)."""
from __future__ import annotations

import os
import shlex
import sys

import click

from ..core.errors import UserError
from ..core.hints import check_run_dir, closest, suggest_sibling, suggestion

__all__ = ["command"]

#: the photographs ``skimage:NAME`` may name: attnbench.viz.images.SKIMAGE_PHOTOS, repeated here because importing
#: attnbench.viz imports torch (tests/cli/test_cli_fail_fast.py keeps the two equal)
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat")
DEFAULT_SIZE = 224  # --official (checkpoints made at 224²) and --random


def _query(ctx, param, value: str) -> tuple[float, float]:
    """--query 'Y,X' as a pair of fractions (a click callback, so an error names the option)."""
    try:
        y, x = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected 'Y,X', fractions of the image in [0, 1), e.g. 0.4,0.6")
    if not (0 <= y < 1 and 0 <= x < 1):
        raise click.BadParameter(f"{value!r}: expected fractions in [0, 1)")
    return y, x


def draw_size(size, sources) -> int:
    """The input side for a run's trained models: the size they were trained at (one line of warning when
    ``--size`` asks for another; the models still run, region attentions pad, but what they show is not what
    they learnt)."""
    trained = sorted({s.img_size for s in sources})
    if size is None:
        return trained[0] if len(trained) == 1 else DEFAULT_SIZE
    if size not in trained:
        at = " / ".join(f"{t} px" for t in trained)
        click.echo(f"warning: --size {size} differs from the size the run's models were trained at ({at}); "
                   f"drawing at {size} px as asked", err=True)
    return size


def check_images(specs) -> None:
    """Each IMAGE names an existing file or folder, or a shipped photo; fails naming the first that does not, with
    the nearest name (the files of a folder are checked when they are read)."""
    for spec in specs:
        if spec.startswith("skimage:"):
            name = spec.split(":", 1)[1]
            if name not in SKIMAGE_PHOTOS:
                near = closest(name, SKIMAGE_PHOTOS)
                hint = suggestion(repr(f"skimage:{near}") if near else None)
                raise UserError(f"image {spec!r} is not one of the shipped photos{hint} (expected one of "
                                f"{', '.join('skimage:' + n for n in SKIMAGE_PHOTOS)})")
        elif not os.path.exists(spec):
            hint = suggestion(suggest_sibling(spec))
            raise UserError(f"image {spec}: no such file or folder{hint} (or use skimage:NAME, e.g. "
                            "skimage:astronaut)")


def check_sources(run_dir, official, random_) -> None:
    """Exactly one weight source, and the one given exists."""
    if sum(map(bool, (run_dir, official, random_))) != 1:
        raise UserError("viz: give exactly one of --run RUN_DIR, --official MODEL=CHECKPOINT, --random")
    if run_dir:
        check_run_dir(run_dir, "--run", "a run directory with accuracy cells")
    if official:
        if "=" not in official:
            raise UserError(f"--official {official!r}: expected MODEL=CHECKPOINT, e.g. debiformer_t=debi_tiny.pth")
        name, path = official.split("=", 1)
        if not os.path.isfile(path):
            raise UserError(f"--official {name}={path}: no such checkpoint file{suggestion(suggest_sibling(path))}")


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
@click.option("--size", type=int, default=None,
              help="Square input side the images are resized to [default: with --run the size the models were "
                   "trained at, else 224].")
@click.option("--query", default="0.5,0.5", show_default=True, callback=_query,
              help="Query point 'Y,X' as fractions of the image.")
@click.option("--stage", "stages", multiple=True, type=click.IntRange(min=1),
              help="Stages to draw, 1-based (repeat) [default: all].")
@click.option("--slot", type=click.Choice(["first", "last"]), default="last", show_default=True,
              help="Which attention slot of a stage to show.")
@click.option("--erf-images", type=click.IntRange(min=0), default=16, show_default=True,
              help="Average the ERF over up to this many of the images (0: no ERF).")
@click.option("--dpi", type=click.IntRange(min=1), default=90, show_default=True,
              help="Resolution of the PNG files.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder [default: RUN_DIR/viz with --run, else reports/viz].")
def command(images, run_dir, official, random_, attentions_, macro, size, query, stages, slot, erf_images, dpi,
            out_dir) -> None:
    """Draw routing, sampling points, agent maps, query attention and ERFs of each model over IMAGES.

    IMAGES are files, folders or photos scikit-image ships (skimage:astronaut, chelsea, coffee, rocket, cat);
    default skimage:astronaut. Figures go into --out as PNG and SVG with an index.html.
    """
    # every argument is checked before torch is imported (attnbench.viz imports it)
    check_sources(run_dir, official, random_)
    if size is not None and size < 16:
        raise UserError(f"--size {size}: expected an image side >= 16")
    check_images(images)

    from pathlib import Path

    from attnbench.viz import from_official, from_run, load_images, random_init, render

    if run_dir:
        sources = from_run(run_dir, attentions_ or None)
        size = draw_size(size, sources)
    elif official:
        name, path = official.split("=", 1)
        sources = from_official(name, path)
        size = size or DEFAULT_SIZE
    else:
        size = size or DEFAULT_SIZE
        sources = random_init(attentions_ or ("mhsa", "bra", "dat", "agent", "dbra"), macro, size)
    imgs = load_images(images or ("skimage:astronaut",), size)
    out = Path(out_dir) if out_dir else (Path(run_dir) / "viz" if run_dir else Path("reports") / "viz")
    written = render(sources, imgs, out, query, [s - 1 for s in stages] or None, slot, erf_images, dpi,
                     command="attnbench viz " + " ".join(shlex.quote(a) for a in sys.argv[2:]))
    click.echo(f"viz of {', '.join(s.label for s in sources)} on {imgs[0].name} ({len(imgs)} image(s))")
    click.echo(f"  {out / 'index.html'}  ({len(written)} files)")
