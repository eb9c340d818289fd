"""Write staredge/data/model_figures.json (params and MACs of every registered model) and
staredge/data/model_catalog.json (family, paper figures and released weights, in listing order).

``staredge models`` reads these figures instead of profiling all models on every call
(seconds idle, a minute on a loaded machine) and without importing torch.
``tests/test_model_figures.py`` checks every entry against :func:`staredge.profile` and
``tests/test_cli_imports.py`` the catalog against the registry, so neither file can drift
from the code: after changing or adding a model, run ``.venv/bin/python scripts/model_figures.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "staredge" / "data" / "model_figures.json"


def figures() -> dict:
    """The document: the counting convention and one entry per registered model."""
    from staredge.models import list_models
    from staredge.profiler import MAC_CONVENTION, profile

    models = {}
    for name in list_models():
        res = profile(name)
        models[name] = {"params": res.params, "params_no_bn": res.params_no_bn, "macs": res.macs,
                        "input_size": list(res.input_size)}
    return {"convention": MAC_CONVENTION, "models": models}


def main() -> int:
    """Profile every model and write both files atomically."""
    from staredge.commands.models import write_catalog
    from staredge.fileio import atomic_write_text

    atomic_write_text(TARGET, json.dumps(figures(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {TARGET.relative_to(ROOT)}")
    write_catalog()
    return 0


if __name__ == "__main__":
    sys.exit(main())
