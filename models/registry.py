"""The model registry: names → constructors, default configs and the papers' figures.

A variant is data: each registered entry names a family, a constructor and the keyword
arguments that make the variant, plus the preprocessing config an exported artifact
will carry and the figures the papers print for it (used by ``staredge models``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Callable

import torch.nn as nn

from staredge.errors import ConfigError, UnknownModelError
from staredge.formats import checkpoint_suffixes
from staredge.labels import read_labels
from staredge.models.hub import WeightsSource, fetch_weights

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
    #: The released weights (None: no release; ``create(name)`` gives seeded random weights).
    weights: WeightsSource | None = None
    #: Weights shipped inside the package (a function giving their path), loaded by
    #: ``pretrained=True`` without any download (the digits model).
    packaged_weights: Callable[[], Any] | None = None


_REGISTRY: dict[str, ModelEntry] = {}
#: name -> the module that registered it: listings follow :data:`_FAMILY_MODULES`'s order, not
#: import order (a test or user that imports one family module first must not reorder them).
_REGISTERED_BY: dict[str, str] = {}

_STARNET_RELEASE = "https://github.com/ma-xu/Rewrite-the-Stars/releases/download/checkpoints_v1"
_EFORMER_OFFICIAL = "https://github.com/snap-research/EfficientFormer"

#: Released ImageNet-1k weights per model, as data. StarNet S1-S4: the official release
#: assets (``checkpoints_v1`` of ma-xu/Rewrite-the-Stars; weights under ``state_dict``).
#: EfficientFormerV2: the official ``eformer_*_450.pth`` files are on Google Drive, which
#: gives no direct download link, so the URLs are timm's copies on the Hugging Face hub
#: (safetensors, timm's key layout, which :mod:`staredge.models.efficientformer_v2` maps
#: onto the official one). No digests are published for either, so each file's SHA-256 is
#: recorded on first download and checked on every later load (``staredge.models.hub``).
RELEASED_WEIGHTS: dict[str, WeightsSource] = {
    **{
        f"starnet_s{i}": WeightsSource(
            url=f"{_STARNET_RELEASE}/starnet_s{i}.pth.tar", filename=f"starnet_s{i}.pth.tar",
            source="StarNet authors, GitHub release checkpoints_v1",
            page="https://github.com/ma-xu/Rewrite-the-Stars/releases/tag/checkpoints_v1",
        )
        for i in (1, 2, 3, 4)
    },
    **{
        f"efficientformerv2_{v}": WeightsSource(
            url=f"https://huggingface.co/timm/efficientformerv2_{v}.snap_dist_in1k/resolve/main/model.safetensors",
            filename=f"efficientformerv2_{v}.snap_dist_in1k.safetensors",
            source=f"timm's copy of the official eformer_{v}_450.pth (Hugging Face hub)",
            page=_EFORMER_OFFICIAL,
        )
        for v in ("s0", "s1", "s2", "l")
    },
}


def register(entry: ModelEntry) -> ModelEntry:
    """Add a variant to the registry (names are unique); its released weights come from
    :data:`RELEASED_WEIGHTS` unless the entry names its own."""
    if entry.name in _REGISTRY:
        raise ConfigError(f"model '{entry.name}' is registered twice")
    if entry.weights is None and entry.name in RELEASED_WEIGHTS:
        entry = dataclasses.replace(entry, weights=RELEASED_WEIGHTS[entry.name])
    _REGISTRY[entry.name] = entry
    _REGISTERED_BY[entry.name] = sys._getframe(1).f_globals.get("__name__", "")
    return entry


def init_seed(name: str) -> int:
    """The seed of ``name``'s random initialisation (from its name: the same on every machine)."""
    return int.from_bytes(hashlib.sha256(f"staredge:{name}".encode()).digest()[:4], "little")


from staredge.metadata import weights_fingerprint  # noqa: E402 - one implementation, in the core


def families() -> list[str]:
    """Registered family names, in registration order."""
    _ensure_loaded()
    return list(dict.fromkeys(e.family for e in _REGISTRY.values()))


