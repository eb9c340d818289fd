"""``staredge.models``: the model zoo (StarNet, DemoNet, ...), the registry and safe checkpoint loading.

>>> from staredge.models import create, list_models
>>> model = create("starnet_s1")                       # random weights, eval mode
>>> model = create("starnet_s1", checkpoint="starnet_s1.pth.tar")
"""

import importlib

from staredge.errors import require

#: Public name -> the submodule defining it. Imported on first use (PEP 562), so that the
#: torch-free parts below this package (``staredge.models.star.genome``, ``.config``,
#: ``.choices``: genomes parsed, checked and printed by ``staredge genome``) load without torch.
_LAZY = {
    "load_checkpoint": "staredge.models.checkpoint", "load_state_dict": "staredge.models.checkpoint",
    "read_state_dict": "staredge.models.checkpoint", "save_safetensors": "staredge.models.checkpoint",
    "realistic_weights": "staredge.models.testing",
    **{name: "staredge.models.registry" for name in ("ModelEntry", "PaperFigures", "PretrainedConfig", "create",
                                                      "get_entry", "imagenet_class_names", "list_models")},
}


def __getattr__(name: str):
    """The model zoo's public names, imported when first used (a clear MissingDependencyError
    without torch)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'staredge.models' has no attribute {name!r}")
    require("torch", "torch", "the model zoo (PyTorch models)")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ModelEntry",
    "PaperFigures",
    "PretrainedConfig",
    "create",
    "get_entry",
    "imagenet_class_names",
    "list_models",
    "load_checkpoint",
    "load_state_dict",
    "read_state_dict",
    "realistic_weights",
    "save_safetensors",
]
