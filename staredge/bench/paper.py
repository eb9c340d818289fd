"""The papers' published latencies, labelled with the hardware they were measured on.

Params, MACs and top-1 come from the model registry (``PaperFigures``); only the
latencies live here, because they belong to a platform, not to a model. Sources: StarNet
paper, Tables 6 and 8, and its supplementary material, Tables 13/14; EfficientFormerV2
paper and its supplementary material. See docs/benchmarks.md.
"""

from __future__ import annotations

#: Platform labels exactly as reports print them (the papers' hardware and runtime).
STARNET_CPU = "paper: E5-2680 v4 CPU, 4 threads, ONNX Runtime"
STARNET_GPU = "paper: P100 GPU, ONNX Runtime"
STARNET_MOBILE = "paper: iPhone13, CoreML"
EFFICIENTFORMERV2_MOBILE = "paper: iPhone 12, CoreML"

#: model -> variant ("star" or "sum") -> platform label -> latency (ms).
PAPER_LATENCY_MS: dict[str, dict[str, dict[str, float]]] = {
    "starnet_s1": {
        "star": {STARNET_MOBILE: 0.7, STARNET_GPU: 2.3, STARNET_CPU: 4.3},
        "sum": {STARNET_MOBILE: 0.7, STARNET_GPU: 2.3, STARNET_CPU: 3.8},
    },
    "starnet_s2": {
        "star": {STARNET_MOBILE: 0.7, STARNET_GPU: 2.0, STARNET_CPU: 4.5},
        "sum": {STARNET_MOBILE: 0.8, STARNET_GPU: 2.0, STARNET_CPU: 4.2},
    },
    "starnet_s3": {
        "star": {STARNET_MOBILE: 0.9, STARNET_GPU: 2.7, STARNET_CPU: 6.7},
        "sum": {STARNET_MOBILE: 0.9, STARNET_GPU: 2.7, STARNET_CPU: 5.9},
    },
    "starnet_s4": {
        "star": {STARNET_MOBILE: 1.0, STARNET_GPU: 3.7, STARNET_CPU: 9.4},
        "sum": {STARNET_MOBILE: 1.1, STARNET_GPU: 3.7, STARNET_CPU: 8.4},
    },
    "starnet_s050": {"star": {STARNET_MOBILE: 0.5, STARNET_GPU: 1.0, STARNET_CPU: 1.3}},
    "starnet_s100": {"star": {STARNET_MOBILE: 0.6, STARNET_GPU: 1.3, STARNET_CPU: 2.3}},
    "starnet_s150": {"star": {STARNET_MOBILE: 0.6, STARNET_GPU: 1.5, STARNET_CPU: 2.6}},
    "efficientformerv2_s0": {"star": {EFFICIENTFORMERV2_MOBILE: 0.9}},
    "efficientformerv2_s1": {"star": {EFFICIENTFORMERV2_MOBILE: 1.1}},
    "efficientformerv2_s2": {"star": {EFFICIENTFORMERV2_MOBILE: 1.6}},
    "efficientformerv2_l": {"star": {EFFICIENTFORMERV2_MOBILE: 2.7}},
}

#: Short labels for narrow displays (the terminal table).
SHORT_LABELS = {
    STARNET_CPU: "paper E5 4thr",
    STARNET_GPU: "paper P100",
    STARNET_MOBILE: "paper iPhone13",
    EFFICIENTFORMERV2_MOBILE: "paper iPhone12",
}

#: The order paper columns appear in tables.
PAPER_PLATFORMS = (STARNET_CPU, STARNET_GPU, STARNET_MOBILE, EFFICIENTFORMERV2_MOBILE)


def paper_latencies(model: str, variant: str = "star") -> dict[str, float]:
    """The papers' latencies (ms) for ``model``/``variant`` by platform label (may be empty)."""
    return dict(PAPER_LATENCY_MS.get(model, {}).get(variant, {}))


def paper_figures(model: str) -> dict[str, float | str | None]:
    """Params (M), MACs (M), top-1 and source the registry holds for ``model`` (Nones if unknown)."""
    from staredge.errors import UnknownModelError
    from staredge.models import get_entry

    try:
        paper = get_entry(model).paper
    except UnknownModelError:
        return {"params_m": None, "macs_m": None, "top1": None, "source": ""}
    return {"params_m": paper.params_m, "macs_m": paper.macs_m, "top1": paper.top1, "source": paper.source}
