"""``staredge generate [MODEL] PROMPT``: stream text from a STAR language model to the terminal.

MODEL is a shipped model name, a ``save_lm`` path, or an exported text-generation artifact
(``.onnx``, OpenVINO ``.xml``, ``.tflite``, ``.mlpackage``), which runs through
``Predictor`` on its runtime (``--backend``/``--device``/``--threads``)."""

from __future__ import annotations

import argparse
import os
import sys

from staredge.commands import _args
from staredge.errors import ConfigError


#: The usage line (argparse would render ``nargs="+"`` as a repeated group).
USAGE = "staredge generate [options] [MODEL] PROMPT   (PROMPT '-' reads stdin; or --prompt-file FILE)"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``generate`` subcommand."""
    p = sub.add_parser(
        "generate", usage=USAGE,
        help="stream text from a STAR language model (default: the shipped star_lm_pydoc)",
        description="Stream text from a STAR language model. MODEL is a shipped model name "
                    "(default star_lm_pydoc), a path saved with staredge.generation.save_lm, or an "
                    "exported text-generation artifact (.onnx, .xml, .tflite, .mlpackage) run on its runtime. "
                    "The prompt is printed, then the continuation (--no-echo: the continuation only).",
    )
    p.add_argument("model_and_prompt", nargs="*", metavar="[MODEL] PROMPT",
                   help="optional model name or path, then the prompt (one argument: quote it); '-' reads the "
                        "prompt from stdin")
    p.add_argument("--prompt-file", metavar="FILE", help="read the prompt from FILE (bytes as they are)")
    p.add_argument("--max-new-tokens", type=_args.count_type("--max-new-tokens", 0), default=DEFAULT_MAX_NEW_TOKENS,
                   metavar="N", help=f"at most this many tokens (bytes) (default {DEFAULT_MAX_NEW_TOKENS}, "
                                     "as in Python's generate())")
    _args.add_sampling(p)
    p.add_argument("--stop", action="append", default=None, metavar="STR",
                   help="stop at this string (not printed); may be repeated")
    p.add_argument("--truncate", choices=["left"], default=None,
                   help="drop the oldest prompt bytes when the prompt is longer than the context")
    p.add_argument("--no-echo", action="store_true", help="print only the generated text, not the prompt")
    _args.add_threads(p, default=1, help="intra-op threads of the runtime (default 1: batch-1 decode of a small "
                                         "model is dispatch-bound, and extra threads spin on a busy machine)")
    _args.add_backends(p, multiple=False, help="force a runtime for an artifact (onnxruntime, openvino, litert, "
                                              "coreml, pytorch); default: chosen from the artifact")
    _args.add_device(p, "auto")
    p.add_argument("--stats", action="store_true", help="print token counts and tokens/s to stderr at the end")
    p.set_defaults(func=run)


#: Python's ``generate()`` / ``stream()`` default, which the CLI shares.
DEFAULT_MAX_NEW_TOKENS = 128


def _is_model(text: str) -> bool:
    """Whether a positional argument names a language model: a shipped name or an existing path."""
    from importlib import resources
    from pathlib import Path

    if not text or "\n" in text or len(text) > 4096:
        return False
    try:
        if os.sep not in text and "/" not in text and \
                resources.files("staredge").joinpath("data", text + ".json").is_file():
            return True
        return Path(text).expanduser().exists()
    except (OSError, ValueError):  # a name too long for a file is a prompt
        return False


def split_model_and_prompt(args: argparse.Namespace, stdin=None) -> tuple[str | None, str | bytes]:
    """(model or None, prompt) from the positionals, ``--prompt-file`` and stdin (``-``), with
    errors for a forgotten prompt, a first word that is not a model, and two prompt sources."""
    parts = list(args.model_and_prompt)
    prompt_file = getattr(args, "prompt_file", None)
    if len(parts) > 2:
        raise ConfigError(f"expected [MODEL] PROMPT, got {len(parts)} positional arguments; quote the prompt: "
                          "staredge generate \"your prompt here\"")
    model: str | None = None
    if len(parts) == 2:
        model, prompt_text = parts
        if not _is_model(model):
            from importlib import resources

            shipped = sorted(f.name[:-5] for f in resources.files("staredge").joinpath("data").iterdir()
                             if f.name.startswith("star_lm") and f.name.endswith(".json"))
            raise ConfigError(f"expected [MODEL] PROMPT: {model!r} is not a language model (Shipped models: "
                              f"{', '.join(shipped) or 'none'}; or a save_lm path or an exported artifact); to use "
                              f"both as the prompt, quote them as one argument")
    elif len(parts) == 1:
        if prompt_file is not None or _is_model(parts[0]):
            model, prompt_text = parts[0], None
        else:
            prompt_text = parts[0]
    else:
        prompt_text = None
    if prompt_file is not None:
        if prompt_text is not None:
            raise ConfigError("give the prompt once: as PROMPT or with --prompt-file, not both")
        try:
            with open(prompt_file, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise ConfigError(f"--prompt-file {prompt_file}: cannot read it ({exc.strerror or exc})") from exc
        return model, _bytes_prompt(data)
    if prompt_text is None:
        shown = f" after {model}" if model else ""
        raise ConfigError(f"no prompt: give the prompt text{shown} (quoted), '-' to read it from stdin, or "
                          f"--prompt-file FILE" + (f"; {model} is a model, not a prompt" if model else ""))
    if prompt_text == "-":
        data = (stdin or sys.stdin.buffer).read()
        return model, _bytes_prompt(data)
    return model, _argv_prompt(prompt_text)


def _bytes_prompt(data: bytes) -> str | bytes:
    """A prompt read from a file or stdin: text when it is UTF-8, else its bytes."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _argv_prompt(prompt: str) -> str | bytes:
    """The prompt as given on the command line: text, or its raw bytes when they are not
    valid UTF-8 (Python hands such bytes over as lone surrogates, e.g. ``$'\\xff\\xfe'``)."""
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return os.fsencode(prompt)  # the bytes the shell passed, byte for byte
        except UnicodeEncodeError as exc:
            raise ConfigError(f"the prompt holds characters that are not text (position {exc.start}); "
                              "pass UTF-8 text") from None
    return prompt


