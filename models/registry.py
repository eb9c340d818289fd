"""The model registry: names → constructors, default configs and the papers' figures.

A variant is data: each registered entry names a family, a constructor and the keyword
arguments that make the variant, plus the preprocessing config an exported artifact
will carry and the figures the papers print for it (used by ``staredge models``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Callable

import torch.nn as nn

from staredge.errors import ConfigError, UnknownModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names in class-index order (shipped as package data)."""
    text = resources.files("staredge.models").joinpath("data/imagenet_classes.txt").read_text("utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    assert len(names) == 1000, "package data imagenet_classes.txt is damaged"
    return names


@dataclass(frozen=True)
class PretrainedConfig:
    """Preprocessing and labels an image model expects; exporters embed this in artifacts.

    ``input_size`` is (C, H, W). Images are resized so that the shorter side is
    ``H / crop_pct`` with ``interpolation``, centre-cropped to (H, W), scaled to [0, 1]
    and normalised with ``mean``/``std``.
    """

    input_size: tuple[int, int, int] = (3, 224, 224)
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    num_classes: int = 1000
    labels: str = "imagenet-1k"  # name of a label set, or "none"
    names: tuple[str, ...] = ()  # explicit class names (index order); overrides ``labels``

    def class_names(self) -> list[str]:
        """The class names for this config (index order); generic names when unknown."""
        if self.names and len(self.names) == self.num_classes:
            return list(self.names)
        if self.labels == "imagenet-1k" and self.num_classes == 1000:
            return list(imagenet_class_names())
        return [f"class_{i}" for i in range(self.num_classes)]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of this config."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PaperFigures:
    """Figures a paper prints for a model: params (M), MACs (M), ImageNet top-1 and notes.

    ``params_convention`` says what the paper's parameter count includes: ``"all"``
    (every trainable parameter) or ``"no_bn"`` (BatchNorm left out, as in papers that
    count the BN-fused inference graph); ``staredge models`` compares like with like.
    """

    params_m: float | None = None
    macs_m: float | None = None
    top1: float | None = None
    source: str = ""
    note: str = ""
    params_convention: str = "all"


@dataclass(frozen=True)
class ModelEntry:
    """One registered model variant."""

    name: str
    family: str
    builder: Callable[..., nn.Module]
    kwargs: dict[str, Any] = field(default_factory=dict)
    cfg: PretrainedConfig = PretrainedConfig()
    paper: PaperFigures = PaperFigures()
    description: str = ""


_REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> ModelEntry:
    """Add a variant to the registry (names are unique)."""
    if entry.name in _REGISTRY:
        raise ConfigError(f"model '{entry.name}' is registered twice")
    _REGISTRY[entry.name] = entry
    return entry


def list_models(family: str | None = None) -> list[str]:
    """Registered model names, in registration order (optionally of one family)."""
    _ensure_loaded()
    return [n for n, e in _REGISTRY.items() if family is None or e.family == family]


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; raises :class:`UnknownModelError` with suggestions."""
    _ensure_loaded()
    key = name.strip().lower().replace("-", "_")
    if key in _REGISTRY:
        return _REGISTRY[key]
    import difflib

    if "/" in name or "\\" in name or name.endswith((".pth", ".pt", ".tar", ".safetensors", ".bin", ".ckpt")):
        from staredge.errors import CheckpointNotFoundError

        raise CheckpointNotFoundError(f"checkpoint not found: {name}; check the path (registry names such as "
                                      f"starnet_s1 have no '/' and no file suffix: run `staredge models`)")
    close = difflib.get_close_matches(key, list(_REGISTRY), n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model '{name}'.{hint} Run `staredge models` to list the {len(_REGISTRY)} registered models."
    )


def create(
    name: str,
    checkpoint: str | None = None,
    num_classes: int | None = None,
    *,
    drop_head: bool | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model, optionally loading weights, in eval mode.

    ``num_classes`` overrides the head size; when it differs from the checkpoint's, the
    checkpoint's head is dropped (``drop_head`` defaults to True in that case) and the new
    head keeps its fresh initialisation. Extra ``kwargs`` go to the family's constructor
    (e.g. ``img_size`` for EfficientFormerV2). The returned module has ``.staredge_name``
    and ``.pretrained_cfg`` attributes that exporters read.
    """
    entry = get_entry(name)
    args = dict(entry.kwargs)
    if num_classes is not None:
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        args["num_classes"] = num_classes
    args.update(kwargs)
    try:
        model = entry.builder(**args)
    except TypeError as exc:
        raise ConfigError(f"cannot build '{entry.name}' with {kwargs}: {exc}") from exc
    cfg = entry.cfg
    if num_classes is not None and num_classes != cfg.num_classes:
        cfg = dataclasses.replace(cfg, num_classes=num_classes, labels="none")
    if "img_size" in kwargs:
        size = int(kwargs["img_size"])
        cfg = dataclasses.replace(cfg, input_size=(cfg.input_size[0], size, size))
    model.staredge_name = entry.name
    model.pretrained_cfg = cfg
    if checkpoint is not None:
        from staredge.models.checkpoint import load_checkpoint

        if drop_head is None:
            drop_head = num_classes is not None and num_classes != entry.cfg.num_classes
        load_checkpoint(model, checkpoint, drop_head=drop_head)
    return model.eval()


# Family modules whose import registers their variants (add new families here).
_FAMILY_MODULES = ("starnet", "demonet", "efficientformer_v2", "digits")


def _ensure_loaded() -> None:
    import importlib

    for mod in _FAMILY_MODULES:
        importlib.import_module(f"staredge.models.{mod}")