def closest_model(state_dict: dict, exclude: str | None = None) -> tuple[str, float] | None:
    """(registry name, share of its parameters matched by name and shape) of the registered
    model a checkpoint's ``state_dict`` fits best (each family's checkpoint filter applied),
    or None when none matches half of its parameters. Models are built on the meta device
    where their initialisers allow (else on the CPU, without touching the caller's random
    state): only on an error path. For errors that say "this looks like X"."""
    import torch

    import json
    import math
    from importlib import resources

    shapes = {k: tuple(getattr(v, "shape", ())) for k, v in state_dict.items()}
    # the three registered models closest in parameter count (package data, no build) are tried
    n = sum(math.prod(shp) for k, shp in shapes.items() if "running_" not in k and "num_batches" not in k)
    try:
        figures = json.loads(resources.files("staredge").joinpath("data", "model_figures.json").read_text())["models"]
    except (OSError, ValueError, KeyError):
        figures = {}
    names = [m for m in _REGISTRY if m != exclude]
    names.sort(key=lambda m: abs(figures.get(m, {}).get("params", 0) - n))
    best: tuple[str, float] | None = None
    for name in names[:3]:
        entry = _REGISTRY[name]
        try:
            try:
                with torch.device("meta"):
                    model = entry.builder(**entry.kwargs)
            except Exception:  # noqa: BLE001 - an initialiser that needs values (.item()): build on the CPU
                with torch.random.fork_rng(devices=[]):
                    model = entry.builder(**entry.kwargs)
            own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            filt = getattr(model, "filter_checkpoint", None)
            theirs = shapes
            if callable(filt):
                theirs = {k: tuple(v.shape) for k, v in filt(dict(state_dict)).items()}
        except Exception:  # noqa: BLE001 - a family that cannot be built or filtered here: not a candidate
            continue
        if not own:
            continue
        share = sum(1 for k, shp in own.items() if theirs.get(k) == shp) / len(own)
        if len(theirs) != len(own):
            share *= min(len(theirs), len(own)) / max(len(theirs), len(own))
        if share >= 0.5 and (best is None or share > best[1]):
            best = (name, share)
    return best


def _install_guesser() -> None:
    from staredge.models import checkpoint

    checkpoint.architecture_guesser = closest_model


_install_guesser()


