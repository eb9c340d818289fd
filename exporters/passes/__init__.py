"""Graph rewrites applied before export, and their registry. Every pass is pure: module in,
new module out, numerics kept (each fold that cannot be proven safe from the module tree
alone is checked against the unmodified model and undone if the output moves).

* ``fuse_batchnorm`` (:mod:`.batchnorm`): BatchNorm folding, plus the model family's own
  folds (``inference_folds()``, :mod:`staredge.models.folds`): layer scales
  (:mod:`.layer_scale`), a BatchNorm before global pooling into the head, averaged heads
  merged into one.
* ``pointwise_conv_to_linear`` (:mod:`.pointwise`): 1x1 convs as ``permute → Linear →
  permute`` with the permutes simplified.

Passes are applied by name only through :func:`apply_passes` (export and the benchmark
alike); ``"auto"`` means the format's ``default_passes`` in :mod:`staredge.formats`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch.nn as nn

from staredge.errors import ConfigError
from staredge.exporters.passes.batchnorm import fuse_batchnorm
from staredge.exporters.passes.common import count_batchnorm, example_input, fold_bn_into_conv
from staredge.exporters.passes.pointwise import (
    PointwiseLinear,
    conv1x1_to_linear,
    count_pointwise_convs,
    is_pointwise_conv,
    pointwise_conv_to_linear,
)

#: Every pass, by name, in the order a full rewrite applies them.
PASSES: dict[str, Callable[[nn.Module], nn.Module]] = {
    "fuse_batchnorm": fuse_batchnorm,
    "pointwise_conv_to_linear": pointwise_conv_to_linear,
}

#: Pass names, in the order :data:`PASSES` lists them.
PASS_NAMES: tuple[str, ...] = tuple(PASSES)


def _unknown(names: Sequence[str]) -> ConfigError:
    return ConfigError(
        f"unknown rewrite pass(es) {list(names)}; valid passes: {', '.join(PASS_NAMES)} "
        f"(or 'auto' / 'none' where a rewrite option is accepted)"
    )


def check_pass_names(names: str | Iterable[str]) -> list[str]:
    """Pass names (a list, or one comma-separated string) checked against :data:`PASSES`.

    Raises :class:`ConfigError` naming the valid passes for an unknown name or a non-string.
    Duplicates are dropped (order kept).
    """
    items = names.split(",") if isinstance(names, str) else list(names)
    bad = [p for p in items if not isinstance(p, str)]
    if bad:
        raise _unknown(bad)
    cleaned = [p.strip() for p in items if p.strip()]
    unknown = [p for p in cleaned if p not in PASSES]
    if unknown:
        raise _unknown(unknown)
    return list(dict.fromkeys(cleaned))


def resolve_passes(rewrite: str | Iterable[str] | None, fmt: str) -> list[str]:
    """The pass names to apply for export format ``fmt``.

    ``"auto"``: the format's ``default_passes`` (:func:`staredge.formats.get_format`; the
    measurements behind them are noted there). ``"none"``/None: nothing. Otherwise a
    comma-separated string or a list of pass names, applied in the order given.
    """
    if rewrite is None:
        return []
    if isinstance(rewrite, str):
        key = rewrite.strip().lower()
        if key in ("none", ""):
            return []
        if key == "auto":
            from staredge.formats import get_format

            return check_pass_names(get_format(fmt).default_passes)
        return check_pass_names(key)
    return check_pass_names(rewrite)


def apply_passes(model: nn.Module, names: str | Sequence[str]) -> nn.Module:
    """Apply the named passes in order; ``model`` is left untouched (each pass is pure).

    Unknown names raise :class:`ConfigError` naming the valid ones before any pass runs.
    """
    out = model
    for name in check_pass_names(names):
        out = PASSES[name](out)
    return out


__all__ = [
    "PASSES",
    "PASS_NAMES",
    "PointwiseLinear",
    "apply_passes",
    "check_pass_names",
    "conv1x1_to_linear",
    "count_batchnorm",
    "count_pointwise_convs",
    "example_input",
    "fold_bn_into_conv",
    "fuse_batchnorm",
    "is_pointwise_conv",
    "pointwise_conv_to_linear",
    "resolve_passes",
]
