"""Side-by-side timing of ONNX int8 quantisation settings (issue 13).

For one model, exports the plain ``torch.onnx.export`` baseline, our fp32 ONNX artifact, and
int8 variants of our fp32 graph made with ONNX Runtime's static quantiser under different
settings; then times them all in ONE process through the runtime layer (batch 1, warm-up,
round-robin rounds, median) and optionally profiles where the time goes per op type.

    python scripts/int8_variants.py starnet_s1 --threads 2 --rounds 5 --iters 200 --profile
    python scripts/int8_variants.py starnet_digits --accuracy     # held-out accuracy per variant

Not a test: a measuring tool whose output goes in docs/low-precision.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

def calibration_inputs(model) -> np.ndarray:
    """Calibration inputs: the digits training split, or photos outside the validation set."""
    from staredge.exporters.quantize import DIGITS_MODEL, digits_training_inputs, model_preprocess_config, photo_calibration

    if getattr(model, "staredge_name", None) == DIGITS_MODEL:
        return digits_training_inputs(model_preprocess_config(model), 128)
    return photo_calibration(model)


def variants() -> dict[str, dict]:
    """Quantiser settings tried, by name (keyword arguments of ``quantize_variant``)."""
    return {
        "qdq-u8s8-pc": dict(fmt="qdq", act="u8", per_channel=True),  # the exporter's setting before this run
        "qdq-s8s8-pc": dict(fmt="qdq", act="s8", per_channel=True),
        "qdq-u8s8-pt": dict(fmt="qdq", act="u8", per_channel=False),
        "qdq-u8s8-pc-rr": dict(fmt="qdq", act="u8", per_channel=True, reduce_range=True),
        "qop-u8s8-pc": dict(fmt="qop", act="u8", per_channel=True),
        "qdq-u8s8-pc-convonly": dict(fmt="qdq", act="u8", per_channel=True, ops=("Conv", "Gemm", "MatMul")),
        "qdq-u8s8-pc-nodw": dict(fmt="qdq", act="u8", per_channel=True, skip_depthwise=True),
        "qdq-u8s8-pc-convonly-nodw": dict(fmt="qdq", act="u8", per_channel=True, ops=("Conv", "Gemm", "MatMul"),
                                          skip_depthwise=True),
        # u8 activations with a fixed zero point of 128 (ActivationSymmetric)
        "qdq-u8s8-pc-actsym": dict(fmt="qdq", act="u8", per_channel=True, extra={"ActivationSymmetric": True}),
        # the plain (BatchNorm not folded by us) export quantised with the same settings
        "plain-qdq-u8s8-pc": dict(fmt="qdq", act="u8", per_channel=True, source="plain-fp32"),
    }


#: ONNX Runtime session settings tried on the default int8 file (qdq-u8s8-pc), by name.
SESSION_VARIANTS = {
    "qdq-u8s8-pc/opt-extended": {"graph_optimization": "extended"},
    "qdq-u8s8-pc/opt-basic": {"graph_optimization": "basic"},
}


def quantize_variant(src: str, dst: str, calib: np.ndarray, input_name: str, *, fmt: str, act: str,
                     per_channel: bool, reduce_range: bool = False, ops: tuple[str, ...] | None = None,
                     skip_depthwise: bool = False, source: str | None = None,
                     extra: dict | None = None) -> None:
    """Quantise the fp32 file ``src`` into ``dst`` with one setting."""
    import onnx
    from onnxruntime import quantization as q

    from staredge.exporters.onnx import _CalibrationReader

    pre = dst + ".pre.onnx"
    q.quant_pre_process(src, pre, skip_symbolic_shape=True)
    exclude = []
    if skip_depthwise:
        graph = onnx.load(pre).graph
        for node in graph.node:
            if node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute):
                exclude.append(node.name)
    q.quantize_static(
        pre, dst, _CalibrationReader(input_name, calib),
        quant_format=q.QuantFormat.QDQ if fmt == "qdq" else q.QuantFormat.QOperator,
        per_channel=per_channel, reduce_range=reduce_range,
        activation_type=q.QuantType.QUInt8 if act == "u8" else q.QuantType.QInt8,
        weight_type=q.QuantType.QInt8, calibrate_method=q.CalibrationMethod.MinMax,
        op_types_to_quantize=list(ops) if ops else None, nodes_to_exclude=exclude, extra_options=dict(extra or {}),
    )
    os.remove(pre)


def conv_kinds(*paths: str) -> dict[str, str]:
    """Conv node (and output) name -> "depthwise KxK", "1x1" or "KxK" from the weights of fp32 ONNX files."""
    import onnx

    kinds: dict[str, str] = {}
    for path in paths:
        graph = onnx.load(path).graph
        shapes = {t.name: list(t.dims) for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Conv" and len(node.input) > 1 and len(shapes.get(node.input[1], [])) == 4:
                _, cin, kh, kw = shapes[node.input[1]]
                group = next((a.i for a in node.attribute if a.name == "group"), 1)
                kinds[node.name] = kinds[node.output[0]] = (
                    f"depthwise {kh}x{kw}" if group > 1 and cin == 1 else f"{kh}x{kw}")
        for node in graph.node:  # an activation fused into its conv is named after its output (NCHWc)
            if node.op_type in ("Clip", "Relu") and node.input and node.input[0] in kinds:
                kinds[node.output[0]] = kinds[node.input[0]]
    return kinds


def op_profile(path: str, x: np.ndarray, threads: int, kinds: dict[str, str], md, runs: int = 100) -> dict[str, float]:
    """Mean microseconds per inference by op type (convolutions split by ``kinds``), from
    ONNX Runtime's profiler (the runtime layer's ``profile_prefix`` option), 20 calls untimed."""
    from staredge.runtimes import load_backend

    with tempfile.TemporaryDirectory() as tmp:
        backend = load_backend(path, backend="onnxruntime", device="cpu", threads=threads, metadata=md,
                               profile_prefix=os.path.join(tmp, "p"))
        try:
            for _ in range(20 + runs):
                backend.forward(x)
            events = json.loads(Path(backend.session.end_profiling()).read_text())
        finally:
            backend.close()
    per_op: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            if "Conv" in op:
                node = e["name"][: -len("_kernel_time")].split("_token")[0].removesuffix("_nchwc")
                op = f"{op} {kinds.get(node, '?')}"
            per_op[op].append(e["dur"])
    calls = 20 + runs  # every op runs once per call: drop the first 20 calls' share
    return {k: sum(v[len(v) * 20 // calls:]) / runs for k, v in sorted(per_op.items(), key=lambda kv: -sum(kv[1]))}


def accuracy(path: str, x: np.ndarray, labels: np.ndarray, md) -> tuple[float, np.ndarray]:
    """(top-1 accuracy, predictions) of an ONNX file on a labelled set, through the runtime layer."""
    from staredge.runtimes import load_backend

    backend = load_backend(path, backend="onnxruntime", device="cpu", threads=2, metadata=md, batch=1)
    try:
        preds = [int(np.argmax(backend.forward(x[i : i + 1]))) for i in range(len(x))]
    finally:
        backend.close()
    return float(np.mean(np.asarray(preds) == labels)), np.asarray(preds)


def main() -> None:
    """Export, quantise, time side by side, print a JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--only", help="comma list of variant names")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--accuracy", action="store_true", help="digits model: held-out accuracy per variant")
    ap.add_argument("--out", default=None, help="keep the files here")
    args = ap.parse_args()

    import torch

    from staredge.bench.artifacts import ArtifactCache
    from staredge.bench.machine import load_average
    from staredge.bench.measure import time_run
    from staredge.bench.runners import fixed_input
    from staredge.exporters import export
    from staredge.metadata import ArtifactMetadata
    from staredge.runtimes import load_backend

    torch.manual_seed(0)
    if args.model == "starnet_digits":
        from staredge.models.digits import digits_model, digits_weights

        model = digits_model(digits_weights())
    else:
        from staredge.models import create

        model = create(args.model)
    size = tuple(model.pretrained_cfg.input_size)
    x = fixed_input(size)
    md = ArtifactMetadata(model=args.model, family="custom", input_size=list(size), dynamic_batch=False)
    root = Path(args.out or tempfile.mkdtemp(prefix="int8-variants-"))
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    files["plain-fp32"] = str(ArtifactCache(model, root / "cache").plain_onnx(x))
    rep = export(model, ["onnx"], str(root / "ours"), force=True, validate=False)
    files["ours-fp32"] = rep.artifacts[0].path
    calib = calibration_inputs(model)
    chosen = variants()
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in args.only.split(",")}
    for name, kw in chosen.items():
        dst = str(root / f"{name}.onnx")
        quantize_variant(files[kw.get("source") or "ours-fp32"], dst, calib, md.input_name, **kw)
        files[name] = dst
    options = {n: {} for n in files}
    if "qdq-u8s8-pc" in files:
        for name, opts in SESSION_VARIANTS.items():
            files[name], options[name] = files["qdq-u8s8-pc"], opts

    kinds = conv_kinds(files["plain-fp32"], files["ours-fp32"]) if args.profile else {}
    load_before = load_average()
    backends = {n: load_backend(p, backend="onnxruntime", device="cpu", threads=args.threads, metadata=md,
                                **options[n]) for n, p in files.items()}
    infers = {n: b.prepare(x) for n, b in backends.items()}
    medians: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.rounds):
        for n, f in infers.items():
            medians[n].append(time_run(f, args.warmup, args.iters).median_ms)
    load_after = load_average()
    base = float(np.median(medians["plain-fp32"]))
    summary = {
        "model": args.model, "threads": args.threads, "rounds": args.rounds, "iters": args.iters,
        "load_average_before": load_before, "load_average_after": load_after, "variants": {},
    }
    labelled = None
    ref_pred = None
    if args.accuracy:
        from staredge.exporters.quantize import labelled_set

        labelled = labelled_set(model)
        with torch.no_grad():
            ref_pred = model(torch.from_numpy(labelled[0])).argmax(1).numpy()
    for n, path in files.items():
        med = float(np.median(medians[n]))
        row = {"median_ms": round(med, 4), "round_medians": [round(v, 4) for v in medians[n]],
               "speedup_vs_plain": round(base / med, 3), "size_kb": round(os.path.getsize(path) / 1024, 1)}
        if args.profile and not options[n]:
            row["op_us"] = {k: round(v, 1) for k, v in op_profile(path, x, args.threads, kinds, md).items()}
        if labelled is not None:
            acc, pred = accuracy(path, labelled[0], labelled[1], md)
            row["heldout_accuracy"] = round(acc, 4)
            row["top1_agreement"] = round(float(np.mean(pred == ref_pred)), 4)
        summary["variants"][n] = row
    for b in backends.values():
        b.close()
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
