"""``staredge classify ARTIFACT IMAGE...``: top-k labels for images with any artifact."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``classify`` subcommand."""
    p = sub.add_parser("classify", help="classify images with an exported artifact (any format)")
    p.add_argument("artifact", help=".onnx, OpenVINO .xml (or its folder), .tflite, .mlpackage or checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--top-k", type=int, default=5, help="labels to show per image (default 5)")
    p.add_argument("--backends", "--backend", dest="backend", metavar="RUNTIME",
                   help="force a runtime (onnxruntime/ort, openvino/ov, litert/tflite, coreml, pytorch); "
                   "it must run the artifact's format")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device (default auto)")
    p.add_argument("--threads", type=int, default=None, help="runtime intra-op threads")
    p.add_argument("--model", dest="model_name", metavar="NAME",
                   help="architecture of a PyTorch checkpoint that carries no StarEdge metadata")
    p.add_argument("--num-classes", type=int, metavar="N", help="head size of such a checkpoint (e.g. fine-tuned)")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line in index order (replaces the artifact's)")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="write results as JSON to FILE ('-' or no FILE: print them instead of tables)")
    p.set_defaults(func=run)


def _source(args: argparse.Namespace):
    """The artifact path, or a module built from a checkpoint with --model / --num-classes."""
    from staredge.errors import ConfigError
    from staredge.formats import detect_format
    from staredge.metadata import MetadataError, read_safetensors_text

    try:
        fmt = detect_format(args.artifact).name
    except MetadataError:
        fmt = None  # the Predictor reports it
    if fmt != "pytorch":
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
    """Classify every image and print one ranked list per image."""
    from staredge.fileio import atomic_write_text
    from staredge.predictor import Predictor

    predictor = Predictor(_source(args), device=args.device, threads=args.threads, backend=args.backend,
                          labels=args.labels)
    if predictor.metadata.extra.get("pretrained") is False:
        from staredge.quiet import notice

        notice(f"{args.artifact} was exported from {predictor.metadata.model} with random weights (no checkpoint, "
               f"no --pretrained): its predictions mean nothing", getattr(args, "capture", None))
    rankings = predictor.classify(list(args.images), top_k=args.top_k)
    if args.json:
        out = {
            "artifact": args.artifact,
            "backend": predictor.backend.name,
            "device": predictor.backend.device,
            "results": [
                {"image": img, "top_k": [{"label": lab, "probability": p} for lab, p in ranking]}
                for img, ranking in zip(args.images, rankings)
            ],
        }
        text = json.dumps(out, indent=2)
        if args.json == "-":
            print(text)
            return 0
        atomic_write_text(args.json, text + "\n")
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for img, ranking in zip(args.images, rankings):
        table = Table(title=f"{img}  ({predictor.metadata.model}, {predictor.backend.name} on {predictor.backend.device})",
                      title_justify="left")
        table.add_column("rank", justify="right")
        table.add_column("label")
        table.add_column("probability", justify="right")
        for rank, (label, prob) in enumerate(ranking, 1):
            table.add_row(str(rank), label, f"{prob:.4f}")
        console.print(table)
    return 0