def _is_artifact(model: str) -> bool:
    """An existing path that is an exported artifact (not a ``save_lm`` pair, a Hugging Face
    folder or a name): whatever the format table recognises as an export format's artifact."""
    from pathlib import Path

    from staredge.errors import StarEdgeError
    from staredge.formats import detect_format

    p = Path(model).expanduser()
    if not p.exists():
        return False
    try:
        return detect_format(p).exporter is not None  # the checkpoint format has no exporter
    except StarEdgeError:
        return False


def run(args: argparse.Namespace) -> int:
    """Load the model, stream the continuation to stdout as it is generated."""
    from staredge.formats import EAGER_RUNTIME, RUNTIMES
    from staredge.generation import load_lm

    model_name, prompt = split_model_and_prompt(args)
    backend = getattr(args, "backends", None)
    if model_name is not None and _is_artifact(model_name):
        from staredge.predictor import Predictor

        lm = Predictor(model_name, device=args.device, threads=args.threads, backend=backend)
        if args.device == "cuda" and lm.backend.device != "cuda":
            from staredge.errors import DeviceError

            raise DeviceError(f"--device cuda: {lm.backend.name} runs {model_name} on {lm.backend.device} here; "
                              f"use --device auto or cpu")
        name = f"{lm.metadata.model} on {lm.backend.name} ({lm.backend.device})"
    else:
        eager = RUNTIMES[EAGER_RUNTIME]
        if backend is not None and backend.strip().lower() not in (eager.name, *eager.aliases):
            raise ConfigError(f"--backends {backend} needs an exported artifact; {model_name or 'the shipped model'} "
                              "is a PyTorch model (export it: staredge export star_lm_pydoc --formats onnx)")
        import torch

        if args.device == "cuda":
            from staredge.errors import DeviceError

            raise DeviceError("--device cuda: a saved PyTorch language model runs on the CPU in staredge generate"
                              + ("" if torch.cuda.is_available() else " (and no CUDA device is visible here)")
                              + "; export it and run the artifact on a GPU runtime, or use --device auto/cpu")
        torch.set_num_threads(args.threads)
        lm = load_lm(model_name)
        name = lm.name
    text_stream = lm.stream(
        prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed, stop=args.stop,
        truncate=args.truncate,
    )
    out = sys.stdout
    shown = prompt if isinstance(prompt, str) else prompt.decode("utf-8", errors="replace")
    last = shown if not args.no_echo else ""
    if not args.no_echo:
        out.write(shown)
        out.flush()
    try:
        for piece in text_stream:
            out.write(piece)
            out.flush()  # show each piece as soon as it is complete
            last = piece
    finally:
        text_stream.close()
    if not last.endswith("\n"):
        out.write("\n")
    out.flush()
    if args.stats:
        st = text_stream.stats
        print(
            f"[{name}: prompt {st.prompt_tokens} tokens ({st.prefill_tokens_per_s:.0f} tok/s prefill), "
            f"generated {st.generated_tokens} tokens ({st.decode_tokens_per_s:.1f} tok/s decode), "
            f"first token {st.first_token_s * 1000:.1f} ms, finish: {st.finish_reason}]",
            file=getattr(getattr(args, "capture", None), "stderr", None) or sys.stderr,
        )
    return 0
