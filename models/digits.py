"""The digits model: StarNet-050 trained on real handwritten digits (what ``staredge demo`` runs).

StarNet-050's widths and depths (StarNet paper, supplementary Table 13) with a 10-class
head, trained by ``scripts/train_digits.py`` on scikit-learn's 1,797 digit scans (8x8,
upsampled to 32x32 by the same preprocessing every runtime uses). The weights ship as
package data (``staredge/data/digits.safetensors``); ``create("starnet_digits",
checkpoint=digits_weights())`` builds the trained model.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from staredge.errors import ConfigError
from staredge.models.registry import ModelEntry, PaperFigures, PretrainedConfig, get_entry, register
from staredge.models.starnet import StarNet

NAME = "starnet_digits"
#: The registered architecture the digits model shares its widths and depths with.
BASE_MODEL = "starnet_s050"
LABELS = tuple(str(i) for i in range(10))
WEIGHTS_FILE = "digits.safetensors"
#: Package data beside the weights: the class names and the held-out split.
LABELS_FILE = "digits_labels.txt"
SPLIT_FILE = "digits_heldout.json"

#: 32x32, no crop, bicubic; the scaled digits' pixel statistics are far from ImageNet's, so
#: 0.5/0.5 maps [0, 1] to [-1, 1].
DIGITS_CONFIG = PretrainedConfig(
    input_size=(3, 32, 32), crop_pct=1.0, interpolation="bicubic",
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), num_classes=10, labels="digits", names=LABELS,
)


def _data_file(name: str):
    ref = resources.files("staredge").joinpath("data", name)
    if not ref.is_file():
        raise ConfigError(
            f"package data staredge/data/{name} is missing; run `python scripts/train_digits.py` "
            f"to train the digits model and write it"
        )
    return ref


def digits_images():
    """All 1,797 scikit-learn digits as 8x8 uint8 grey images (0..255) and their labels
    (numpy arrays); scikit-learn is the ``dev`` extra."""
    import numpy as np

    from staredge.errors import require

    datasets = require("sklearn.datasets", "dev", "the digits data set")
    d = datasets.load_digits()
    # The scans hold 0..16 ink levels; scale to the full 8-bit range a camera image has.
    images = np.rint(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return images, d.target.astype(np.int64)


def heldout_indices() -> list[int]:
    """Indices of the held-out digits (never used in training), from the shipped split."""
    import json

    text = _data_file(SPLIT_FILE).read_text("utf-8")
    return [int(i) for i in json.loads(text)["heldout"]]


def digits_weights() -> Path:
    """Path of the shipped digits weights (safetensors with StarEdge metadata in its header)."""
    ref = resources.files("staredge").joinpath("data", WEIGHTS_FILE)
    if not ref.is_file():
        raise ConfigError(
            f"package data staredge/data/{WEIGHTS_FILE} is missing; run `python scripts/train_digits.py` "
            f"to train the digits model and write it"
        )
    return Path(str(ref))


register(
    ModelEntry(
        name=NAME,
        family="starnet",
        builder=StarNet,
        kwargs={**get_entry(BASE_MODEL).kwargs, "num_classes": 10},
        cfg=DIGITS_CONFIG,
        paper=PaperFigures(source="trained here", note="StarNet-050 with a 10-class head, trained on scikit-learn digits"),
        description="StarNet-050 trained on scikit-learn's handwritten digits (the demo model)",
        packaged_weights=digits_weights,  # create(NAME, pretrained=True) / --pretrained: the shipped weights
    )
)


def digits_model(weights: str | Path | None = None):
    """The digits StarNet (registry name ``starnet_digits``), with ``weights`` loaded if given.

    Exporters read ``.staredge_name`` and ``.pretrained_cfg`` from the module, so artifacts
    made from it carry the digit labels and the 32x32 preprocessing.
    """
    from staredge.models.registry import create

    return create(NAME, checkpoint=None if weights is None else str(weights))


def digits_metadata_json(model, heldout_accuracy: float | None = None, extra: dict | None = None) -> str:
    """The StarEdge metadata document stored in the weights file's header (one builder:
    :func:`staredge.metadata.metadata_from_model`)."""
    from staredge.formats import CHECKPOINT_FORMAT
    from staredge.metadata import metadata_from_model

    meta = metadata_from_model(model, CHECKPOINT_FORMAT, dynamic_batch=True, extra={
        "dataset": "scikit-learn load_digits", "heldout_accuracy": heldout_accuracy, **(extra or {})})
    return meta.to_json()
