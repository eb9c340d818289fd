"""``staredge generate [MODEL] PROMPT``: stream text from a STAR language model to the terminal.

MODEL is a shipped model name, a ``save_lm`` path, or an exported text-generation artifact
(``.onnx``, OpenVINO ``.xml``, ``.tflite``, ``.mlpackage``), which runs through
``Predictor`` on its runtime (``--backend``/``--device``/``--threads``)."""

from __future__ import annotations

import argparse
import os
import sys

from staredge.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``generate`` subcommand."""
    p = sub.add_parser(
        "generate",
        help="stream text from a STAR language model (default: the shipped star_lm_pydoc)",
        description="Stream text from a STAR language model. MODEL is a shipped model name "
                    "(default star_lm_pydoc), a path saved with staredge.generation.save_lm, or an "
                    "exported text-generation artifact (.onnx, .xml, .tflite, .mlpackage) run on its runtime.",
    )
    p.add_argument("model_and_prompt", nargs="+", metavar="[MODEL] PROMPT",
                   help="optional model name or path, then the prompt text")
    p.add_argument("--max-new-tokens", type=int, default=200, help="at most this many tokens (bytes) (default 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens (default off)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default 0.95; 1 = off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (default 1.0)")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    p.add_argument("--stop", action="append", default=None, metavar="STR",
                   help="stop at this string (not printed); may be repeated")
    p.add_argument("--truncate", choices=["left"], default=None,
                   help="drop the oldest prompt bytes when the prompt is longer than the context")
    p.add_argument("--no-echo", action="store_true", help="print only the generated text, not the prompt")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads of the runtime (default 1: batch-1 decode of a small model is "
                        "dispatch-bound, and extra threads spin on a busy machine)")
    p.add_argument("--backends", "--backend", dest="backend", default=None, metavar="RUNTIME",
                   help="force a runtime for an artifact (onnxruntime, openvino, litert, coreml, pytorch); "
                        "default: chosen from the artifact")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "gpu"],
                   help="where an artifact runs (default auto: a GPU when the runtime has one)")
    p.add_argument("--stats", action="store_true", help="print token counts and tokens/s to stderr at the end")
    p.set_defaults(func=run)


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
    """An existing path that is an exported artifact (not a ``save_lm`` pair or a name)."""
    from pathlib import Path

    p = Path(model).expanduser()
    if not p.exists() or p.suffix.lower() == ".json":
        return False
    if p.is_dir():
        return (p / "Manifest.json").is_file() or any(p.glob("*.xml"))
    return p.suffix.lower() in (".onnx", ".xml", ".tflite")


def run(args: argparse.Namespace) -> int:
    """Load the model, stream the continuation to stdout as it is generated."""
    from staredge.generation import load_lm

    parts = args.model_and_prompt
    if len(parts) > 2:
        raise ConfigError(
            f"expected [MODEL] PROMPT, got {len(parts)} positional arguments; quote the prompt: "
            "staredge generate \"your prompt here\""
        )
    model_name, prompt = (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    prompt = _argv_prompt(prompt)
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if model_name is not None and _is_artifact(model_name):
        from staredge.predictor import Predictor

        lm = Predictor(model_name, device=args.device, threads=args.threads, backend=args.backend)
        name = f"{lm.metadata.model} on {lm.backend.name} ({lm.backend.device})"
    else:
        if args.backend is not None and args.backend.lower() not in ("pytorch", "torch"):
            raise ConfigError(f"--backend {args.backend} needs an exported artifact; {model_name or 'the shipped model'} "
                              "is a PyTorch model (export it: staredge export star_lm_pydoc --formats onnx)")
        import torch

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
