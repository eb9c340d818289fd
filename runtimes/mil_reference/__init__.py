"""A numpy reference executor for the CoreML ML Programs StarEdge exports.

Apple's CoreML runtime exists only on Apple platforms and no public engine executes an
``.mlpackage`` anywhere else, yet users need to know that an exported package computes
the right numbers before it reaches a Mac or an iPhone. :class:`MILExecutor` reads the
package itself and runs its MIL program with numpy:

* ``Manifest.json`` names the root model file (``Data/com.apple.CoreML/model.mlmodel``), a
  ``CoreML.Specification.Model`` protobuf (parsed with the message classes that ship with
  coremltools, loaded without importing the rest of coremltools, which drags in torch);
* weights stored outside the spec (``blobFileValue``) are read from the MIL blob storage
  file (``weights/weight.bin``) by our own reader (:class:`BlobFile`);
* the ``main`` function's operations run in program order, each with numpy.

Precision: each op computes in float32 (fp16 inputs are widened) and its results are
stored in the dtype the program declares for them. An fp16 program therefore rounds every
intermediate tensor to fp16, like a device that stores activations in fp16, while the
arithmetic inside one op accumulates in fp32 (Apple's GPU/ANE kernels may accumulate in
fp16, so expect fp16 programs to differ from a device by about fp16 resolution).

The executor covers the ops our exporters emit for StarNet, DemoNet and EfficientFormerV2
plus their close relatives (:data:`SUPPORTED_OPS`). A program holding any other op is
refused when it is loaded, with :class:`UnsupportedOpError` naming the op(s) and the model;
nothing is approximated silently. It exists for validation, not speed.

The package: :mod:`.package` reads ``Manifest.json`` and the model spec, :mod:`.blobs` the
weight file, :mod:`.kernels` holds one numpy kernel per MIL op (registered with
``@kernel``), :mod:`.executor` runs the program.
"""

from __future__ import annotations

from staredge.runtimes.mil_reference.blobs import BlobFile
from staredge.runtimes.mil_reference.dtypes import FeatureInfo
from staredge.runtimes.mil_reference.errors import MILInputError, MILProgramError, UnsupportedOpError
from staredge.runtimes.mil_reference.executor import MILExecutor
from staredge.runtimes.mil_reference.kernels import KERNELS, SUPPORTED_OPS, kernel
from staredge.runtimes.mil_reference.package import load_model_spec, model_spec_path

__all__ = [
    "KERNELS",
    "MILExecutor",
    "MILProgramError",
    "UnsupportedOpError",
    "MILInputError",
    "BlobFile",
    "FeatureInfo",
    "SUPPORTED_OPS",
    "kernel",
    "load_model_spec",
    "model_spec_path",
]
