"""``staredge.models``: the model zoo (StarNet, DemoNet, ...), the registry and safe checkpoint loading.

>>> from staredge.models import create, list_models
>>> model = create("starnet_s1")                       # random weights, eval mode
>>> model = create("starnet_s1", checkpoint="starnet_s1.pth.tar")
"""

from staredge.errors import require

require("torch", "torch", "the model zoo (PyTorch models)")  # a clear MissingDependencyError without torch

from staredge.models.checkpoint import load_checkpoint, load_state_dict, read_state_dict, save_safetensors
from staredge.models.testing import realistic_weights
from staredge.models.registry import (
    ModelEntry,
    PaperFigures,
    PretrainedConfig,
    create,
    get_entry,
    imagenet_class_names,
    list_models,
)

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
