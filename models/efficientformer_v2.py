"""EfficientFormerV2 (Li et al., "Rethinking Vision Transformers for MobileNet Size and Speed",
ICCV 2023) with the official key layout, at any input size divisible by 32.

The module tree mirrors the official implementation so that the released checkpoints
(``eformer_{s0,s1,s2,l}_450.pth``, weights under ``model``) load with strict key matching:

* ``patch_embed.{0,1,3,4}``: the stride-4 stem (conv, BN, GELU, conv, BN, GELU);
* ``network.{0,2,4,6}``: the four stages (``nn.Sequential`` of :class:`FFN` and
  :class:`AttnFFN` blocks), ``network.{1,3}``: conv+BN downsamplers, ``network.5``: the
  downsampler with :class:`Attention4DDownsample` (local-global query) beside its conv+BN;
* ``norm`` (BatchNorm2d), ``head`` and ``dist_head`` (Linear); the two heads are averaged.

timm's re-packaged weights (``stem.conv1.conv``, ``stages.{s}.blocks.{j}``,
``stages.{s}.downsample``, ``ls1.gamma``, ``head_dist``, no ``attention_bias_idxs``) are
mapped onto this layout by :meth:`EfficientFormerV2.filter_checkpoint`, which the checkpoint
loader calls automatically; it also resizes the attention biases (bicubic) when a checkpoint
trained at one resolution is loaded into a model built for another.

Variant configs (widths, depths, per-block expansion ratios, attention blocks in stages 3
and 4) are from the EfficientFormerV2 paper, supplementary Table 8. Table 8 lists the
stage-3/4 ratios of S1, S2 and L as counts ("4 (x5), 3 (x4)"); the per-block order used
here is the official release's, which has exactly those counts and is what the
checkpoints' shapes require.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from staredge.errors import CheckpointError, ConfigError
from staredge.models.folds import InferenceFolds
from staredge.models.layers import DropPath
from staredge.models.registry import ModelEntry, PaperFigures, PretrainedConfig, register

# ---------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------


def _conv_bn(in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """``Sequential(Conv2d, BatchNorm2d)`` (keys ``.0``/``.1``, as in the official code)."""
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups),
        nn.BatchNorm2d(out_chs),
    )


class _AttentionBiasMixin:
    """Learned attention biases looked up by a relative-position index, with an eval cache.

    ``attention_biases`` has shape (heads, R*R): one value per head and per absolute offset
    (|dy|, |dx|) with 0 <= dy, dx < R, row-major, where R is the key grid's side. The
    persistent buffer ``attention_bias_idxs`` (Nq, Nk) maps every query/key pair to its
    offset. In training the biases are gathered on every call; in eval the gathered
    (heads, Nq, Nk) tensor is kept in the non-persistent buffer ``attention_bias_cache`` so
    that an exported graph holds one constant instead of a gather. The cache is refreshed
    on ``train(False)``, after ``load_state_dict``, by :meth:`refresh_attention_bias_cache`,
    and whenever the parameter's version counter shows an in-place change: loading weights
    after ``.eval()`` (the pitfall of the official code) gives the right output.

    Under ``torch.jit.trace`` (ONNX export) and ``torch.fx`` tracing the staleness check
    still runs on the real tensors; under ``torch.export``/``torch.compile`` (fake tensors)
    the cache is trusted, so call :meth:`refresh_attention_bias_cache` (or the model's
    ``after_load()``) after editing ``attention_biases`` in place by hand and before export.
    """

    attention_biases: nn.Parameter
    attention_bias_idxs: torch.Tensor
    attention_bias_cache: torch.Tensor
    training: bool

    def _init_attention_bias(self, num_heads: int, idxs: torch.Tensor) -> None:
        side = int(idxs.max().item()) + 1
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, side))
        self.register_buffer("attention_bias_idxs", idxs)
        self.register_buffer("attention_bias_cache", torch.empty(0), persistent=False)
        self._cache_key: tuple | None = None
        # Plain nn.Module.load_state_dict copies in place; this hook keeps the cache in step
        # even for callers that bypass StarEdge's loader (and its after_load()).
        self.register_load_state_dict_post_hook(_refresh_after_load)
        self.refresh_attention_bias_cache()

    # The dict lookups below (instead of attribute access) reach the real tensors even while
    # torch.fx traces, which otherwise hands out proxies for parameters and buffers.
    def _current_cache_key(self) -> tuple:
        p = self._parameters["attention_biases"]
        idxs = self._buffers["attention_bias_idxs"]
        return (p._version, p.data_ptr(), p.device, p.dtype, idxs._version, idxs.data_ptr())

    @torch.no_grad()
    def refresh_attention_bias_cache(self) -> None:
        """Recompute the dense (heads, Nq, Nk) bias tensor from the current parameters."""
        p = self._parameters["attention_biases"]
        self._buffers["attention_bias_cache"] = p[:, self._buffers["attention_bias_idxs"]].detach().clone()
        self._cache_key = self._current_cache_key()

    def train(self, mode: bool = True):  # noqa: D102 - nn.Module.train, plus the cache refresh
        super().train(mode)  # type: ignore[misc]
        if not mode:
            self.refresh_attention_bias_cache()
        return self

    def attention_bias(self) -> torch.Tensor:
        """The (heads, Nq, Nk) additive attention bias for the current mode."""
        if self.training:
            return self.attention_biases[:, self.attention_bias_idxs]
        if torch.compiler.is_compiling():
            return self.attention_bias_cache  # fake tensors: no version or storage to compare
        if self._cache_key != self._current_cache_key():
            if torch.jit.is_tracing():
                # A refresh here would be recorded anyway: gather in the graph (still correct;
                # ONNX constant folding turns it into a constant).
                return self.attention_biases[:, self.attention_bias_idxs]
            self.refresh_attention_bias_cache()
        return self.attention_bias_cache


def _exporting() -> bool:
    """Whether a tracer or compiler is recording the forward pass (Python-side input checks
    would either fail on symbolic values or be baked into the graph)."""
    fx_tracing = getattr(torch.fx._symbolic_trace, "is_fx_symbolic_tracing", lambda: False)
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or fx_tracing()


def _refresh_after_load(module: _AttentionBiasMixin, _incompatible_keys: object) -> None:
    module.refresh_attention_bias_cache()


def _grid_offsets(q_side: int, k_side: int, q_step: int) -> torch.Tensor:
    """Index of |query - key| offsets, (q_side^2, k_side^2), for a query grid subsampled by
    ``q_step``: offset (dy, dx) gets index ``dy * k_side + dx`` (the official numbering)."""
    ky, kx = torch.meshgrid(torch.arange(k_side), torch.arange(k_side), indexing="ij")
    qy, qx = torch.meshgrid(torch.arange(q_side) * q_step, torch.arange(q_side) * q_step, indexing="ij")
    dy = (qy.reshape(-1, 1) - ky.reshape(1, -1)).abs()
    dx = (qx.reshape(-1, 1) - kx.reshape(1, -1)).abs()
    return dy * k_side + dx


class Attention4D(_AttentionBiasMixin, nn.Module):
    """Multi-head self-attention on a 4D (B, C, H, W) map with talking heads and local values.

    q, k, v are 1x1 conv+BN projections (``key_dim`` per head for q/k, ``attn_ratio *
    key_dim`` for v); ``v_local`` is a 3x3 depthwise conv+BN on v added to the attention
    output; ``talking_head1``/``talking_head2`` mix heads before and after the softmax.
    With ``stride=2`` (stage 3) keys, queries and values are computed on a map subsampled by
    a strided depthwise conv+BN and the output is bilinearly upsampled back.
    """

    def __init__(
        self,
        dim: int,
        key_dim: int = 32,
        num_heads: int = 8,
        attn_ratio: int = 4,
        resolution: int = 7,
        act_layer: type[nn.Module] = nn.GELU,
        stride: int | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim**-0.5
        self.d = attn_ratio * key_dim
        self.dh = self.d * num_heads
        if stride is not None:
            self.resolution = math.ceil(resolution / stride)
            self.stride_conv = _conv_bn(dim, dim, 3, stride=stride, groups=dim)
            self.upsample = nn.Upsample(scale_factor=stride, mode="bilinear")
        else:
            self.resolution = resolution
            self.stride_conv = None
            self.upsample = None
        self.N = self.resolution**2
        qk_dim = key_dim * num_heads
        self.q = _conv_bn(dim, qk_dim)
        self.k = _conv_bn(dim, qk_dim)
        self.v = _conv_bn(dim, self.dh)
        self.v_local = _conv_bn(self.dh, self.dh, 3, groups=self.dh)
        self.talking_head1 = nn.Conv2d(num_heads, num_heads, 1)
        self.talking_head2 = nn.Conv2d(num_heads, num_heads, 1)
        self.proj = nn.Sequential(act_layer(), nn.Conv2d(self.dh, dim, 1), nn.BatchNorm2d(dim))
        self._init_attention_bias(num_heads, _grid_offsets(self.resolution, self.resolution, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        # (B, heads, N, key_dim), (B, heads, key_dim, N), (B, heads, N, d)
        q = self.q(x).reshape(B, self.num_heads, self.key_dim, self.N).transpose(2, 3)
        k = self.k(x).reshape(B, self.num_heads, self.key_dim, self.N)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(B, self.num_heads, self.d, self.N).transpose(2, 3)

        attn = (q @ k) * self.scale + self.attention_bias()
        attn = self.talking_head1(attn)
        attn = attn.softmax(dim=-1)
        attn = self.talking_head2(attn)

        out = (attn @ v).transpose(2, 3).reshape(B, self.dh, self.resolution, self.resolution) + v_local
        if self.upsample is not None:
            out = self.upsample(out)
        return self.proj(out)


class LGQuery(nn.Module):
    """Local-global query of the attention downsampler: strided depthwise conv (local) plus
    stride-2 subsampling (global, ``AvgPool2d(1, 2)``), then a 1x1 conv+BN."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(1, 2, 0)
        self.local = nn.Sequential(nn.Conv2d(in_dim, in_dim, 3, stride=2, padding=1, groups=in_dim))
        self.proj = _conv_bn(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.local(x) + self.pool(x))


