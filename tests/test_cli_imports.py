"""What ``staredge genome`` loads (issue 22: "staredge genome without importing torch").

``staredge.models`` imports its torch-backed names on first use (PEP 562), so the genome
code below it (``star.genome``, ``.config``, ``.choices``, ``.analysis``) loads without
torch or the model zoo. Checking a genome needs no torch at all; counting its parameters
still builds a shape-only (``meta``) backbone, which needs torch and nothing else: not the
image-model registry, not the exporters, not a runtime.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from _no_torch import NO_TORCH

ROOT = Path(__file__).resolve().parents[1]

#: Modules ``staredge genome`` must not load: the image-model zoo, the exporters, every runtime.
HEAVY = ("staredge.models.registry", "staredge.models.starnet", "staredge.models.checkpoint", "staredge.exporters",
         "staredge.runtimes", "onnxruntime", "openvino", "coremltools", "ai_edge_litert", "litert_torch",
         "transformers", "safetensors")


def _run(code: str, no_torch: bool = False) -> subprocess.CompletedProcess:
    prelude = NO_TORCH if no_torch else ""
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_genome_loads_no_model_zoo_exporter_or_runtime():
    out = _run(f"""
        import json, sys
        from staredge.cli import main
        rc = main(["genome", "transformer_pp", "--seq-len", "8", "--json"])
        print(json.dumps({{"rc": rc, "loaded": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
        """)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc == {"rc": 0, "loaded": []}, doc


def test_genomes_are_checked_without_torch():
    """A wrong genome is refused with torch not installed (the check needs no torch); a right
    one says which extra counts its parameters."""
    out = _run("""
        import sys
        from staredge.cli import main
        assert main(["genome", "11111-91114", "--seq-len", "8"]) == 2
        assert main(["genome", "transformer_pp", "--seq-len", "8"]) == 2
        assert "torch" not in sys.modules
        """, no_torch=True)
    assert out.returncode == 0, out.stderr
    first, _, second = out.stderr.partition("staredge genome: error:")[2].partition("staredge genome: error:")
    assert "invalid STAR genome '11111-91114'" in first and "--repair" in first, out.stderr
    assert "staredge[torch]" in second and "parameters" in second, out.stderr


def test_the_model_zoo_names_the_torch_extra_when_used():
    """``import staredge.models`` no longer needs torch; using a zoo name without torch is the
    same MissingDependencyError naming the extra as before."""
    out = _run("""
        import staredge.models
        from staredge.errors import MissingDependencyError
        try:
            from staredge.models import create
        except MissingDependencyError as exc:
            assert "staredge[torch]" in str(exc), exc
            print("ok")
        """, no_torch=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