def list_models(family: str | None = None) -> list[str]:
    """Registered model names, in registration order (optionally of one family)."""
    _ensure_loaded()
    if family is not None and family not in families():
        raise ConfigError(f"unknown model family {family!r}; choose one of {', '.join(families())}")
    return [n for n, e in _REGISTRY.items() if family is None or e.family == family]


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; raises :class:`UnknownModelError` with suggestions."""
    _ensure_loaded()
    key = name.strip().lower().replace("-", "_")
    if key in _REGISTRY:
        return _REGISTRY[key]
    import difflib

    if "/" in name or "\\" in name or name.endswith((*checkpoint_suffixes(), ".ckpt")):
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
    pretrained: bool = False,
    labels: Any = None,
    drop_head: bool | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model, optionally loading weights, in eval mode.

    Without weights the model is randomly initialised from a seed derived from its name
    (:func:`init_seed`): the same name gives the same weights on every call and machine,
    and ``model.pretrained`` is False. ``pretrained=True`` downloads the released weights
    (see :data:`RELEASED_WEIGHTS` and :mod:`staredge.models.hub`: user cache, SHA-256
    recorded and checked, ``STAREDGE_OFFLINE``) and loads them strictly; ``checkpoint``
    loads a file instead (not both). ``num_classes`` overrides the head size; when it
    differs from the weights', their head is dropped (``drop_head`` defaults to True in that
    case) and the new head keeps its (seeded) initialisation. ``labels``: class names in
    index order (a list, or a text file with one name per line), carried into exported
    artifacts. Extra ``kwargs`` go to the family's constructor (e.g. ``img_size`` for
    EfficientFormerV2). The returned module has ``.staredge_name`` and ``.pretrained_cfg``
    attributes that exporters read.
    """
    entry = get_entry(name)
    if pretrained and checkpoint is not None:
        raise ConfigError("pass either pretrained=True (--pretrained) or a checkpoint (--checkpoint), not both")
    if pretrained and entry.packaged_weights is not None:
        checkpoint, pretrained = str(entry.packaged_weights()), False
    if pretrained and entry.weights is None:
        released = ", ".join(n for n, e in _REGISTRY.items() if e.weights is not None or e.packaged_weights)
        raise ConfigError(f"{entry.name} has no released weights; models with released weights: {released}. "
                          f"Load your own with checkpoint=... (--checkpoint FILE)")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)):
        raise ConfigError(f"num_classes must be an integer, got {type(num_classes).__name__} {num_classes!r}")
    args = dict(entry.kwargs)
    if num_classes is not None:
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        args["num_classes"] = num_classes
    args.update(kwargs)
    if "img_size" in args:
        import inspect

        size = args["img_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 32:
            raise ConfigError(f"img_size must be a whole number of pixels, at least 32, got {size!r}")
        if entry.cfg.input_size[1:] == (1, 1):
            raise ConfigError(f"img_size applies to models that take images; {entry.name} takes points of shape "
                              f"{tuple(entry.cfg.input_size)}")
        if "img_size" not in inspect.signature(entry.builder).parameters:
            del args["img_size"]  # convolutions and global pooling: any size, nothing to rebuild
    import torch

    seed = init_seed(entry.name)
    # seeded without touching the caller's random state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = entry.builder(**args)
        except TypeError as exc:
            raise ConfigError(f"cannot build '{entry.name}' with {kwargs}: {exc}") from exc
    cfg = entry.cfg
    if num_classes is not None and num_classes != cfg.num_classes:
        cfg = dataclasses.replace(cfg, num_classes=num_classes, labels="none")
    if labels is not None:
        names = read_labels(labels)
        if len(names) != cfg.num_classes:
            raise ConfigError(f"{len(names)} labels given for a model with {cfg.num_classes} classes; "
                              f"give one name per class (and num_classes=... / --num-classes for a new head)")
        cfg = dataclasses.replace(cfg, names=tuple(names), labels="custom")
    if "img_size" in kwargs:
        size = int(kwargs["img_size"])
        cfg = dataclasses.replace(cfg, input_size=(cfg.input_size[0], size, size))
    model.staredge_name = entry.name
    model.staredge_family = entry.family  # read by staredge.metadata (the core does not import the registry)
    model.pretrained_cfg = cfg
    model.pretrained = False
    model.init_seed = seed
    # exported metadata says "pretrained": false while the weights are still these (checked
    # when the metadata is built, so loading or training by any route counts)
    model.init_fingerprint = weights_fingerprint(model)
    if pretrained:
        checkpoint = fetch_weights(entry.name, entry.weights, progress=progress)
    if checkpoint is not None:
        from staredge.models.checkpoint import file_sha256, load_state_dict, read_state_dict

        sd = read_state_dict(checkpoint)
        if drop_head is None:
            # a new head size drops the checkpoint's head, unless the checkpoint already has
            # that size (a fine-tuned checkpoint: num_classes=10 with a 10-class head)
            drop_head = num_classes is not None and not _head_fits(model, sd)
        load_state_dict(model, sd, drop_head=drop_head)
        model.checkpoint_sha256 = file_sha256(checkpoint)
        model.pretrained = True
    return model.eval()


def _head_fits(model: nn.Module, sd: dict) -> bool:
    """Whether the checkpoint's classifier head has the model's shapes (after the family's key filter)."""
    from staredge.models.checkpoint import head_prefixes

    filt = getattr(model, "filter_checkpoint", None)
    mapped = filt(dict(sd)) if callable(filt) else sd
    own = model.state_dict()
    heads = head_prefixes(model)
    keys = [k for k in mapped if k.startswith(heads) and k in own]
    return bool(keys) and all(tuple(mapped[k].shape) == tuple(own[k].shape) for k in keys)



# Family modules whose import registers their variants (add new families here).
_FAMILY_MODULES = ("starnet", "demonet", "efficientformer_v2", "digits")


def _ensure_loaded() -> None:
    """Import every family module, then put the registry in :data:`_FAMILY_MODULES` order
    (registration order within a module), whatever order they were first imported in."""
    import importlib

    for mod in _FAMILY_MODULES:
        importlib.import_module(f"staredge.models.{mod}")
    rank = {f"staredge.models.{m}": i for i, m in enumerate(_FAMILY_MODULES)}
    names = list(_REGISTRY)
    ordered = sorted(names, key=lambda n: rank.get(_REGISTERED_BY.get(n, ""), len(rank)))
    if ordered != names:
        entries = {n: _REGISTRY[n] for n in ordered}
        _REGISTRY.clear()
        _REGISTRY.update(entries)