class Attention4DDownsample(_AttentionBiasMixin, nn.Module):
    """Attention that halves the resolution (between stages 3 and 4): queries come from
    :class:`LGQuery` on the (R/2)^2 grid, keys and values from the full R^2 grid.

    ``key_dim=16`` and ``num_heads=8`` are what the official checkpoints hold (the official
    code derives them from the 224 input); they are fixed here so that a 224 checkpoint
    fits a model built for any other size.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        key_dim: int = 16,
        num_heads: int = 8,
        attn_ratio: int = 4,
        resolution: int = 14,
        act_layer: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim**-0.5
        self.d = attn_ratio * key_dim
        self.dh = self.d * num_heads
        self.resolution = resolution
        self.resolution2 = math.ceil(resolution / 2)
        self.N = resolution**2
        self.N2 = self.resolution2**2
        qk_dim = key_dim * num_heads
        self.q = LGQuery(dim, qk_dim)
        self.k = _conv_bn(dim, qk_dim)
        self.v = _conv_bn(dim, self.dh)
        self.v_local = _conv_bn(self.dh, self.dh, 3, stride=2, groups=self.dh)
        self.proj = nn.Sequential(act_layer(), nn.Conv2d(self.dh, out_dim, 1), nn.BatchNorm2d(out_dim))
        self._init_attention_bias(num_heads, _grid_offsets(self.resolution2, resolution, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        q = self.q(x).reshape(B, self.num_heads, self.key_dim, self.N2).transpose(2, 3)
        k = self.k(x).reshape(B, self.num_heads, self.key_dim, self.N)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(B, self.num_heads, self.d, self.N).transpose(2, 3)

        attn = (q @ k) * self.scale + self.attention_bias()
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(2, 3).reshape(B, self.dh, self.resolution2, self.resolution2) + v_local
        return self.proj(out)


class Embedding(nn.Module):
    """Downsampler between stages: 3x3 stride-2 conv+BN (``proj``/``norm``); with ``asub``
    (stage 3 → 4) the conv+BN is named ``conv``/``bn`` and an :class:`Attention4DDownsample`
    (``attn``) is added to it."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        asub: bool = False,
        resolution: int = 14,
        act_layer: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.asub = asub
        if asub:
            self.attn = Attention4DDownsample(in_chs, out_chs, resolution=resolution, act_layer=act_layer)
            self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1)
            self.bn = nn.BatchNorm2d(out_chs)
        else:
            self.proj = nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1)
            self.norm = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.asub:
            return self.attn(x) + self.bn(self.conv(x))
        return self.norm(self.proj(x))


