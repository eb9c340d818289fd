"""Typed errors. Every error StarEdge raises on purpose derives from :class:`StarEdgeError`.

Catch ``StarEdgeError`` to handle anything the SDK reports about bad input, missing
optional runtimes or failed validation; anything else escaping the SDK is a bug.
"""

from __future__ import annotations


class StarEdgeError(Exception):
    """Base class of every error StarEdge raises on purpose."""


class UnknownModelError(StarEdgeError, KeyError):
    """A model name is not in the registry."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(StarEdgeError):
    """A checkpoint cannot be read safely, or does not fit the model it is loaded into."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holds pickled objects outside the allow-list; nothing of it was executed."""


class ConfigError(StarEdgeError, ValueError):
    """An argument or configuration value is invalid."""


class MissingDependencyError(StarEdgeError, ImportError):
    """An optional dependency (a runtime or converter) is not installed.

    The message names the pip extra that provides it.
    """


def require(module: str, extra: str, what: str | None = None):
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        thing = what or module
        raise MissingDependencyError(
            f"{thing} needs the Python package '{module.split('.')[0]}', which is not installed "
            f"({exc}). Install it with: pip install -c constraints.txt 'staredge[{extra}]'"
        ) from exc


class ArtifactExistsError(ConfigError, FileExistsError):
    """An output (artifact, report, results file) exists and overwriting was not requested."""


class OutputPathError(ConfigError, OSError):
    """A file or folder StarEdge was asked to write cannot be written there (``/proc/x``, a
    read-only folder, a file where a folder must be); the message names the path."""


class DeviceError(ConfigError):
    """The requested device (CUDA, TensorRT, an OpenVINO GPU, Apple hardware) is not available
    to this runtime or on this machine. The one device error of the package."""


class LimitError(ConfigError):
    """A size that a user or a file controls is over one of StarEdge's documented limits.

    The message names the limit (a module constant or an argument) and its value; the
    check runs before anything of that size is allocated. See docs/security.md.
    """


class ExportError(StarEdgeError):
    """A conversion failed; nothing was written for that format.

    Every format's export error derives from it (``CoreMLExportError``...), so one
    ``except ExportError`` catches them all. Re-exported by :mod:`staredge.exporters`.
    """


class NonFiniteWeightsError(ExportError):
    """A model holds NaN or Inf weights; export refuses it before any conversion. The message
    names the first such tensor (``head.bias``) and how many of its values are not finite."""


class ArtifactError(StarEdgeError):
    """An artifact cannot be loaded: missing, truncated, corrupt or not what its suffix says."""


class ArtifactIntegrityError(ArtifactError):
    """An artifact's weights do not match the digest recorded in its metadata at export (a
    flipped byte, a truncated copy): it would run and compute wrong results. The message names
    the file(s); see :mod:`staredge.integrity`."""


class MetadataError(StarEdgeError):
    """An artifact has no StarEdge metadata, it cannot be parsed, or it disagrees with the
    artifact itself (a language model's ``lm`` section is checked against the graph's real
    inputs and outputs at load). The message names the field, its value and what the graph
    says. (Defined here so that every layer can raise it; ``staredge.metadata.MetadataError``
    is the same class.)"""


class StreamError(ConfigError):
    """A decode stream used wrongly: after it was closed, or from two threads at once."""


class InferenceError(StarEdgeError, RuntimeError):
    """A runtime failed while running a loaded artifact (its own exception is chained as
    ``__cause__``); the message names the runtime and the artifact."""


class CheckpointNotFoundError(UnknownModelError, CheckpointError):
    """A model was named by a checkpoint path (``x.pth``, ``dir/x``) that does not exist.

    Both an :class:`UnknownModelError` (it is not a registered name either) and a
    :class:`CheckpointError`, so code catching either keeps working.
    """


class HFCheckpointError(CheckpointError):
    """A Hugging Face model folder cannot be imported: a missing or truncated file, a pickle
    ``.bin`` instead of safetensors, a broken shard index, or a config StarEdge cannot map.

    The message names the file (and the tensor, for :class:`TensorMismatchError`).
    """


class UnsupportedArchitectureError(HFCheckpointError, ConfigError):
    """A Hugging Face ``config.json`` names a ``model_type`` that StarEdge has no mapping for."""


class TensorMismatchError(HFCheckpointError):
    """A checkpoint tensor is missing, unexpected, or has the wrong shape or dtype.

    ``tensor`` is the checkpoint name of the first offending tensor, ``file`` the file it is
    in (or should be in).
    """

    def __init__(self, message: str, tensor: str | None = None, file: str | None = None) -> None:
        super().__init__(message)
        self.tensor = tensor
        self.file = file


class TokenizerError(ConfigError):
    """A tokenizer cannot be loaded or does not fit its model (size, special tokens)."""


class ChatTemplateError(ConfigError):
    """A model has no chat template, or its template fails to render the given messages."""


class PickleWeightsRefusedError(HFCheckpointError, UnsafeCheckpointError):
    """A model folder holds its weights only as a pickle (``pytorch_model.bin``...): refused
    without opening it; convert it to safetensors where it is trusted."""
