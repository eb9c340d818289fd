"""``staredge chat MODEL``: talk to a chat model in the terminal, with history and streaming.

MODEL is a Hugging Face model folder StarEdge imports (LFM2: config.json, safetensors,
tokenizer.json with a chat template), or an exported text-generation artifact whose
tokenizer travels with it (run through ``Predictor`` on its runtime). Each line typed is a
user message; the reply streams as it is generated. Ctrl-C during a reply cancels that reply
(it is not added to the history) and the session goes on; Ctrl-C or Ctrl-D at the prompt,
or ``/exit``, ends it. ``/reset`` forgets the conversation.
"""

from __future__ import annotations

import argparse
import sys

from staredge.commands import _args
from staredge.errors import ConfigError

#: Reply length when ``--max-new-tokens`` is not given.
DEFAULT_MAX_NEW_TOKENS = 256
#: Lines that control the session instead of being sent.
COMMANDS = {"/exit": "end the session", "/quit": "end the session", "/reset": "forget the conversation",
            "/help": "show these commands"}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``chat`` subcommand."""
    p = sub.add_parser(
        "chat", help="chat with a model through its own chat template (history, streaming; Ctrl-C cancels a reply)",
        description="Interactive chat. MODEL is a Hugging Face model folder (LFM2: config.json, safetensors, "
                    "tokenizer.json with a chat template) or an exported text-generation artifact. Type a message "
                    "and press Enter; Ctrl-C cancels a reply, Ctrl-D or /exit ends the session, /reset forgets "
                    "the conversation.")
    p.add_argument("model", metavar="MODEL", help="a Hugging Face model folder or an exported artifact")
    p.add_argument("--system", default=None, metavar="TEXT", help="a system message that opens the conversation")
    p.add_argument("--max-new-tokens", type=_args.count_type("--max-new-tokens", 1), default=DEFAULT_MAX_NEW_TOKENS,
                   metavar="N", help=f"longest reply in tokens (default {DEFAULT_MAX_NEW_TOKENS})")
    _args.add_sampling(p)
    p.add_argument("--max-context", type=_args.count_type("--max-context"), default=None, metavar="N",
                   help="context of an imported folder's model in tokens (default: its config, at most 4096)")
    _args.add_threads(p, default=1, help="intra-op threads (default 1)")
    p.set_defaults(func=run)


#: Context of an imported folder's model unless --max-context says otherwise (bounds the KV cache).
DEFAULT_FOLDER_CONTEXT = 4096


def load_chat_model(model: str, max_context: int | None = None, threads: int = 1):
    """A chat-capable model for ``model`` (an HF folder or an artifact): ``(lm, name)``.

    The result has ``tokenizer`` (with a chat template) and ``stream(ids, ...)``."""
    from pathlib import Path

    from staredge.models.star import from_pretrained, is_hf_folder

    path = Path(model).expanduser()
    if is_hf_folder(path):
        import torch

        from staredge.generation import LanguageModel

        torch.set_num_threads(threads)
        net = from_pretrained(path, max_seq_len=max_context or DEFAULT_FOLDER_CONTEXT)
        if net.tokenizer is None:
            raise ConfigError(f"{path} has no tokenizer.json, so it cannot chat")
        return LanguageModel(net, name=path.name, tokenizer=net.tokenizer), path.name
    if path.exists():
        from staredge.predictor import Predictor

        lm = Predictor(str(path), threads=threads)
        return lm, f"{path.name} on {lm.backend.name}"
    raise ConfigError(f"{model} is neither a Hugging Face model folder (config.json with a supported model_type) "
                      "nor an exported artifact")


def chat_loop(session, stdin, stdout, stderr, name: str = "model") -> int:
    """Read lines from ``stdin``, stream replies to ``stdout`` until EOF or /exit.

    A ``KeyboardInterrupt`` during a reply cancels that reply (``[cancelled]``) and returns to
    the prompt; at the prompt it ends the loop. Returns the exit status (0)."""
    interactive = hasattr(stdin, "isatty") and stdin.isatty()
    if interactive:
        stderr.write(f"Chatting with {name}. Ctrl-C cancels a reply; Ctrl-D or /exit ends; /reset forgets.\n")
    while True:
        if interactive:
            stdout.write(">>> ")
            stdout.flush()
        try:
            line = stdin.readline()
        except KeyboardInterrupt:
            stdout.write("\n")
            return 0
        if not line:
            if interactive:
                stdout.write("\n")
            return 0
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        cmd = text.strip().lower()
        if cmd in ("/exit", "/quit"):
            return 0
        if cmd == "/reset":
            session.reset()
            stderr.write("[conversation forgotten]\n")
            continue
        if cmd == "/help":
            stderr.write("".join(f"  {k:<7} {v}\n" for k, v in COMMANDS.items()))
            continue
        reply = session.send(text)
        try:
            for piece in reply:
                stdout.write(piece)
                stdout.flush()
        except KeyboardInterrupt:
            reply.close()
            stdout.write("\n")
            stderr.write("[cancelled]\n")
            stderr.flush()
            continue
        stdout.write("\n")
        stdout.flush()


def run(args: argparse.Namespace) -> int:
    """Load the model and run the chat loop on the terminal."""
    from staredge.chat import ChatSession

    lm, name = load_chat_model(args.model, args.max_context, args.threads)
    session = ChatSession(lm, system=args.system, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                          seed=args.seed)
    err = getattr(getattr(args, "capture", None), "stderr", None) or sys.stderr
    return chat_loop(session, sys.stdin, sys.stdout, err, name)