class Mlp(nn.Module):
    """The FFN: 1x1 conv+BN → act → 3x3 depthwise conv+BN → act → 1x1 conv+BN.

    The official key names (``fc1``/``norm1``, ``mid``/``mid_norm``, ``fc2``/``norm2``) are
    siblings rather than Sequentials; :meth:`EfficientFormerV2.conv_bn_pairs` lists them for
    BN fusing.
    """

    def __init__(self, in_features: int, hidden_features: int, act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(in_features, hidden_features, 1)
        self.norm1 = nn.BatchNorm2d(hidden_features)
        self.act = act_layer()
        self.mid = nn.Conv2d(hidden_features, hidden_features, 3, padding=1, groups=hidden_features)
        self.mid_norm = nn.BatchNorm2d(hidden_features)
        self.fc2 = nn.Conv2d(hidden_features, in_features, 1)
        self.norm2 = nn.BatchNorm2d(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.fc1(x)))
        x = self.act(self.mid_norm(self.mid(x)))
        return self.norm2(self.fc2(x))


def _layer_scale(dim: int, init_value: float) -> nn.Parameter:
    # (C, 1, 1) as in the official checkpoints (timm stores (C,))
    return nn.Parameter(torch.full((dim, 1, 1), init_value))


class FFN(nn.Module):
    """Residual FFN block: ``x + layer_scale_2 * mlp(x)``."""

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4,
        act_layer: type[nn.Module] = nn.GELU,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-5,
    ) -> None:
        super().__init__()
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale_2 = _layer_scale(dim, layer_scale_init_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.layer_scale_2 * self.mlp(x))


