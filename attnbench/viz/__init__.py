"""``attnbench viz``: what each attention looks at, drawn over real images.

Routing (BRA, DBRA), sampling points and offsets (DAT, DBRA), agent maps (agent attention, DBRA's agents), the
attention of a chosen query token (all five) and effective receptive fields, per stage of a backbone, from the
records of :func:`attentions.inspect`. See ``docs/viz.md``.
"""
from .images import SKIMAGE_PHOTOS, VizImage, load_images
from .render import render
from .weights import ModelSource, from_official, from_run, locate_checkpoint, random_init

__all__ = ["render", "load_images", "VizImage", "SKIMAGE_PHOTOS", "ModelSource", "from_run", "from_official",
           "random_init", "locate_checkpoint"]
