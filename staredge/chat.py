"""Chat with a language model through its own chat template (no torch needed).

A chat model's folder ships a Jinja template (``tokenizer_config.json``'s ``chat_template``
or ``chat_template.jinja``) that turns a list of messages into the prompt text the model was
trained on. This module renders it in Jinja's immutable sandbox (a template cannot call
methods that change objects or reach Python internals), tokenizes the result without adding
BOS (templates write their own), and streams the reply through the model's ``stream()``,
stopping at the tokenizer's stop ids (EOS and ``generation_config.json``'s extras).

* :func:`render_chat` / :func:`chat_prompt_ids`: messages -> prompt text / token ids.
* :func:`chat_stream`: one reply as a :class:`~staredge.generation.TextStream`, for anything
  with ``stream(prompt_ids, ...)`` and ``tokenizer`` (``LanguageModel``, ``Predictor``).
* :class:`ChatSession`: a conversation with history; a cancelled reply leaves no trace.

A model without a template raises :class:`~staredge.errors.ChatTemplateError`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from staredge.errors import ChatTemplateError, ConfigError

#: Roles a message may have.
ROLES = ("system", "user", "assistant", "tool")
#: Longest chat template accepted (characters); real templates are a few KB.
MAX_TEMPLATE_CHARS = 1 << 20
#: Default reply length of :func:`chat_stream` (tokens).
DEFAULT_MAX_NEW_TOKENS = 256


def validate_messages(messages: Any) -> list[dict[str, Any]]:
    """``messages`` as a list of ``{"role": ..., "content": str}`` dicts, or :class:`ConfigError`.

    Roles are one of :data:`ROLES`; extra keys (``tool_calls``, ``name``) are kept for
    templates that use them.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ConfigError("messages must be a list of {'role': ..., 'content': ...} dicts, e.g. "
                          "[{'role': 'user', 'content': 'Hello'}]")
    if not messages:
        raise ConfigError("messages is empty: give at least one message")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ConfigError(f"message {i} is a {type(m).__name__}, not a dict with 'role' and 'content'")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ConfigError(f"message {i} has role {role!r}; roles are {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ConfigError(f"message {i} ({role}) has content of type {type(content).__name__}; give text")
        out.append(dict(m))
    return out


def _raise(message: str) -> None:
    raise ChatTemplateError(f"the chat template refused the messages: {message}")


def _strftime_now(fmt: str) -> str:
    import datetime

    return datetime.datetime.now().strftime(fmt)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


@functools.lru_cache(maxsize=16)
def _compile(template: str):
    try:
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as exc:  # pragma: no cover - jinja2 is a core dependency
        from staredge.errors import MissingDependencyError

        raise MissingDependencyError("chat templates need the Python package 'jinja2' (pip install jinja2)") from exc
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(template)
    except TemplateError as exc:
        raise ChatTemplateError(f"the model's chat template does not compile: {exc}") from exc


def render_chat(template: str | None, messages: Any, *, add_generation_prompt: bool = True,
                bos_token: str | None = None, eos_token: str | None = None, **variables: Any) -> str:
    """The prompt text of ``messages`` under ``template`` (rendered in Jinja's immutable sandbox).

    ``add_generation_prompt`` opens the assistant's turn at the end; ``variables`` are passed
    to the template as well (e.g. ``tools``). Raises :class:`ChatTemplateError` when there is
    no template or it fails (the message says why), :class:`ConfigError` for bad messages.
    """
    if template is None or not str(template).strip():
        raise ChatTemplateError("this model has no chat template (tokenizer_config.json has no 'chat_template' and "
                                "there is no chat_template.jinja); use generate()/stream() with plain text instead")
    if not isinstance(template, str) or len(template) > MAX_TEMPLATE_CHARS:
        raise ChatTemplateError(f"the chat template must be text of at most {MAX_TEMPLATE_CHARS:,} characters")
    msgs = validate_messages(messages)
    compiled = _compile(template)
    from jinja2 import TemplateError
    from jinja2.exceptions import SecurityError

    try:
        return compiled.render(messages=msgs, add_generation_prompt=bool(add_generation_prompt),
                               bos_token=bos_token or "", eos_token=eos_token or "", **variables)
    except ChatTemplateError:
        raise
    except SecurityError as exc:
        raise ChatTemplateError(f"the chat template tried something the sandbox forbids: {exc}") from exc
    except (TemplateError, TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
        raise ChatTemplateError(f"the chat template failed on these messages: {type(exc).__name__}: {exc}") from exc


def chat_prompt_ids(tokenizer: Any, messages: Any, *, add_generation_prompt: bool = True, **variables: Any) -> list[int]:
    """Token ids of ``messages`` rendered with ``tokenizer.chat_template`` (no BOS is added:
    the template writes its own, as Hugging Face's ``apply_chat_template`` does)."""
    template = getattr(tokenizer, "chat_template", None)
    text = render_chat(template, messages, add_generation_prompt=add_generation_prompt,
                       bos_token=getattr(tokenizer, "bos_token", None), eos_token=getattr(tokenizer, "eos_token", None),
                       **variables)
    return tokenizer.encode(text, add_bos=False)


def chat_stream(lm: Any, messages: Any, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, *,
                stop: str | int | Iterable[str | int] | None = None, template_variables: dict | None = None,
                **kwargs: Any):
    """Stream the assistant's reply to ``messages`` from ``lm``.

    ``lm`` is anything with a ``tokenizer`` (with ``chat_template``) and
    ``stream(prompt_ids, max_new_tokens=..., stop=..., add_bos=False, **kwargs)``: a
    :class:`~staredge.generation.LanguageModel` or a text-generation ``Predictor``. The
    tokenizer's stop ids always end the reply; ``stop`` adds strings or ids; ``kwargs`` are
    the sampling arguments of :func:`staredge.generation.stream`.
    """
    tokenizer = getattr(lm, "tokenizer", None)
    if tokenizer is None:
        raise ChatTemplateError(f"{type(lm).__name__} has no tokenizer, so it has no chat template; use generate()")
    ids = chat_prompt_ids(tokenizer, messages, **(template_variables or {}))
    stops: list[str | int] = sorted(getattr(tokenizer, "stop_ids", ()) or ())
    if stop is not None:
        stops += [stop] if isinstance(stop, (str, int)) else list(stop)
    return lm.stream(ids, max_new_tokens=max_new_tokens, stop=stops or None, add_bos=False, **kwargs)


class ChatSession:
    """A conversation: :meth:`send` streams a reply to a new user message with the history.

    The reply joins the history only when the stream ends normally (EOS, a stop, the length
    limit); a reply that is cancelled (the stream closed early, Ctrl-C) is dropped together
    with its user message, so the next turn starts from the last complete exchange.
    """

    def __init__(self, lm: Any, system: str | None = None, **defaults: Any) -> None:
        self.lm = lm
        self.messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        self.defaults = defaults
        self.last_stats = None
        if getattr(getattr(lm, "tokenizer", None), "chat_template", None) is None:
            raise ChatTemplateError(f"{getattr(lm, 'name', type(lm).__name__)} has no chat template, so it cannot "
                                    "chat; use staredge generate / generate() with plain text")

    def send(self, text: str, **kwargs: Any) -> Iterator[str]:
        """Yield the reply to ``text`` piece by piece; the exchange joins the history at the end."""
        if not isinstance(text, str):
            raise ConfigError(f"a chat message is text, got {type(text).__name__}")
        turn = self.messages + [{"role": "user", "content": text}]
        stream = chat_stream(self.lm, turn, **{**self.defaults, **kwargs})
        pieces: list[str] = []
        try:
            for piece in stream:
                pieces.append(piece)
                yield piece
        finally:
            stream.close()
        self.messages = turn + [{"role": "assistant", "content": "".join(pieces)}]
        self.last_stats = getattr(stream, "stats", None)

    def reset(self) -> None:
        """Forget the conversation (the system message stays)."""
        self.messages = [m for m in self.messages if m["role"] == "system"]


__all__ = ["render_chat", "chat_prompt_ids", "chat_stream", "ChatSession", "validate_messages", "ROLES",
           "DEFAULT_MAX_NEW_TOKENS"]
