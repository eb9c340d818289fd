"""Every concrete choice the STAR paper leaves open, in one place.

The STAR paper ("STAR: Synthesis of Tailored Architectures", Appendix A.6) names the LIV classes and their operator genomes but
not head sizes, kernel lengths, state sizes, initialisation or the meaning of each sharing
strategy value. Our answers live here so that the docs (docs/star-lm.md) can cite them and
so that they can be changed in one place. The operator table built from these values is in
the docstring of :mod:`staredge.models.star.liv`.
"""

from __future__ import annotations

# --- Vocabulary: bytes plus three specials ------------------------------------------------
BYTE_VOCAB = 256
BOS_ID = 256
EOS_ID = 257
PAD_ID = 258
VOCAB_SIZE = 259

# --- Backbone -------------------------------------------------------------------------------
NORM_EPS = 1e-5  # RMSNorm epsilon (pre-norm per LIV and the final norm)
INIT_STD = 0.02  # normal init of every projection and the embedding
MAX_SEQ_LEN = 2048  # default context; also the normalisation length of GConv-2 filters

# --- Attention (classes 1-4, differential 10-13) --------------------------------------------
HEAD_DIM = 64  # heads = dim // HEAD_DIM (at least 1); override per class with LIVConfig(head_dim=...)
ROPE_BASE = 10000.0  # rotary embedding base; rotate-half convention
ROPE_TABLE_MAX = 8192  # positions whose rotary angles each attention LIV precomputes
SA2_CONV_KERNEL = 3  # SA-2: causal depthwise conv on q, k and v
GQA_REPEAT = {1: 1, 2: 1, 3: 4, 4: 2}  # query heads per K/V head, per base attention class

# --- Recurrences (classes 5-6, differential 14-15): Mamba-style selective scan ------------
REC_EXPAND = 2  # d_inner = REC_EXPAND * dim, as in Mamba
REC_STATE = {5: 16, 6: 2}  # state size N per channel (the paper's B/C expansion factor 16 / 2)
REC_CONV_KERNEL = 4  # short causal depthwise conv on x (decode ring holds kernel-1 steps)
REC_DT_RANK_DIVISOR = 16  # Δ goes through a rank ceil(dim/16) bottleneck, as in Mamba
REC_DT_MIN, REC_DT_MAX = 1e-3, 0.1  # initial Δ range (softplus bias init, as in Mamba)

# --- Gated convolutions (classes 7-8, differential 16-17) -----------------------------------
GCONV_KERNEL = 3  # GConv-1 explicit short filter length
LONGCONV_EMB_FREQS = 3  # GConv-2 positional features: t/L plus sin/cos of this many frequencies
LONGCONV_MLP_HIDDEN = 16  # hidden width of the implicit filter MLP (sin activation)
LONGCONV_DECAY_RANGE = (1e-3, 0.3)  # per-channel exponential decay rates per token (log-spaced)
LONGCONV_DIRECT_MAX_NEW = 16  # step form: direct sum for <= this many new tokens, else FFT

# --- Gated memoryless unit (class 9): SwiGLU -------------------------------------------------
SWIGLU_MULT = 8 / 3
SWIGLU_MULTIPLE = 256  # hidden = ceil(8/3 * dim / 256) * 256

# --- Differential variants (classes 10-17) ----------------------------------------------------
DIFF_LAMBDA_DIM = 16  # size of the λ re-parametrisation vectors for non-attention classes
# λ_init(layer) = 0.8 - 0.6 * exp(-0.3 * layer), layer = 0-based LIV index (Differential Transformer)
DIFF_LAMBDA_INIT = (0.8, 0.6, 0.3)

# --- Genome ----------------------------------------------------------------------------------
NUM_CLASSES = 17
CLASS_NAMES = {
    1: "SA-1", 2: "SA-2", 3: "SA-3", 4: "SA-4", 5: "Rec-1", 6: "Rec-2", 7: "GConv-1",
    8: "GConv-2", 9: "GMemless",
}
CLASS_NAMES.update({10 + i: f"Diff-{CLASS_NAMES[1 + i]}" for i in range(8)})

#: The paper's operator genome per base class (featurizer, token mixing, sparsity,
#: nonlinearity, channel mixing), Appendix A.6.2. Differential classes use their base's.
OPERATOR_GENOMES = {
    1: (1, 2, 1, 2, 3), 2: (2, 2, 1, 2, 3), 3: (3, 2, 1, 2, 3), 4: (4, 2, 1, 2, 3),
    5: (5, 4, 1, 1, 1), 6: (6, 4, 1, 1, 1), 7: (7, 3, 1, 1, 1), 8: (8, 3, 1, 1, 1),
    9: (9, 1, 1, 4, 2),
}

FEATURIZER_STRATEGIES = {1: "no weights shared", 2: "all featurizer weights shared"}

#: Feature groups per base class (what a featurizer produces).
FEATURE_GROUPS = {
    "attention": ("q", "k", "v"),
    "recurrence": ("x", "z", "dt", "B", "C"),
    "gconv": ("B", "x", "C"),
    "memless": ("gate", "up"),
}

#: Feature-group sharing strategies (gene 5): value -> groups a consumer takes from its
#: producer. Value 1 never shares. For gated convs, sharing B and x means sharing their
#: product u = B*x, i.e. the convolution input and hence its cache.
SHARING_STRATEGIES = {
    "attention": {1: (), 2: ("k",), 3: ("v",), 4: ("k", "v")},
    "recurrence": {1: (), 2: ("B", "C"), 3: ("dt", "B", "C"), 4: ("x",), 5: ("x", "dt", "B", "C")},
    "gconv": {1: (), 2: ("C",), 3: ("B", "x"), 4: ("B", "x", "C")},
    "memless": {1: (), 2: ("gate",), 3: ("gate", "up")},
}


def base_class(liv_class: int) -> int:
    """The base class (1-9) of a LIV class; differential classes 10-17 map to 1-8."""
    return liv_class - 9 if liv_class >= 10 else liv_class


def family(liv_class: int) -> str:
    """Operator family of a class: attention, recurrence, gconv or memless."""
    b = base_class(liv_class)
    return "attention" if b <= 4 else "recurrence" if b <= 6 else "gconv" if b <= 8 else "memless"


def is_differential(liv_class: int) -> bool:
    """Whether a class is a differential variant (10-17)."""
    return liv_class >= 10


def valid_feature_strategies(liv_class: int) -> tuple[int, ...]:
    """Valid values of gene 5 for a class."""
    return tuple(SHARING_STRATEGIES[family(liv_class)])
