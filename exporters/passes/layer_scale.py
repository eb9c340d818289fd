"""Layer-scale folding: ``gamma * branch(x)``, where the branch ends in a conv, becomes the
branch alone with ``gamma`` folded into that conv's weight and bias.

Which parameters are layer scales and which conv ends each branch is family knowledge
(:meth:`inference_folds` on the model, see :mod:`staredge.models.folds`); this module holds
the mechanics only. The block that owns a layer scale is traced with ``torch.fx`` treating
every submodule as a leaf, and the multiplication is removed from that graph.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Sequence

import torch
import torch.nn as nn

from staredge.exporters.passes.common import Change, has_module, swap


def shallow_trace(block: nn.Module):
    """``torch.fx`` trace of ``block`` treating every submodule as a leaf, or None."""
    import torch.fx as fx

    class _Shallow(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return True

    try:
        graph = _Shallow().trace(block)
    except Exception:  # noqa: BLE001 - untraceable blocks keep their layer scales
        return None
    return fx.GraphModule(block, graph, class_name=type(block).__name__ + "Folded")


def _scale_muls(gm, pname: str) -> list:
    """(mul node, branch node) pairs computing ``pname * <submodule output>`` in ``gm``."""
    import torch.fx as fx

    found = []
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in (operator.mul, torch.mul) or len(node.args) != 2:
            continue
        a, b = node.args
        if isinstance(b, fx.Node) and b.op == "get_attr":
            a, b = b, a
        if not (isinstance(a, fx.Node) and a.op == "get_attr" and a.target == pname):
            continue
        if isinstance(b, fx.Node) and b.op == "call_module" and len(b.users) == 1:
            found.append((node, b))
    return found


def layer_scale_folds(model: nn.Module, scales: Sequence[tuple[str, str]]) -> list[Change]:
    """One change per block: fold each listed ``(parameter, conv)`` layer scale into its conv.

    Exact up to rounding when the family's description is right; the caller verifies
    numerically and undoes on mismatch.
    """
    by_block: dict[str, list[tuple[str, str]]] = {}
    for pname, conv_name in scales:
        block, _, local = pname.rpartition(".")
        if block and has_module(model, conv_name):
            by_block.setdefault(block, []).append((local, conv_name))
    changes = []
    for qual, pairs in by_block.items():
        if not has_module(model, qual):
            continue
        block = model.get_submodule(qual)
        gm = shallow_trace(block)
        if gm is None:
            continue
        new_convs: dict[str, nn.Module] = {}
        folded = set()
        for local, conv_name in pairs:
            param = getattr(block, local, None)
            conv = model.get_submodule(conv_name)
            muls = _scale_muls(gm, local)
            if not isinstance(param, nn.Parameter) or not isinstance(conv, nn.Conv2d) or len(muls) != 1:
                continue
            gamma = param.detach().reshape(-1)
            if gamma.numel() != conv.out_channels or conv_name in new_convs:
                continue
            scaled = copy.deepcopy(conv)
            with torch.no_grad():
                scaled.weight.mul_(gamma.reshape(-1, 1, 1, 1).to(scaled.weight.dtype))
                if scaled.bias is not None:
                    scaled.bias.mul_(gamma.to(scaled.bias.dtype))
            new_convs[conv_name] = scaled
            mul, branch = muls[0]
            mul.replace_all_uses_with(branch)
            gm.graph.erase_node(mul)
            folded.add(local)
        if not new_convs:
            continue
        gm.graph.eliminate_dead_code()
        gm.recompile()
        for local in folded:  # drop scale parameters the graph no longer reads
            if not any(n.op == "get_attr" and n.target == local for n in gm.graph.nodes) and hasattr(gm, local):
                delattr(gm, local)
        changes.append(swap(model, {**new_convs, qual: gm}))
    return changes


__all__ = ["layer_scale_folds", "shallow_trace"]