class AttnFFN(nn.Module):
    """Residual attention block followed by a residual FFN, each with its own layer scale."""

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4,
        act_layer: type[nn.Module] = nn.GELU,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-5,
        resolution: int = 7,
        stride: int | None = None,
    ) -> None:
        super().__init__()
        self.token_mixer = Attention4D(dim, resolution=resolution, act_layer=act_layer, stride=stride)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale_1 = _layer_scale(dim, layer_scale_init_value)
        self.layer_scale_2 = _layer_scale(dim, layer_scale_init_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1 * self.token_mixer(x))
        return x + self.drop_path(self.layer_scale_2 * self.mlp(x))


# ---------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------


class EfficientFormerV2(nn.Module):
    """Four-stage EfficientFormerV2 classifier built for one square input size.

    ``img_size`` must be divisible by 32: the attention layers reshape to fixed grids (H/32
    for stage 4 and for the stride-2 attention of stage 3, H/16 for the downsampler's keys)
    and their bias tables are sized for them. In eval, and by default in training,
    the output is ``(head + dist_head) / 2``; with ``distilled_training = True`` training
    returns the two logits separately (for a distillation loss).
    """

    def __init__(
        self,
        depths: Sequence[int],
        embed_dims: Sequence[int],
        expansion_ratios: Sequence[Sequence[float]],
        num_vit: int,
        num_classes: int = 1000,
        img_size: int = 224,
        distillation: bool = True,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-5,
        act_layer: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        img_size = int(img_size)
        if img_size < 32 or img_size % 32:
            raise ConfigError(
                f"EfficientFormerV2 needs an input size divisible by 32 (got img_size={img_size}); "
                f"use e.g. {max(32, round(img_size / 32) * 32)}."
            )
        if len(depths) != 4 or len(embed_dims) != 4 or len(expansion_ratios) != 4:
            raise ConfigError(
                "EfficientFormerV2 has four stages: depths, embed_dims and expansion_ratios need 4 entries each"
            )
        for i, (depth, ratios) in enumerate(zip(depths, expansion_ratios)):
            if len(ratios) != depth:
                raise ConfigError(f"stage {i}: {len(ratios)} expansion ratios for {depth} blocks")
        self.img_size = img_size
        self.num_classes = num_classes
        self.num_features = embed_dims[-1]
        self.distilled_training = False

        self.patch_embed = nn.Sequential(
            nn.Conv2d(3, embed_dims[0] // 2, 3, stride=2, padding=1),
            nn.BatchNorm2d(embed_dims[0] // 2),
            act_layer(),
            nn.Conv2d(embed_dims[0] // 2, embed_dims[0], 3, stride=2, padding=1),
            nn.BatchNorm2d(embed_dims[0]),
            act_layer(),
        )
        total = sum(depths)
        network: list[nn.Module] = []
        done = 0
        for i, depth in enumerate(depths):
            resolution = img_size // 2 ** (i + 2)
            blocks = []
            for j in range(depth):
                dpr = drop_path_rate * (done + j) / max(total - 1, 1)
                ratio = expansion_ratios[i][j]
                if i >= 2 and j >= depth - num_vit:  # the last num_vit blocks of stages 3, 4
                    stride = 2 if i == 2 else None
                    blocks.append(
                        AttnFFN(embed_dims[i], ratio, act_layer, dpr, layer_scale_init_value, resolution, stride)
                    )
                else:
                    blocks.append(FFN(embed_dims[i], ratio, act_layer, dpr, layer_scale_init_value))
            done += depth
            network.append(nn.Sequential(*blocks))
            if i < 3:
                network.append(
                    Embedding(embed_dims[i], embed_dims[i + 1], asub=i >= 2, resolution=resolution, act_layer=act_layer)
                )
        self.network = nn.ModuleList(network)
        self.norm = nn.BatchNorm2d(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes)
        self.dist_head = nn.Linear(embed_dims[-1], num_classes) if distillation else None
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # -- forward --------------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised feature map after the last stage, (B, C, H/32, W/32)."""
        if not _exporting():
            if x.ndim != 4 or tuple(x.shape[-2:]) != (self.img_size, self.img_size):
                raise ConfigError(
                    f"this EfficientFormerV2 was built for {self.img_size}x{self.img_size} inputs, got "
                    f"{tuple(x.shape)}; build it with create(..., img_size=H) for another size."
                )
        x = self.patch_embed(x)
        for stage in self.network:
            x = stage(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Class logits (B, num_classes): the mean of both heads (see the class docstring)."""
        pooled = self.forward_features(x).mean(dim=(2, 3))
        logits = self.head(pooled)
        if self.dist_head is None:
            return logits
        dist = self.dist_head(pooled)
        if self.training and self.distilled_training:
            return logits, dist
        return (logits + dist) / 2

    @property
    def head_names(self) -> tuple[str, ...]:
        """The classifier heads in use: ``("head", "dist_head")``, or ``("head",)`` without
        distillation (or once export has merged the two)."""
        return ("head", "dist_head") if self.dist_head is not None else ("head",)

    # -- checkpoint hooks (see staredge.models.checkpoint.load_state_dict) ------------------

    def attention_modules(self) -> dict[str, _AttentionBiasMixin]:
        """Modules with learned attention biases, by qualified name."""
        return {n: m for n, m in self.named_modules() if isinstance(m, _AttentionBiasMixin)}

    def after_load(self) -> None:
        """Refresh every eval-time attention-bias cache (the loader calls this after loading)."""
        for module in self.attention_modules().values():
            module.refresh_attention_bias_cache()

    def filter_checkpoint(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a checkpoint onto this model's (official) layout.

        * timm's layout is detected by its ``stem.``/``stages.`` keys and renamed;
        * ``attention_bias_idxs`` are taken from this model (timm files have none, and a
          file trained at another resolution has other ones);
        * ``attention_biases`` of another grid size are resized bicubically to this model's
          grid, treating each head's (R*R,) table as an R x R image of offsets (|dy|, |dx|).
        """
        sd = dict(state_dict)
        if any(k.startswith(("stem.", "stages.")) for k in sd):
            sd = _timm_to_official(sd, self)
        for name, module in self.attention_modules().items():
            prefix = f"{name}."
            sd[prefix + "attention_bias_idxs"] = module.attention_bias_idxs.clone()
            key = prefix + "attention_biases"
            if key in sd and sd[key].ndim == 2 and sd[key].shape != module.attention_biases.shape:
                sd[key] = _resize_attention_biases(sd[key], module.attention_biases.shape, key)
        return sd

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """(conv, batchnorm) module names where the BN directly follows the conv.

        Covers the pairs a Sequential-based fuser would not see: the Mlp's sibling
        ``fc1``/``norm1``, ``mid``/``mid_norm``, ``fc2``/``norm2`` and the downsamplers'
        ``proj``/``norm`` and ``conv``/``bn``. Pairs inside ``nn.Sequential`` (stem, q/k/v,
        v_local, stride_conv, proj, LGQuery.proj) are listed too, for completeness.
        """
        pairs: list[tuple[str, str]] = []
        for name, module in self.named_modules():
            p = f"{name}." if name else ""
            if isinstance(module, Mlp):
                pairs += [(p + "fc1", p + "norm1"), (p + "mid", p + "mid_norm"), (p + "fc2", p + "norm2")]
            elif isinstance(module, Embedding):
                pairs.append((p + "conv", p + "bn") if module.asub else (p + "proj", p + "norm"))
            elif isinstance(module, nn.Sequential):
                children = list(module.named_children())
                for (n1, m1), (n2, m2) in zip(children, children[1:]):
                    if isinstance(m1, nn.Conv2d) and isinstance(m2, nn.BatchNorm2d):
                        pairs.append((p + n1, p + n2))
        return pairs


    # -- export hook (see staredge.models.folds) --------------------------------------------

    def inference_folds(self) -> InferenceFolds:
        """What the export passes may fold for inference.

        Every pair of :meth:`conv_bn_pairs`; the layer scales, each of which scales a branch
        ending in a conv+BN (``layer_scale_2``: the Mlp's ``fc2``/``norm2``;
        ``layer_scale_1``: the attention's ``proj`` conv+BN); the final ``norm``, which is
        only average-pooled into the heads; and the two heads, which eval averages (the
        forward treats ``dist_head = None`` as no distillation head).
        """
        scales: list[tuple[str, str]] = []
        for name, module in self.named_modules():
            p = f"{name}." if name else ""
            if isinstance(module, (FFN, AttnFFN)):
                scales.append((p + "layer_scale_2", p + "mlp.fc2"))
            if isinstance(module, AttnFFN):
                scales.append((p + "layer_scale_1", p + "token_mixer.proj.1"))
        heads = self.head_names
        return InferenceFolds(
            conv_bn=tuple(self.conv_bn_pairs()),
            pooled_norm="norm",
            heads=heads,
            averaged_heads=heads if len(heads) > 1 else (),
            layer_scales=tuple(scales),
        )


def _resize_attention_biases(biases: torch.Tensor, shape: torch.Size, key: str) -> torch.Tensor:
    heads, n_src = biases.shape
    side_src = math.isqrt(n_src)
    side_dst = math.isqrt(shape[1])
    if side_src * side_src != n_src or heads != shape[0]:
        raise CheckpointError(
            f"{key}: cannot resize attention biases of shape {tuple(biases.shape)} to {tuple(shape)} "
            f"(need the same number of heads and a square offset grid)"
        )
    grid = biases.detach().float().reshape(1, heads, side_src, side_src)
    grid = F.interpolate(grid, size=(side_dst, side_dst), mode="bicubic", align_corners=False)
    return grid.reshape(heads, side_dst * side_dst).to(biases.dtype)


# Renames inside one timm block / downsampler, applied to the part of the key after the
# block prefix. Order matters only in that each key matches at most one pattern.
_TIMM_BLOCK_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in [
        (r"^mlp\.fc1\.conv\.", "mlp.fc1."),
        (r"^mlp\.fc1\.bn\.", "mlp.norm1."),
        (r"^mlp\.mid\.conv\.", "mlp.mid."),
        (r"^mlp\.mid\.bn\.", "mlp.mid_norm."),
        (r"^mlp\.fc2\.conv\.", "mlp.fc2."),
        (r"^mlp\.fc2\.bn\.", "mlp.norm2."),
        # attention (token_mixer in blocks, attn in the downsampler)
        (r"^(token_mixer|attn)\.q\.local\.", r"\1.q.local.0."),
        (r"^(token_mixer|attn)\.q\.proj\.conv\.", r"\1.q.proj.0."),
        (r"^(token_mixer|attn)\.q\.proj\.bn\.", r"\1.q.proj.1."),
        (r"^(token_mixer|attn)\.(q|k|v|v_local|stride_conv)\.conv\.", r"\1.\2.0."),
        (r"^(token_mixer|attn)\.(q|k|v|v_local|stride_conv)\.bn\.", r"\1.\2.1."),
        (r"^(token_mixer|attn)\.proj\.conv\.", r"\1.proj.1."),
        (r"^(token_mixer|attn)\.proj\.bn\.", r"\1.proj.2."),
    ]
)


def _timm_to_official(sd: dict[str, torch.Tensor], model: EfficientFormerV2) -> dict[str, torch.Tensor]:
    """Rename a timm-layout state_dict to the official layout of ``model``."""
    stem = {"stem.conv1.conv.": "patch_embed.0.", "stem.conv1.bn.": "patch_embed.1.",
            "stem.conv2.conv.": "patch_embed.3.", "stem.conv2.bn.": "patch_embed.4."}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        new = key
        for old_prefix, new_prefix in stem.items():
            if key.startswith(old_prefix):
                new = new_prefix + key[len(old_prefix):]
        if key.startswith("head_dist."):
            new = "dist_head." + key[len("head_dist."):]
        m = re.match(r"^stages\.(\d+)\.(blocks\.(\d+)|downsample)\.(.*)$", key)
        if m:
            stage, rest = int(m.group(1)), m.group(4)
            if m.group(3) is not None:
                prefix = f"network.{2 * stage}.{m.group(3)}."
            else:
                if stage == 0 or 2 * stage - 1 >= len(model.network):
                    raise CheckpointError(f"timm key {key!r} names a downsampler this model does not have")
                prefix = f"network.{2 * stage - 1}."
                asub = getattr(model.network[2 * stage - 1], "asub", False)
                # timm wraps the downsampler's conv+BN as conv.{conv,bn}
                rest = re.sub(r"^conv\.conv\.", "conv." if asub else "proj.", rest)
                rest = re.sub(r"^conv\.bn\.", "bn." if asub else "norm.", rest)
            if rest in ("ls1.gamma", "ls2.gamma"):
                rest = "layer_scale_1" if rest == "ls1.gamma" else "layer_scale_2"
                value = value.reshape(-1, 1, 1)
            for pattern, repl in _TIMM_BLOCK_RULES:
                rest, n = pattern.subn(repl, rest)
                if n:
                    break
            new = prefix + rest
        out[new] = value
    return out


# ---------------------------------------------------------------------------------------
# Variants (EfficientFormerV2 paper, supplementary Table 8) and registration
# ---------------------------------------------------------------------------------------

_VARIANTS: dict[str, dict] = {
    "s0": dict(
        depths=(2, 2, 6, 4),
        embed_dims=(32, 48, 96, 176),
        expansion_ratios=((4, 4), (4, 4), (4, 3, 3, 3, 4, 4), (4, 3, 3, 4)),
        num_vit=2,
    ),
    "s1": dict(
        depths=(3, 3, 9, 6),
        embed_dims=(32, 48, 120, 224),
        expansion_ratios=((4,) * 3, (4,) * 3, (4, 4, 3, 3, 3, 3, 4, 4, 4), (4, 4, 3, 3, 4, 4)),
        num_vit=2,
    ),
    "s2": dict(
        depths=(4, 4, 12, 8),
        embed_dims=(32, 64, 144, 288),
        expansion_ratios=((4,) * 4, (4,) * 4, (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4)),
        num_vit=4,
        drop_path_rate=0.02,
    ),
    "l": dict(
        depths=(5, 5, 15, 10),
        embed_dims=(40, 80, 192, 384),
        expansion_ratios=(
            (4,) * 5,
            (4,) * 5,
            (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
            (4, 4, 4, 3, 3, 3, 3, 4, 4, 4),
        ),
        num_vit=6,
        drop_path_rate=0.1,
    ),
}

# The papers' counter skips BatchNorm (fused for inference) and counts both heads and the
# attention matmuls. Our MACs follow the same convention (staredge.profiler); for params,
# params_convention="no_bn" makes `staredge models` show our count without BN, and each
# note repeats it (tests/test_efficientformer_v2.py checks these figures against the model).
_NOTE = "paper params exclude BN: ours w/o BN {}M ({}); MACs: both heads + attention matmuls, no BN"
_SOURCE = "EfficientFormerV2 paper Table 2; supplementary Tables 2/8"

# Params (M), MACs (M), ImageNet-1k top-1 (distilled, 300 epochs; S0 also in the
# EfficientFormerV2 supplementary material, Table 6, S1 in its Table 3; S2 and L from the main
# paper). The released *_450.pth weights were trained for 450 epochs (S1: 79.7, supplementary
# Table 3).
_PAPER = {
    "s0": PaperFigures(3.5, 400, 75.7, _SOURCE, _NOTE.format("3.551", "+1.5%"), params_convention="no_bn"),
    "s1": PaperFigures(6.1, 650, 79.0, _SOURCE, _NOTE.format("6.115", "+0.2%"), params_convention="no_bn"),
    "s2": PaperFigures(12.6, 1250, 81.6, _SOURCE, _NOTE.format("12.588", "-0.1%"), params_convention="no_bn"),
    "l": PaperFigures(26.1, 2560, 83.3, "EfficientFormerV2 paper Table 2; supplementary Table 8",
                      _NOTE.format("26.126", "+0.1%"), params_convention="no_bn"),
}

# The official evaluation resizes to 256/224 of the crop with bicubic interpolation.
_CFG = PretrainedConfig(input_size=(3, 224, 224), crop_pct=0.875, interpolation="bicubic")

for _variant, _kwargs in _VARIANTS.items():
    register(
        ModelEntry(
            name=f"efficientformerv2_{_variant}",
            family="efficientformer_v2",
            builder=EfficientFormerV2,
            kwargs=_kwargs,
            cfg=_CFG,
            paper=_PAPER[_variant],
            description=(
                f"EfficientFormerV2-{_variant.upper()}: widths {list(_kwargs['embed_dims'])}, depths "
                f"{list(_kwargs['depths'])}, {_kwargs['num_vit']} attention blocks in stages 3 and 4"
            ),
        )
    )
