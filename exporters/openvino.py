"""OpenVINO IR exporter (``.xml`` graph + ``.bin`` weights).

``ov.save_model`` compresses weights to fp16 by default (its ``compress_to_fp16``
argument); fp32 artifacts pass ``compress_to_fp16=False`` so that fp32 stays fp32.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from staredge.errors import ConfigError, require
from staredge.metadata import METADATA_KEY, ArtifactMetadata


def export_openvino(
    model: nn.Module,
    path: str | os.PathLike,
    metadata: ArtifactMetadata,
    precision: str = "fp32",
    *,
    example_input: torch.Tensor,
    dynamic_batch: bool = False,
) -> Path:
    """Write ``model`` as OpenVINO IR at ``path`` (the ``.xml``; the ``.bin`` goes beside it).

    The metadata JSON is stored in the model's ``rt_info`` under ``staredge``. The input
    and output tensors are named after ``metadata.input_name``/``output_names``. With
    ``precision="fp16"`` weights are stored as fp16 (OpenVINO decompresses them at load).
    """
    ov = require("openvino", "openvino", "OpenVINO export")
    if precision not in ("fp32", "fp16"):
        raise ConfigError(f"OpenVINO export supports precision fp32 or fp16, not {precision!r}")
    path = Path(path)
    if path.suffix != ".xml":
        raise ConfigError(f"an OpenVINO IR path must end in .xml, got {path}")
    shape = list(example_input.shape)
    if dynamic_batch:
        shape[0] = -1
    with torch.no_grad():
        ov_model = ov.convert_model(model, example_input=example_input, input=[ov.PartialShape(shape)])
    ov_model.inputs[0].get_tensor().set_names({metadata.input_name})
    for out, name in zip(ov_model.outputs, metadata.output_names):
        out.get_tensor().set_names({name})
    ov_model.set_friendly_name(metadata.model)
    ov_model.set_rt_info(metadata.to_json(), [METADATA_KEY])
    ov.save_model(ov_model, str(path), compress_to_fp16=(precision == "fp16"))
    return path
