"""``staredge classify ARTIFACT IMAGE...``: top-k labels for images with any artifact."""

from __future__ import annotations

import argparse

from staredge.commands import _args


#: Image file suffixes taken from a folder given as IMAGE.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``classify`` subcommand."""
    p = sub.add_parser("classify", help="classify images (files or folders) with an exported artifact (any format)",
                       description="Top-k labels for images with any exported image artifact. IMAGE is a file or a "
                                   "folder (its images, sorted by name). Results as tables, --json [FILE] or --csv FILE.")
    p.add_argument("artifact", help=".onnx, OpenVINO .xml (or its folder), .tflite, .mlpackage or checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    p.add_argument("--top-k", type=_args.count_type("--top-k"), default=5, help="labels to show per image (default 5)")
    _args.add_backends(p, multiple=False)
    _args.add_device(p, "auto")
    _args.add_threads(p)
    p.add_argument("--model", dest="model_name", metavar="NAME",
                   help="architecture of a PyTorch checkpoint that carries no StarEdge metadata")
    p.add_argument("--num-classes", type=_args.count_type("--num-classes"), metavar="N",
                   help="head size of such a checkpoint (e.g. fine-tuned)")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line in index order (replaces the artifact's)")
    _args.add_json(p, "the results")
    p.add_argument("--csv", metavar="FILE", help="write one line per image and rank (image, rank, label, probability)")
    _args.add_force(p, "a --json or --csv FILE that already exists")
    p.set_defaults(func=run)


def expand_images(items: list[str]) -> list[str]:
    """Files as given; a folder becomes its image files (by suffix, sorted by name). A folder
    without images, or a path that does not exist, is a ConfigError naming it."""
    from pathlib import Path

    from staredge.errors import ConfigError

    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ConfigError(f"{item} is a folder without images ({', '.join(IMAGE_SUFFIXES)})")
            out.extend(found)
        elif not p.exists():
            raise ConfigError(f"{item}: no such image file or folder")
        else:
            out.append(item)
    return out


def _refuse_language_model(path: str) -> None:
    """A text-generation artifact given to classify: point a CLI user at ``staredge generate``."""
    from staredge.errors import ConfigError
    from staredge.formats import TEXT_GENERATION
    from staredge.metadata import read_metadata

    try:
        meta = read_metadata(path)
    except Exception:  # noqa: BLE001 - no or damaged metadata: the Predictor reports it
        return
    if meta.task == TEXT_GENERATION:
        raise ConfigError(f"{path} is a language model ({meta.model}), not an image classifier; run it with "
                          f"`staredge generate {path} \"your prompt\"`")


def _source(args: argparse.Namespace):
    """The artifact path, or a module built from a checkpoint with --model / --num-classes."""
    from staredge.errors import ConfigError
    from staredge.formats import CHECKPOINT_FORMAT, detect_format
    from staredge.metadata import MetadataError, read_safetensors_text

    try:
        fmt = detect_format(args.artifact).name
    except MetadataError:
        fmt = None  # the Predictor reports it
    if fmt != CHECKPOINT_FORMAT:
        if args.model_name or args.num_classes is not None:
            raise ConfigError(f"--model and --num-classes are for PyTorch checkpoints; {args.artifact} carries its "
                              f"model in its metadata")
        return args.artifact
    if args.model_name is None:
        try:
            carries = read_safetensors_text(args.artifact) is not None
        except Exception:  # noqa: BLE001 - a damaged file: the backend reports it properly
            carries = True
        if carries and args.num_classes is None:
            return args.artifact
        raise ConfigError(f"{args.artifact} is a PyTorch checkpoint without StarEdge metadata: name its "
                          f"architecture with --model NAME (e.g. --model starnet_s1), and its head size with "
                          f"--num-classes N if it was fine-tuned")
    from staredge.models import create

    return create(args.model_name, checkpoint=args.artifact, num_classes=args.num_classes)


def run(args: argparse.Namespace) -> int:
    """Classify every image and print one ranked list per image (or JSON / CSV)."""
    from staredge.predictor import Predictor

    _args.check_json_target(args)  # before any work
    if args.csv:
        from staredge.fileio import check_output_file

        check_output_file(args.csv, force=args.force, flag="--csv")
    from pathlib import Path

    if not Path(args.artifact).exists():  # the artifact first: the Predictor's own "no such file" error
        Predictor(args.artifact, device=args.device)
    images = expand_images(list(args.images))
    _refuse_language_model(args.artifact)
    predictor = Predictor(_source(args), device=args.device, threads=args.threads, backend=args.backends,
                          labels=args.labels)
    if predictor.metadata.extra.get("pretrained") is False:
        from staredge.quiet import notice

        notice(f"{args.artifact} was exported from {predictor.metadata.model} with random weights (no checkpoint, "
               f"no --pretrained): its predictions mean nothing", getattr(args, "capture", None))
    rankings = predictor.classify(images, top_k=args.top_k)
    if args.csv:
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["image", "rank", "label", "probability"])
        for img, ranking in zip(images, rankings):
            for rank, (lab, prob) in enumerate(ranking, 1):
                writer.writerow([img, rank, lab, f"{prob:.6f}"])
        _args.write_output_file(args.csv, buf.getvalue(), force=args.force, flag="--csv")
    doc = {
        "artifact": args.artifact,
        "backend": predictor.backend.name,
        "device": predictor.backend.device,
        "results": [
            {"image": img, "top_k": [{"label": lab, "probability": p} for lab, p in ranking]}
            for img, ranking in zip(images, rankings)
        ],
    }
    if _args.emit_json(args, doc):
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for img, ranking in zip(images, rankings):
        table = Table(title=f"{img}  ({predictor.metadata.model}, {predictor.backend.name} on {predictor.backend.device})",
                      title_justify="left")
        table.add_column("rank", justify="right")
        table.add_column("label")
        table.add_column("probability", justify="right")
        for rank, (label, prob) in enumerate(ranking, 1):
            table.add_row(str(rank), label, f"{prob:.4f}")
        console.print(table)
    return 0
