"""What a latency was measured on: CPU model, cores, vector extensions, load, versions.

Latencies mean little without the machine; every results file carries this record.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

from staredge.formats import FORMATS, RUNTIMES
from staredge.threads import count_physical_cores, default_threads  # noqa: F401  (count_physical_cores re-exported)

#: CPU flags that change which kernels runtimes pick (reported when present).
INTERESTING_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
)

#: Distribution names of the runtimes and converters whose versions results record
#: (both from the format table: each format's converters, each runtime's own).
RUNTIME_PACKAGES = tuple(dict.fromkeys(
    ("staredge", "torch", "numpy")
    + tuple(d for spec in FORMATS.values() for d in spec.converter_distributions())
    + tuple(d for spec in RUNTIMES.values() for d in spec.distributions)
))


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU model, physical cores per socket and interesting flags from /proc/cpuinfo text."""
    model = None
    cores = None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        value = value.strip()
        if key == "model name" and model is None:
            model = value
        elif key == "cpu cores" and cores is None and value.isdigit():
            cores = int(value)
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {
        "cpu_model": model,
        "physical_cores": cores,
        "cpu_flags": [f for f in INTERESTING_FLAGS if f in flags],
    }


def physical_cores() -> int:
    """Physical cores this process may use (at least 1): the default thread count
    (:func:`staredge.threads.default_threads`, the one rule every engine follows)."""
    return default_threads()


def package_versions(names: tuple[str, ...] = RUNTIME_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (absent packages are left out)."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict[str, Any]:
    """A JSON-serialisable description of this machine and its runtime versions."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "python": sys.version.split()[0],
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": platform.processor() or None,
        "physical_cores": None,
        "cpu_flags": [],
        "load_average": load_average(),
        "gpus": [],
        "versions": package_versions(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            info.update({k: v for k, v in parse_cpuinfo(fh.read()).items() if v})
    except OSError:
        pass  # not Linux: platform.processor() above is the best we have
    info["gpus"] = cuda_device_names()
    info["torch_cpu_capability"] = torch_cpu_capability()
    return info


def torch_cpu_capability() -> str | None:
    """The vector ISA PyTorch dispatches to here (e.g. ``AVX2``, ``AVX512``), if it says."""
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # older torch without the query: not worth failing a benchmark for
        return None


def cuda_device_names() -> list[str]:
    """Names of the CUDA devices PyTorch can see (empty without CUDA)."""
    try:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken CUDA install must not stop a CPU benchmark
        return []
    return []


def short_machine_label(info: dict[str, Any]) -> str:
    """A short human label, e.g. ``AMD EPYC, 2 cores, AVX-512``, for table headings."""
    if info.get("label"):
        return str(info["label"])
    parts = [info.get("cpu_model") or info.get("arch") or "unknown CPU"]
    cores = info.get("usable_cpus") or info.get("logical_cpus")
    if cores:
        parts.append(f"{cores} cores")
    if "avx512f" in (info.get("cpu_flags") or []):
        parts.append("AVX-512")
    if info.get("gpus"):
        parts.append(", ".join(info["gpus"]))
    return ", ".join(str(p) for p in parts)


def compact_machine_label(info: dict[str, Any], limit: int = 28) -> str:
    """A label short enough for a table cell: ``iPhone 13``, ``Intel Xeon Platinum 8375C ×2``.

    The machine's own ``label`` when it has one; otherwise the CPU model without vendor
    marks, clock and core-count words, with the usable cores. Cut at ``limit`` characters
    with an ellipsis (never to a few letters).
    """
    import re

    if info.get("label"):
        text = str(info["label"])
    else:
        model = str(info.get("cpu_model") or info.get("arch") or "unknown CPU")
        for pattern in (r"\(R\)", r"\(TM\)", r"\bCPU\b", r"\bProcessor\b", r"@\s*[\d.]+\s*GHz", r"\b\d+-Core\b"):
            model = re.sub(pattern, "", model, flags=re.IGNORECASE)
        model = " ".join(model.split())
        cores = info.get("usable_cpus") or info.get("logical_cpus")
        suffix = f" ×{cores}" if cores else ""
        if len(model) + len(suffix) > limit:
            model = model[: max(8, limit - len(suffix) - 1)].rstrip() + "…"
        text = model + suffix
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
