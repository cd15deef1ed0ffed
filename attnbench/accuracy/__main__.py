"""``python -m attnbench.accuracy``: train one model outside a suite, or write the synthetic dataset.

Examples::

    # DeBiFormer-T macro design with DAT++ in every slot, Imagenette at 224², 4 GPUs:
    torchrun --nproc_per_node 4 -m attnbench.accuracy train --attention dat --data /data/imagenet \\
        --subset imagenette --epochs 100 --batch-size 128 --device cuda --work-dir runs/acc
    # the synthetic dataset for a CPU demo:
    python -m attnbench.accuracy synthetic data/synthetic --size 64

``train`` prints the result as JSON (rank 0) and writes it to ``--result`` when given. The accuracy metric runs
``train --job FILE --result FILE`` under torchrun when ``settings.accuracy.nproc_per_node`` > 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train and evaluate one model (torchrun-aware)")
    p.add_argument("--job", help="a job JSON written by the accuracy metric (other model/data flags ignored)")
    p.add_argument("--result", help="write the result JSON here (rank 0)")
    p.add_argument("--attention", default="mhsa", help="attention in every slot (model 'swap'), default mhsa")
    p.add_argument("--config", default="{}", help="JSON config overrides for every slot, e.g. '{\"impl\": \"torch\"}'")
    p.add_argument("--model", default="swap", help="'swap', or a registered model (may contain {attention})")
    p.add_argument("--macro", default="debiformer_t", help="macro design of model 'swap'")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--data", help="ImageNet-layout root (default $ATTNBENCH_DATA)")
    p.add_argument("--subset", default="imagenette", help="imagenette, imagenet100, all, or a class-list file")
    p.add_argument("--max-per-class", type=int)
    p.add_argument("--val-max-per-class", type=int)
    p.add_argument("--synthetic", action="store_true", help="use the generated dataset (img-size pixels)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="per process")
    p.add_argument("--lr", type=float, help="peak lr for a total batch of 512 (linear scaling)")
    p.add_argument("--recipe", default="{}", help="JSON of further Recipe fields")
    p.add_argument("--work-dir", help="checkpoints and generated data (default runs/accuracy)")
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_threads, default="auto",
                   help="torch CPU threads: a positive int, or 'auto' (default: the fastest here, measured)")


def _threads(text: str):
    """``--threads``: an int, or the word ``auto`` (checked with the suite setting's rule)."""
    from .threads import check_threads

    value = int(text) if text.strip().lstrip("-").isdigit() else text.strip()
    try:
        check_threads(value, "--threads")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _job_from_args(args: argparse.Namespace):
    from .job import Job, make_job

    if args.job:
        return Job(**json.loads(Path(args.job).read_text()))
    recipe = json.loads(args.recipe)
    for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr)):
        if value is not None:
            recipe[key] = value
    settings: dict[str, Any] = {"model": args.model, "macro": args.macro, "img_size": args.img_size,
                                "subset": args.subset, "synthetic": args.synthetic, "recipe": recipe,
                                "resume": not args.no_resume, "threads": args.threads}
    for key, value in (("data_root", args.data), ("max_per_class", args.max_per_class),
                       ("val_max_per_class", args.val_max_per_class), ("work_dir", args.work_dir)):
        if value is not None:
            settings[key] = value
    return make_job(settings, args.attention, json.loads(args.config), args.device, args.seed)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnbench.accuracy", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    syn = sub.add_parser("synthetic", help="write the synthetic ImageFolder (8 spatial classes)")
    syn.add_argument("root")
    syn.add_argument("--size", type=int, default=64)
    syn.add_argument("--train-per-class", type=int, default=100)
    syn.add_argument("--val-per-class", type=int, default=25)
    syn.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "synthetic":
        from .synthetic import write_synthetic_imagefolder

        root = write_synthetic_imagefolder(args.root, args.train_per_class, args.val_per_class, args.size, args.seed)
        print(root)
        return 0
    from .job import run_job

    job = _job_from_args(args)
    result = run_job(job, log=lambda line: print(line, file=sys.stderr, flush=True))
    if result is not None:
        text = json.dumps(result, default=str)
        if args.result:
            Path(args.result).write_text(text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
