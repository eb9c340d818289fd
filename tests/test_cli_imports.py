"""What ``staredge genome`` loads (issue 22: "staredge genome without importing torch").

``staredge.models`` imports its torch-backed names on first use (PEP 562), and the genome
analysis (``star.genome``, ``.config``, ``.choices``, ``.analysis``) counts parameters and
cache analytically, so ``staredge genome`` loads neither torch nor the model zoo, the
exporters or a runtime, and runs where torch is not installed. The analytic parameter
count is checked here against the modules :class:`STARBackbone` builds.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _no_torch import NO_TORCH

ROOT = Path(__file__).resolve().parents[1]

#: Modules ``staredge genome`` must not load: torch, the image-model zoo, the exporters, every runtime.
HEAVY = ("torch", "numpy", "staredge.models.registry", "staredge.models.starnet", "staredge.models.checkpoint",
         "staredge.exporters", "staredge.runtimes", "onnxruntime", "openvino", "coremltools", "ai_edge_litert",
         "litert_torch", "transformers", "safetensors")


def _run(code: str, no_torch: bool = False) -> subprocess.CompletedProcess:
    prelude = NO_TORCH if no_torch else ""
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_genome_loads_no_torch_model_zoo_exporter_or_runtime():
    out = _run(f"""
        import json, sys
        from staredge.cli import main
        rc = main(["genome", "transformer_pp", "--seq-len", "8", "--json"])
        print(json.dumps({{"rc": rc, "loaded": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
        """)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc == {"rc": 0, "loaded": []}, doc


def test_genome_runs_where_torch_is_not_installed(capsys):
    """The same analysis with torch unimportable as here; a wrong genome is refused the same way."""
    from staredge.cli import main

    argv = ["genome", "11111-51111-71111-81111", "--depth", "8", "--seq-len", "100", "--json"]
    out = _run(f"""
        import sys
        from staredge.cli import main
        assert main({argv!r}) == 0
        assert main(["genome", "11111-91114", "--seq-len", "8"]) == 2
        assert "torch" not in sys.modules
        """, no_torch=True)
    assert out.returncode == 0, out.stderr
    assert "invalid STAR genome '11111-91114'" in out.stderr and "--repair" in out.stderr
    assert main(argv) == 0
    assert json.loads(out.stdout) == json.loads(capsys.readouterr().out)


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


def _configs(rng: random.Random) -> dict:
    from staredge.models.star.config import LIVConfig

    options = {
        **{c: [LIVConfig(head_dim=16), LIVConfig(head_dim=32, repeat_factor=2, qk_norm=True), LIVConfig(kernel_size=5)]
           for c in (1, 2, 3, 4)},
        **{c: [LIVConfig(head_dim=16), LIVConfig(head_dim=32, repeat_factor=2)] for c in (10, 11, 12, 13)},
        **{c: [LIVConfig(expansion_factor=4, kernel_size=3)] for c in (5, 6, 14, 15)},
        7: [LIVConfig(bias=True, kernel_size=5)], 16: [LIVConfig(kernel_size=2)],
        9: [LIVConfig(hidden_dim=96), LIVConfig(expansion_factor=2)],
    }
    return {c: rng.choice(v) for c, v in options.items() if rng.random() < 0.6}


@pytest.mark.parametrize("seed", range(40))
def test_analytic_parameters_are_the_backbones(seed):
    """Per LIV, the analytic count equals the parameters of the modules STARBackbone builds
    (on the meta device), a shared featurizer counted at its first user: random genomes
    with featurizer, feature-group and residual sharing, every class, varied LIV configs."""
    torch = pytest.importorskip("torch")
    from staredge.models.star.analysis import analyze_genome
    from staredge.models.star.backbone import STARBackbone
    from staredge.models.star.genome import random_genome

    rng = random.Random(seed)
    genome = random_genome(rng.choice((1, 4, 12, 17)), seed=seed, share_prob=0.7, residual_prob=0.2)
    dim, configs = rng.choice((32, 64, 96)), _configs(rng)
    with torch.device("meta"):
        backbone = STARBackbone(dim, len(genome), genome, configs, max_seq_len=16)
    seen: set[int] = set()
    built = []
    for i in range(len(genome)):
        params = [p for p in [*backbone.livs[i].parameters(), *backbone.norms[i].parameters()] if id(p) not in seen]
        seen.update(map(id, params))
        built.append(sum(p.numel() for p in params))
    report = analyze_genome(genome, dim, 8, configs=configs)
    assert [r.params for r in report.rows] == built, str(genome)
    assert report.total_params == sum(p.numel() for p in backbone.parameters()) + dim  # + the final norm


# ----------------------------------------------------------------------------- staredge models


def test_models_loads_no_torch_and_prints_what_the_registry_says(capsys):
    """``staredge models`` reads package data (figures and catalog) instead of importing the
    model zoo; its JSON is the same with torch unimportable as here."""
    from staredge.cli import main

    out = _run(f"""
        import sys
        from staredge.cli import main
        for argv in (["models"], ["models", "--markdown"], ["models", "--family", "demonet"], ["models", "--json"]):
            assert main(argv) == 0, argv
        print("LOADED", sorted(m for m in {HEAVY!r} if m in sys.modules))
        """, no_torch=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "LOADED []"
    doc = json.loads(out.stdout[out.stdout.rindex("\n{\n") + 1:out.stdout.rindex("LOADED")])
    assert main(["models", "--json"]) == 0
    assert doc == json.loads(capsys.readouterr().out)


def test_stored_catalog_is_the_registry():
    """After adding or changing a model: ``python -m staredge.commands.models``."""
    pytest.importorskip("torch")
    from staredge.commands.models import catalog, mac_convention, stored_catalog
    from staredge.profiler import MAC_CONVENTION

    assert stored_catalog() == catalog()["models"], "run: .venv/bin/python -m staredge.commands.models"
    assert mac_convention() == MAC_CONVENTION, "run: .venv/bin/python scripts/model_figures.py"


def test_models_reads_the_registry_without_the_catalog(monkeypatch, capsys):
    """No catalog (a damaged install): the same listing from the registry."""
    pytest.importorskip("torch")
    import staredge.commands.models as models
    from staredge.cli import main

    assert main(["models", "--json"]) == 0
    stored = json.loads(capsys.readouterr().out)
    monkeypatch.setattr(models, "stored_catalog", lambda: None)
    assert main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == stored
