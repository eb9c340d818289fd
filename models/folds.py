"""What a model family knows about folding itself for inference (the passes' family hook).

A model may define ``inference_folds(self) -> InferenceFolds``. The generic rewrite passes
(:mod:`staredge.exporters.passes`) call it and apply what it lists; they hold no code for
any one family. Names are qualified module or parameter names of the model as built. Every
fold a family lists is still checked numerically against the unmodified model and undone
if the output moves, so a wrong entry costs speed, never correctness.
"""

from __future__ import annotations

from dataclasses import dataclass

from staredge.errors import ConfigError


@dataclass(frozen=True)
class InferenceFolds:
    """The folds a model family supports (see the module docstring).

    * ``conv_bn``: (conv, batchnorm) pairs where the BatchNorm2d reads exactly the conv's
      output and nothing else does (e.g. EfficientFormerV2's ``conv_bn_pairs()``).
    * ``pooled_norm``: a BatchNorm2d whose output is only globally average-pooled and fed
      to the Linear layers in ``heads``; it is folded into them (pooling is linear).
    * ``heads``: the classifier Linear layers that read the pooled features.
    * ``averaged_heads``: the eval forward returns the mean of these heads' outputs and
      treats a head set to ``None`` as absent, so they can be merged into the first one.
    * ``layer_scales``: (parameter, conv) pairs for ``parameter * branch(x)`` where the
      branch returns the conv's output once BatchNorms are folded (the layer scale is
      folded into the conv's weight and bias and the multiplication removed).
    """

    conv_bn: tuple[tuple[str, str], ...] = ()
    pooled_norm: str | None = None
    heads: tuple[str, ...] = ()
    averaged_heads: tuple[str, ...] = ()
    layer_scales: tuple[tuple[str, str], ...] = ()


def inference_folds(model) -> InferenceFolds:
    """``model.inference_folds()`` if the model's family defines it, else no family folds."""
    hook = getattr(model, "inference_folds", None)
    if hook is None:
        return InferenceFolds()
    folds = hook()
    if not isinstance(folds, InferenceFolds):
        raise ConfigError(
            f"{type(model).__name__}.inference_folds() must return InferenceFolds, got {type(folds).__name__}"
        )
    return folds


__all__ = ["InferenceFolds", "inference_folds"]
