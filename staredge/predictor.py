"""``Predictor``: one object that loads any StarEdge artifact and classifies images with it
(or, for a language model, streams text: ``Predictor("star_lm_pydoc.onnx").stream("The ")``).

    >>> from staredge import Predictor
    >>> p = Predictor("starnet_digits.onnx")          # or .xml, .tflite, .mlpackage, .safetensors
    >>> p.classify("seven.png", top_k=3)   # three (label, probability) pairs, most likely first

The runtime is chosen from the artifact (see :func:`staredge.runtimes.load_backend`);
labels, input size and preprocessing come from the metadata the artifact carries, so no
side file is needed. One Predictor may be shared by many threads: calls into runtimes
that are not thread-safe are serialised with a lock.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Sequence

import numpy as np

from staredge.errors import ConfigError
from staredge.labels import read_labels
from staredge.quiet import quiet_api
from staredge.preprocess import DEFAULT_MAX_PIXELS, ImageInputError, PreprocessConfig, preprocess
from staredge.runtimes import load_backend
from staredge.runtimes.base import InputShapeError

#: A ranked list of (label, probability) pairs for one image.
Ranking = list[tuple[str, float]]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable: the row maximum is subtracted first)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _check_predictor_args(batch_size: Any, max_pixels: Any) -> None:
    """Raise :class:`ConfigError` for a ``batch_size`` or ``max_pixels`` of the wrong type or range."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        hint = f"; pass batch_size={int(batch_size)}" if isinstance(batch_size, str) and batch_size.isdigit() else ""
        raise ConfigError(f"batch_size must be a positive integer, got {type(batch_size).__name__} {batch_size!r}{hint}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1):
        raise ConfigError(f"max_pixels must be a positive integer or None (no limit), got {max_pixels!r}")


def _check_backend_runs_format(path: str | os.PathLike, backend: str) -> None:
    """Raise :class:`ConfigError` when the runtime ``backend`` does not run ``path``'s format."""
    from staredge.formats import detect_format, get_runtime
    from staredge.metadata import MetadataError

    runtime = get_runtime(backend)
    try:
        fmt = detect_format(path)
    except MetadataError:
        return  # load_backend reports a missing or unknown artifact
    if fmt.name not in runtime.formats:
        runs = ", ".join(runtime.formats)
        raise ConfigError(
            f"the {runtime.name} runtime runs {runs} artifacts, and {path} is {fmt.title} (run by {fmt.runtime}); "
            f"drop backend= (--backends) to use {fmt.runtime}, or export the model for {runtime.name} with "
            f"`staredge export MODEL --formats {runtime.formats[0]}`"
        )


class Predictor:
    """Classify images with an exported artifact (or a PyTorch checkpoint) on its runtime.

    Args:
        path: the artifact: ``.onnx``, OpenVINO ``.xml`` (or its folder), ``.tflite``,
            ``.mlpackage``, or a PyTorch checkpoint that carries StarEdge metadata.
        device: "auto" (a GPU when the runtime has one, else the CPU), "cpu" or "cuda".
        threads: intra-op threads for the runtime; None means the physical cores this
            process may use, for every runtime and task (:mod:`staredge.threads`).
            ``self.backend.threads_in_effect()`` says what the runtime applied.
        backend: force a runtime by name or alias ("onnxruntime"/"ort", "openvino"/"ov",
            "litert"/"tflite", "coreml", "pytorch"); None chooses from the artifact. The
            runtime must run the artifact's format (see ``staredge.formats``): an ``.onnx``
            file runs on onnxruntime only; asking for another runtime is a
            :class:`ConfigError` that names the runtime to use (export another format with
            ``staredge export --formats``).
        labels: class names in output-index order (a list, or a text file with one name
            per line), replacing the names the artifact carries.
        max_pixels: refuse images larger than this many pixels (decompression bombs).
        batch_size: images per runtime call in :meth:`classify` when the artifact takes
            batches; artifacts with a fixed batch of 1 are called once per image.
        **options: passed to the backend (e.g. ``precision="bf16"`` for OpenVINO).
    """

    @quiet_api("predictor")  # third-party load messages go to the log (staredge.quiet.set_verbose shows them)
    def __init__(
        self,
        path: str | os.PathLike | Any,
        device: str = "auto",
        threads: int | None = None,
        backend: str | None = None,
        *,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        batch_size: int = 32,
        labels: Sequence[str] | str | os.PathLike | None = None,
        **options: Any,
    ) -> None:
        _check_predictor_args(batch_size, max_pixels)
        if backend is not None and isinstance(path, (str, os.PathLike)):
            _check_backend_runs_format(path, backend)
        self._labels = read_labels(labels) if labels is not None else None
        self.backend = load_backend(path, backend=backend, device=device, threads=threads, **options)
        self.metadata = self.backend.metadata
        self._preprocess_config: PreprocessConfig | None = None
        if self.metadata.task == "image-classification" and len(self.metadata.input_size) == 3:
            self.preprocess_config  # noqa: B018 - build now: bad preprocessing metadata fails at load
        self.max_pixels = max_pixels
        self.batch_size = batch_size
        # Runtimes that are not thread-safe (LiteRT interpreter, CoreML) get one lock;
        # the others run concurrently.
        self._lock = threading.Lock() if not self.backend.thread_safe else None

    # ------------------------------------------------------------------ properties

    @property
    def preprocess_config(self) -> PreprocessConfig:
        """How images are prepared for this artifact (from its metadata; built on first use,
        so that ``predict`` works for artifacts that do not take images)."""
        if self._preprocess_config is None:
            if self.metadata.task != "image-classification" or len(self.metadata.input_size) != 3:
                from staredge.formats import TEXT_GENERATION

                how = ("a language model: call generate() or stream() with a prompt (staredge generate on the "
                       "command line)" if self.metadata.task == TEXT_GENERATION else "call predict() with its inputs")
                raise ConfigError(
                    f"{self.metadata.model} is a {self.metadata.task!r} artifact with input size "
                    f"{self.metadata.input_size}, not an image classifier; {how}"
                )
            self._preprocess_config = PreprocessConfig.from_metadata(self.metadata)
        return self._preprocess_config

    @property
    def labels(self) -> list[str]:
        """Class names in output-index order: ``labels=`` if given, else the artifact's
        (generic names when it has none)."""
        if self._labels is not None:
            return list(self._labels)
        if self.metadata.labels:
            return list(self.metadata.labels)
        n = self._num_outputs()
        return [f"class_{i}" for i in range(n)]

    def _num_outputs(self) -> int:
        out = self.predict(np.zeros(self.backend.input_shape, dtype=np.float32))
        return int(out[0].shape[-1])

    # ------------------------------------------------------------------ raw outputs

    def predict(self, x: np.ndarray) -> list[np.ndarray]:
        """Raw outputs for a preprocessed float32 array (N, C, H, W) or (C, H, W).

        A (C, H, W) array is treated as a batch of one. An artifact with a fixed batch B
        (``staredge export --batch B``; 1 by default) is called once per B rows, the last call
        padded with zero rows whose outputs are dropped. Raises :class:`InputShapeError` for a
        wrong shape or dtype.
        """
        if isinstance(x, np.ndarray) and x.ndim == len(self.backend.input_shape) - 1:
            x = x[None]
        fixed = self.backend.fixed_batch
        if (isinstance(x, np.ndarray) and x.ndim == 4 and x.shape[0] != fixed and x.shape[0] > 0
                and not self.backend.supports_batch):
            n = x.shape[0]
            pad = (-n) % fixed
            if pad:
                x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), dtype=x.dtype)])
            self.backend.check_input(x[:fixed])  # shape and dtype errors before any work
            parts = [self._forward(x[i : i + fixed]) for i in range(0, x.shape[0], fixed)]
            return [np.concatenate([p[j] for p in parts])[:n] for j in range(len(parts[0]))]
        return self._forward(x)

    def _forward(self, x: np.ndarray) -> list[np.ndarray]:
        if self._lock is None:
            return self.backend.forward(x)
        with self._lock:
            return self.backend.forward(x)

    # ------------------------------------------------------------------ images

    def preprocess(self, img: Any) -> np.ndarray:
        """One image (path, bytes, PIL image or HWC uint8 array) → float32 (C, H, W)."""
        return preprocess(img, self.preprocess_config, self.max_pixels)

    def probabilities(self, images: Sequence[Any]) -> np.ndarray:
        """Class probabilities (N, num_classes) for several images, batched where allowed."""
        if len(images) == 0:
            raise ImageInputError("no images given; pass at least one image")
        step = self.batch_size if self.backend.supports_batch else self.backend.fixed_batch
        rows = []
        for start in range(0, len(images), step):
            chunk = np.stack([self.preprocess(im) for im in images[start : start + step]])
            logits = self.predict(chunk)[0]
            rows.append(logits.reshape(logits.shape[0], -1))
        logits = np.concatenate(rows)
        if not np.isfinite(logits).all():  # never rank NaN: [('tench', nan), ...] means nothing
            from staredge.errors import ArtifactError

            raise ArtifactError(
                f"{self.metadata.model}: the artifact's outputs are not finite (NaN or Inf) for "
                f"{int((~np.isfinite(logits).all(axis=1)).sum())} of {len(logits)} image(s); its weights are damaged "
                f"or it was exported from a diverged checkpoint: re-export it from good weights")
        return softmax(logits)

    def classify(self, img: Any, top_k: int = 5) -> Ranking | list[Ranking]:
        """The ``top_k`` most likely labels with their probabilities, most likely first.

        ``img`` is a path, bytes, a PIL image or an HWC uint8 array, which gives one ranked
        list; or a list/tuple of those, which gives one ranked list per image.
        """
        if not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
        many = isinstance(img, (list, tuple))
        probs = self.probabilities(list(img) if many else [img])
        labels = self.labels
        if self._labels is not None and len(labels) != probs.shape[1]:
            raise ConfigError(f"{len(labels)} labels given for a model with {probs.shape[1]} outputs; "
                              f"give one name per class (--labels FILE: one per line)")
        if len(labels) != probs.shape[1]:
            labels = [f"class_{i}" for i in range(probs.shape[1])]
        k = min(top_k, probs.shape[1])
        rankings = []
        for row in probs:
            # stable sort: equal probabilities keep index order on every runtime
            order = np.argsort(-row, kind="stable")[:k]
            rankings.append([(labels[i], float(row[i])) for i in order])
        return rankings if many else rankings[0]

    # ------------------------------------------------------------------ text

    def _text_backend(self) -> Any:
        if not callable(getattr(self.backend, "open_session", None)):
            raise ConfigError(
                f"{self.metadata.model} is a {self.metadata.task!r} artifact; stream()/generate() need a "
                f"text-generation artifact (e.g. staredge export star_lm_pydoc --formats onnx)")
        return self.backend

    def stream(self, prompt: Any = "", max_new_tokens: int = 128, temperature: float = 0.8,
               top_k: int | None = None, top_p: float = 0.95, repetition_penalty: float = 1.0,
               seed: int | None = None, stop: Any = None, **kwargs: Any) -> Any:
        """Stream text from a text-generation artifact: an iterator of text pieces
        (:class:`staredge.generation.TextStream`; ``.stats`` says what happened, ``.close()``
        cancels and frees the stream's state). Every call has its own decode state, so
        streams may run at once, from several threads. Arguments as
        :func:`staredge.generation.stream` (``truncate="left"``, ``add_bos``...); a prompt
        over the artifact's context raises :class:`~staredge.generation.ContextLengthError`."""
        from staredge.generation import stream

        kwargs.setdefault("tokenizer", self.tokenizer)  # the artifact's own (byte-level if it records none)
        return stream(self._text_backend(), prompt, max_new_tokens, temperature, top_k, top_p,
                      repetition_penalty, seed, stop, **kwargs)

    @property
    def tokenizer(self) -> Any:
        """The text-generation artifact's tokenizer (:func:`staredge.tokenizer.load_artifact_tokenizer`:
        the one its metadata carries, checked by hash; the byte tokenizer if it records none)."""
        if getattr(self, "_tokenizer", None) is None:
            from staredge.tokenizer import load_artifact_tokenizer

            self._tokenizer = load_artifact_tokenizer(self.backend.path, self.metadata.lm)
        return self._tokenizer

    def chat(self, messages: Any, max_new_tokens: int = 256, **kwargs: Any) -> Any:
        """Stream the reply to ``messages`` rendered with the artifact's chat template
        (:func:`staredge.chat.chat_stream`; sampling arguments as :meth:`stream`)."""
        from staredge.chat import chat_stream

        return chat_stream(self, messages, max_new_tokens, **kwargs)

    def generate(self, prompt: Any = "", max_new_tokens: int = 128, temperature: float = 0.8,
                 top_k: int | None = None, top_p: float = 0.95, repetition_penalty: float = 1.0,
                 seed: int | None = None, stop: Any = None, **kwargs: Any) -> str:
        """The whole generated text (without the prompt); same arguments as :meth:`stream`."""
        return self.stream(prompt, max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop,
                           **kwargs).text()

    # ------------------------------------------------------------------ misc

    def warmup(self, runs: int = 2) -> float:
        """Run ``runs`` zero inputs (first calls allocate and compile); returns seconds taken."""
        x = np.zeros(self.backend.input_shape, dtype=np.float32)
        t0 = time.perf_counter()
        for _ in range(max(1, runs)):
            self.predict(x)
        return time.perf_counter() - t0

    def info(self) -> dict[str, Any]:
        """What is loaded: model, format, runtime, device, threads, input and preprocessing."""
        m = self.metadata
        d = {
            "path": str(self.backend.path) if self.backend.path is not None else None,
            "model": m.model,
            "family": m.family,
            "format": m.format,
            "task": m.task,
            "precision": m.precision,
            "input_size": list(m.input_size),
            "num_labels": len(m.labels),
            "preprocessing": self._preprocessing_info(),
            "rewrites": list(m.rewrites),
            "staredge_version": m.staredge_version,
        }
        d.update(self.backend.describe())
        return d

    def _preprocessing_info(self) -> dict[str, Any] | None:
        try:
            pc = self.preprocess_config
        except ConfigError:
            return None  # not an image model
        return {
            "resize": pc.resize_size,
            "crop": list(pc.input_size[1:]),
            "interpolation": pc.interpolation,
            "mean": list(pc.mean),
            "std": list(pc.std),
            "pixels_in_model": bool(self.metadata.pixels_in_model),  # the artifact normalises inside itself
        }

    def __repr__(self) -> str:
        return f"Predictor({self.metadata.model!r}, backend={self.backend.name!r}, device={self.backend.device!r})"


__all__ = ["InputShapeError", "Predictor", "Ranking", "softmax"]
