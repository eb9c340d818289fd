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
    p.add_argument("--backend", help="force a runtime (onnxruntime, openvino, litert, coreml, pytorch)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device (default auto)")
    p.add_argument("--threads", type=int, default=None, help="runtime intra-op threads")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Classify every image and print one ranked list per image."""
    from staredge.predictor import Predictor

    predictor = Predictor(args.artifact, device=args.device, threads=args.threads, backend=args.backend)
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
        print(json.dumps(out, indent=2))
        return 0
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
