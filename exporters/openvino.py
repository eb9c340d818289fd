"""OpenVINO IR exporter (``.xml`` graph + ``.bin`` weights).

``ov.save_model`` compresses weights to fp16 by default (its ``compress_to_fp16``
argument); fp32 artifacts pass ``compress_to_fp16=False`` so that fp32 stays fp32.
int8 artifacts are made by NNCF post-training quantisation (``nncf.quantize``, the tool
OpenVINO ships for it; the ``openvino`` extra pins a release that works with the pinned
openvino): FakeQuantize nodes with ranges from the calibration inputs, which OpenVINO's CPU
plugin executes as int8 kernels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
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
    calibration: np.ndarray | None = None,
) -> Path:
    """Write ``model`` as OpenVINO IR at ``path`` (the ``.xml``; the ``.bin`` goes beside it).

    The metadata JSON is stored in the model's ``rt_info`` under ``staredge``. The input
    and output tensors are named after ``metadata.input_name``/``output_names``. With
    ``precision="fp16"`` weights are stored as fp16 (OpenVINO decompresses them at load);
    ``precision="int8"`` quantises with NNCF on ``calibration`` (an (N, C, H, W) array, required).
    """
    ov = require("openvino", "openvino", "OpenVINO export")
    if precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"OpenVINO export supports precision fp32, fp16 or int8, not {precision!r}")
    if precision == "int8" and calibration is None:
        raise ConfigError("OpenVINO int8 export needs calibration inputs (calibration=...)")
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
    if precision == "int8":
        ov_model = quantize_nncf(ov_model, calibration, batch=int(example_input.shape[0]))
    ov_model.set_friendly_name(metadata.model)
    ov_model.set_rt_info(metadata.to_json(), [METADATA_KEY])
    ov.save_model(ov_model, str(path), compress_to_fp16=(precision == "fp16"))
    return path


def quantize_nncf(ov_model, calibration: np.ndarray, batch: int = 1):
    """``ov_model`` quantised by NNCF post-training quantisation on ``calibration``.

    Default (performance) preset: symmetric int8 weights per output channel and activations
    with min/max ranges; every calibration sample is used (``subset_size``). Returns the
    quantised ``ov.Model``.
    """
    nncf = require("nncf", "openvino", "OpenVINO int8 quantisation (NNCF)")
    from staredge.exporters.quantize import batches

    items = batches(np.asarray(calibration, dtype=np.float32), batch)
    import contextlib
    import logging
    import sys

    previous = logging.getLogger("nncf").level
    logging.getLogger("nncf").setLevel(logging.ERROR)  # NNCF logs progress bars per statistic
    try:
        # NNCF's own progress bar writes to stdout, where a command's tables and JSON go:
        # send it to stderr (the CLI's converter log)
        with contextlib.redirect_stdout(sys.stderr):
            return nncf.quantize(ov_model, nncf.Dataset(items), subset_size=len(items))
    finally:
        logging.getLogger("nncf").setLevel(previous)
