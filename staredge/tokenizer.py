"""Tokenizers for STAR language models: one interface, two implementations (no torch needed).

* :class:`Tokenizer` is the interface the generation loop, the runtimes and the chat code
  talk to: ``encode``, ``decode``, ``decoder()`` (a :class:`StreamDecoder` for one stream),
  ``vocab_size``, ``bos_id`` / ``eos_id`` / ``pad_id``, ``special_ids`` and ``stop_ids``.
* :class:`ByteTokenizer` is the byte-level vocabulary of the shipped model (256 byte values
  plus ``BOS``/``EOS``/``PAD``), streamed by :class:`IncrementalUTF8Decoder`.
* :class:`HFTokenizer` wraps a Hugging Face ``tokenizer.json`` through the ``tokenizers``
  library (never ``transformers``), for byte-level BPE and byte-fallback vocabularies;
  :class:`HFStreamDecoder` streams it.

Streaming contract (every :class:`StreamDecoder`): :meth:`StreamDecoder.feed` returns only
text that is final: never half of a multi-byte character, never text already returned.
Concatenating every ``feed`` result and the final :meth:`StreamDecoder.flush` gives the
same text as ``decode(ids)`` (for a byte-fallback vocabulary: whenever that text has no
U+FFFD; the library replaces a whole run of byte tokens when any of it is invalid, which a
stream that has already emitted the valid start of the run cannot reproduce).

A tokenizer travels with an artifact as JSON: :func:`tokenizer_to_json` /
:func:`tokenizer_from_json` and :func:`tokenizer_hash` (sha256 of that JSON).
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from staredge.errors import ConfigError, TokenizerError, require

#: Token ids of the byte-level vocabulary: ids 0..255 are the byte values themselves.
BYTE_BOS_ID = 256
BYTE_EOS_ID = 257
BYTE_PAD_ID = 258
BYTE_VOCAB_SIZE = 259
BYTE_SPECIAL_IDS = (BYTE_BOS_ID, BYTE_EOS_ID, BYTE_PAD_ID)

#: ``kind`` value of the JSON form of each tokenizer (see :func:`tokenizer_to_json`).
KIND_BYTES = "bytes"
KIND_HF = "hf-tokenizers"

#: Held-back ids after which the stream emits what it has even if it ends in U+FFFD (bytes
#: that never form a character: a model emitting garbage still streams). Invalid bytes are
#: emitted earlier as soon as a character follows them.
_MAX_PENDING_TOKENS = 32


class StreamDecoder:
    """Turns token ids into text one id at a time (base class; one instance per stream).

    ``feed`` returns the text that became final (possibly ``""``); ``flush`` ends the
    stream and returns whatever was held back.
    """

    def feed(self, token_id: int) -> str:  # pragma: no cover - interface
        """Add one token; return the text that became complete (possibly ``""``)."""
        raise NotImplementedError

    def flush(self) -> str:  # pragma: no cover - interface
        """End the stream: return any text still held back."""
        raise NotImplementedError


class Tokenizer:
    """The tokenizer interface (base class). Subclasses set the id attributes.

    Attributes:
        vocab_size: number of token ids the model's embedding has rows for (at least).
        bos_id, eos_id, pad_id: special ids, or None when the vocabulary has none.
        special_ids: ids that produce no text when decoded.
        stop_ids: ids that end generation (EOS and any ``generation_config.json`` extras).
    """

    vocab_size: int
    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None
    special_ids: frozenset[int] = frozenset()
    stop_ids: frozenset[int] = frozenset()

    def encode(self, text: str | bytes, add_bos: bool = True) -> list[int]:  # pragma: no cover
        """Token ids of ``text``, preceded by BOS when ``add_bos`` and the vocabulary has one."""
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:  # pragma: no cover - interface
        """Text of ``ids`` with special tokens skipped."""
        raise NotImplementedError

    def decoder(self) -> StreamDecoder:  # pragma: no cover - interface
        """A fresh streaming decoder for one stream."""
        raise NotImplementedError

    def token_to_id(self, token: str) -> int | None:
        """Id of a token's string form, or None (the byte tokenizer has none)."""
        return None

    def check_ids(self, ids: Sequence[int]) -> None:
        """Raise :class:`ConfigError` unless every id is in ``0..vocab_size-1``."""
        bad = [int(i) for i in ids if not 0 <= int(i) < self.vocab_size]
        if bad:
            raise ConfigError(f"token ids must be in 0..{self.vocab_size - 1}; got {bad[:5]}")


# --------------------------------------------------------------------------------------
# Byte-level vocabulary (the shipped model)
# --------------------------------------------------------------------------------------


class IncrementalUTF8Decoder(StreamDecoder):
    """Turns byte tokens into text one token at a time, never emitting half a character.

    A multi-byte UTF-8 character is held back until its last byte arrives. Bytes that can
    never form a valid character become U+FFFD as soon as that is certain; an incomplete
    character still pending when the stream ends becomes U+FFFD in :meth:`flush`.
    Special tokens (BOS/EOS/PAD) produce no text.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        """Add one token; return the text that became complete (possibly ``""``)."""
        token_id = int(token_id)
        if token_id in BYTE_SPECIAL_IDS:
            return ""
        if not 0 <= token_id < 256:
            raise ConfigError(f"token id {token_id} is outside the byte vocabulary (0..{BYTE_VOCAB_SIZE - 1})")
        return self._decoder.decode(bytes((token_id,)))

    def flush(self) -> str:
        """End the stream: return the replacement for any incomplete trailing character."""
        return self._decoder.decode(b"", final=True)

    @property
    def pending_bytes(self) -> int:
        """Number of bytes held back because they start a character not yet complete."""
        return len(self._decoder.getstate()[0])


class ByteTokenizer(Tokenizer):
    """Byte-level tokenizer: UTF-8 bytes are token ids 0..255; BOS=256, EOS=257, PAD=258."""

    bos_id = BYTE_BOS_ID
    eos_id = BYTE_EOS_ID
    pad_id = BYTE_PAD_ID
    vocab_size = BYTE_VOCAB_SIZE
    special_ids = frozenset(BYTE_SPECIAL_IDS)
    stop_ids = frozenset((BYTE_EOS_ID,))

    def encode(self, text: str | bytes, add_bos: bool = True) -> list[int]:
        """Token ids of ``text`` (UTF-8 bytes), preceded by BOS unless ``add_bos=False``."""
        data = text if isinstance(text, (bytes, bytearray)) else str(text).encode("utf-8")
        return ([BYTE_BOS_ID] if add_bos else []) + list(data)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: special tokens are skipped, invalid UTF-8 becomes U+FFFD."""
        return bytes(int(i) for i in ids if int(i) not in BYTE_SPECIAL_IDS).decode("utf-8", errors="replace")

    def decoder(self) -> IncrementalUTF8Decoder:
        """A fresh incremental decoder for one stream."""
        return IncrementalUTF8Decoder()


# --------------------------------------------------------------------------------------
# Hugging Face tokenizer.json (byte-level BPE, byte-fallback SentencePiece-style BPE)
# --------------------------------------------------------------------------------------


class HFStreamDecoder(StreamDecoder):
    """Streams a :class:`HFTokenizer`: decodes a sliding window of ids and emits the new suffix.

    Decoding one token at a time is wrong for real vocabularies: byte-level BPE and
    byte-fallback tokens can hold part of a character, and SentencePiece-style decoders
    change a token's text depending on whether it starts the string (the leading-space
    rule). So the decoder keeps the ids since the last emitted boundary, decodes them
    together with a few already-emitted ids of context, and emits only the text past what
    the context alone decodes to. Text that ends in U+FFFD (an incomplete character) is
    held back until the character completes; bytes that can never form one come out as
    U+FFFD as soon as text follows them (or after ``_MAX_PENDING_TOKENS`` ids, or at flush).
    """

    def __init__(self, tokenizer: "HFTokenizer") -> None:
        self._tok = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the context window in _ids
        self._read = 0  # ids before this index have been emitted

    def _text(self, ids: Sequence[int]) -> str:
        return self._tok.decode(ids)

    def feed(self, token_id: int) -> str:
        """Add one token; return the text that became final (possibly ``""``)."""
        token_id = int(token_id)
        if not 0 <= token_id < self._tok.vocab_size:
            raise ConfigError(f"token id {token_id} is outside the vocabulary (0..{self._tok.vocab_size - 1})")
        self._ids.append(token_id)
        return self._emit(final=False)

    def _emit(self, final: bool) -> str:
        ids, context = self._ids, self._text(self._ids[self._prefix:self._read])
        forced = final or len(ids) - self._read >= _MAX_PENDING_TOKENS
        # The longest run of new ids whose text extends the context and does not end inside a
        # character (U+FFFD at the end); usually all of them, at once.
        end = len(ids)
        while end > self._read:
            text = self._text(ids[self._prefix:end])
            if text.startswith(context) and (forced and end == len(ids) or not text.endswith("\ufffd")):
                break
            if final:  # the context decodes differently once followed by more ids: emit what is new
                break
            end -= 1
        else:
            return ""  # everything new ends inside a character: hold it back
        new = text[len(context):]
        # Everything up to ``end`` is emitted; the last emitted ids become the next context.
        self._prefix, self._read = self._read, end
        if self._read - self._prefix > 4:  # the context needs only a few ids
            self._prefix = self._read - 4
        return new

    def flush(self) -> str:
        """End the stream: return the text of any ids still held back."""
        if self._read >= len(self._ids):
            return ""
        return self._emit(final=True)


class HFTokenizer(Tokenizer):
    """A Hugging Face ``tokenizer.json`` loaded with the ``tokenizers`` library.

    Args:
        tokenizer_json: the text of ``tokenizer.json``.
        bos_token, eos_token, pad_token: token strings (from ``tokenizer_config.json`` or
            ``special_tokens_map.json``); each is looked up in the vocabulary.
        bos_id, eos_id, pad_id: ids that override the strings (e.g. from ``config.json``).
        stop_ids: extra ids that end generation (``generation_config.json``'s
            ``eos_token_id`` list); ``eos_id`` is always one.
        add_bos: whether :meth:`encode` puts BOS in front by default (``add_bos_token``);
            the ``tokenizer.json`` post-processor is not used, so BOS is never doubled.
        chat_template: the model's Jinja chat template, or None.
        vocab_size: the model's vocabulary size when it is larger than the tokenizer's
            (padding rows); None means the tokenizer's own size.

    Raises:
        TokenizerError: the JSON is not a tokenizer the library can load, or a named
            special token is not in its vocabulary.
    """

    def __init__(self, tokenizer_json: str, *, bos_token: str | None = None, eos_token: str | None = None,
                 pad_token: str | None = None, bos_id: int | None = None, eos_id: int | None = None,
                 pad_id: int | None = None, stop_ids: Iterable[int] = (), add_bos: bool = True,
                 chat_template: str | None = None, vocab_size: int | None = None) -> None:
        tokenizers = require("tokenizers", "all", "loading a Hugging Face tokenizer.json")
        self._json = tokenizer_json
        try:
            self._tok = tokenizers.Tokenizer.from_str(tokenizer_json)
        except Exception as exc:  # the library raises a bare Exception for bad JSON
            raise TokenizerError(f"tokenizer.json cannot be loaded by the tokenizers library: {exc}") from exc
        self._own_size = int(self._tok.get_vocab_size(with_added_tokens=True))
        self.vocab_size = int(vocab_size) if vocab_size is not None else self._own_size
        if self.vocab_size < self._own_size:
            raise TokenizerError(f"the tokenizer has {self._own_size} tokens but the model's vocabulary has only "
                                 f"{self.vocab_size}; they do not belong together")
        self.bos_id = self._resolve("bos", bos_id, bos_token)
        self.eos_id = self._resolve("eos", eos_id, eos_token)
        self.pad_id = self._resolve("pad", pad_id, pad_token)
        specials = {int(i) for i, t in self._added_tokens() if t.special}
        specials |= {i for i in (self.bos_id, self.eos_id, self.pad_id) if i is not None}
        self.special_ids = frozenset(specials)
        stops = {int(i) for i in stop_ids}
        if self.eos_id is not None:
            stops.add(self.eos_id)
        self.check_ids(sorted(stops))
        self.stop_ids = frozenset(stops)
        self.add_bos = bool(add_bos) and self.bos_id is not None
        self.chat_template = chat_template
        self.bos_token = self.id_to_token(self.bos_id) if self.bos_id is not None else None
        self.eos_token = self.id_to_token(self.eos_id) if self.eos_id is not None else None

    def _added_tokens(self) -> list[tuple[int, Any]]:
        decoder = self._tok.get_added_tokens_decoder()
        return sorted(decoder.items())

    def _resolve(self, what: str, token_id: int | None, token: str | None) -> int | None:
        if token_id is not None:
            if not 0 <= int(token_id) < self.vocab_size:
                raise TokenizerError(f"{what}_token_id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})")
            return int(token_id)
        if token is None:
            return None
        found = self._tok.token_to_id(token)
        if found is None:
            raise TokenizerError(f"the {what} token {token!r} is not in tokenizer.json's vocabulary")
        return int(found)

    def token_to_id(self, token: str) -> int | None:
        """Id of a token's string form (e.g. ``"<|im_end|>"``), or None."""
        found = self._tok.token_to_id(token)
        return None if found is None else int(found)

    def id_to_token(self, token_id: int) -> str | None:
        """String form of a token id, or None for a padding row beyond the tokenizer."""
        return self._tok.id_to_token(int(token_id))

    def encode(self, text: str | bytes, add_bos: bool | None = None) -> list[int]:
        """Token ids of ``text``; special-token strings in it map to their ids.

        BOS is put in front when ``add_bos`` (default: the tokenizer's ``add_bos_token``)
        and the text does not already start with it.
        """
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", errors="replace")
        ids = [int(i) for i in self._tok.encode(str(text), add_special_tokens=False).ids]
        add = self.add_bos if add_bos is None else bool(add_bos) and self.bos_id is not None
        if add and (not ids or ids[0] != self.bos_id):
            ids.insert(0, int(self.bos_id))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` with special tokens skipped (padding rows produce nothing)."""
        keep = [int(i) for i in ids if int(i) < self._own_size]
        return self._tok.decode(keep, skip_special_tokens=True)

    def decoder(self) -> HFStreamDecoder:
        """A fresh streaming decoder for one stream."""
        return HFStreamDecoder(self)

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this tokenizer (see :func:`tokenizer_to_json`)."""
        return {
            "kind": KIND_HF, "tokenizer_json": self._json, "bos_id": self.bos_id, "eos_id": self.eos_id,
            "pad_id": self.pad_id, "stop_ids": sorted(self.stop_ids), "add_bos": self.add_bos,
            "chat_template": self.chat_template, "vocab_size": self.vocab_size,
        }

    @classmethod
    def from_folder(cls, folder: Any, vocab_size: int | None = None, config: dict[str, Any] | None = None) -> "HFTokenizer":
        """Load ``tokenizer.json`` (+ ``tokenizer_config.json``, ``generation_config.json``,
        ``special_tokens_map.json``, ``chat_template.jinja`` when present) from a folder.

        ``config`` is the model's ``config.json`` (its ``bos/eos/pad_token_id`` win over the
        tokenizer config's strings). Raises :class:`TokenizerError` naming the file.
        """
        from pathlib import Path

        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"{folder} has no tokenizer.json: StarEdge reads Hugging Face 'fast' tokenizers "
                                 "only; save one with transformers' tokenizer.save_pretrained() or the tokenizers library")
        tok_cfg = _read_json_file(folder / "tokenizer_config.json")
        special_map = _read_json_file(folder / "special_tokens_map.json")
        gen_cfg = _read_json_file(folder / "generation_config.json")
        config = config or {}

        def token_str(name: str) -> str | None:
            for source in (tok_cfg, special_map):
                value = source.get(name)
                if isinstance(value, dict):
                    value = value.get("content")
                if isinstance(value, str):
                    return value
            return None

        def first_id(*values: Any) -> int | None:
            for v in values:
                if isinstance(v, list):
                    v = v[0] if v else None
                if isinstance(v, int) and not isinstance(v, bool):
                    return v
            return None

        stops = gen_cfg.get("eos_token_id", [])
        stops = stops if isinstance(stops, list) else [stops]
        template = tok_cfg.get("chat_template")
        if isinstance(template, list):  # named templates: use "default"
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        jinja_file = folder / "chat_template.jinja"
        if template is None and jinja_file.is_file():
            template = jinja_file.read_text(encoding="utf-8")
        try:
            return cls(path.read_text(encoding="utf-8"),
                       bos_token=token_str("bos_token"), eos_token=token_str("eos_token"),
                       pad_token=token_str("pad_token"),
                       bos_id=first_id(config.get("bos_token_id"), gen_cfg.get("bos_token_id")),
                       eos_id=first_id(config.get("eos_token_id"), gen_cfg.get("eos_token_id")),
                       pad_id=first_id(config.get("pad_token_id"), gen_cfg.get("pad_token_id")),
                       stop_ids=[s for s in stops if isinstance(s, int)],
                       add_bos=bool(tok_cfg.get("add_bos_token", True)),
                       chat_template=template if isinstance(template, str) else None,
                       vocab_size=vocab_size)
        except TokenizerError as exc:
            raise TokenizerError(f"{path}: {exc}") from exc


def _read_json_file(path: Any) -> dict[str, Any]:
    """A JSON object from ``path``, ``{}`` when the file does not exist."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenizerError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------------------
# Travelling with an artifact
# --------------------------------------------------------------------------------------


def tokenizer_to_json(tokenizer: Tokenizer) -> str:
    """The JSON text that :func:`tokenizer_from_json` rebuilds ``tokenizer`` from.

    Deterministic (sorted keys), so :func:`tokenizer_hash` of the same tokenizer is stable.
    """
    if isinstance(tokenizer, HFTokenizer):
        data = tokenizer.to_dict()
    elif isinstance(tokenizer, ByteTokenizer):
        data = {"kind": KIND_BYTES}
    else:
        raise ConfigError(f"{type(tokenizer).__name__} cannot be serialised; pass a ByteTokenizer or HFTokenizer")
    return json.dumps(data, sort_keys=True, ensure_ascii=False)


def tokenizer_from_json(text: str | bytes) -> Tokenizer:
    """Rebuild a tokenizer from :func:`tokenizer_to_json`'s text; :class:`TokenizerError` if malformed."""
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenizerError(f"the tokenizer JSON is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise TokenizerError("the tokenizer JSON must be an object")
    kind = data.get("kind")
    if kind == KIND_BYTES:
        return ByteTokenizer()
    if kind == KIND_HF:
        if not isinstance(data.get("tokenizer_json"), str):
            raise TokenizerError("the tokenizer JSON has no 'tokenizer_json' string")
        return HFTokenizer(data["tokenizer_json"], bos_id=data.get("bos_id"), eos_id=data.get("eos_id"),
                           pad_id=data.get("pad_id"), stop_ids=data.get("stop_ids") or (),
                           add_bos=bool(data.get("add_bos", True)), chat_template=data.get("chat_template"),
                           vocab_size=data.get("vocab_size"))
    raise TokenizerError(f"unknown tokenizer kind {kind!r}; expected {KIND_BYTES!r} or {KIND_HF!r}")


def tokenizer_hash(tokenizer_or_json: Tokenizer | str) -> str:
    """``sha256:<hex>`` of the tokenizer's JSON form: what an artifact records to detect a
    sibling tokenizer file that is not the one it was exported with."""
    text = tokenizer_or_json if isinstance(tokenizer_or_json, str) else tokenizer_to_json(tokenizer_or_json)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


#: Suffix of the tokenizer file that sits beside an exported artifact (``x_ctx256.onnx`` ->
#: ``x_ctx256.tokenizer.json``); its name and hash are in the artifact's ``lm["tokenizer"]``.
ARTIFACT_TOKENIZER_SUFFIX = ".tokenizer.json"


def artifact_tokenizer_path(artifact: Any) -> Any:
    """Where the tokenizer of ``artifact`` (a file or a ``.mlpackage`` folder) is written."""
    from pathlib import Path

    p = Path(artifact)
    return p.with_name(p.stem + ARTIFACT_TOKENIZER_SUFFIX)


def write_artifact_tokenizer(artifact: Any, tokenizer: Tokenizer, force: bool = True) -> dict[str, Any]:
    """Write ``tokenizer`` beside ``artifact`` (atomically) and return the metadata entry to
    store as ``lm["tokenizer"]``: ``{"file": name, "sha256": ..., "kind": ...}``.

    A :class:`ByteTokenizer` writes nothing: its entry is ``{"kind": "bytes"}`` (the loader's
    default)."""
    from staredge.fileio import atomic_write_text

    if isinstance(tokenizer, ByteTokenizer):
        return {"kind": KIND_BYTES}
    text = tokenizer_to_json(tokenizer)
    path = artifact_tokenizer_path(artifact)
    atomic_write_text(path, text, force=force)
    return {"kind": KIND_HF, "file": path.name, "sha256": tokenizer_hash(text), "vocab_size": tokenizer.vocab_size}


def tokenizer_metadata_entry(tokenizer: Tokenizer | None) -> dict[str, Any]:
    """The ``lm["tokenizer"]`` entry that carries ``tokenizer`` inside an artifact's metadata:
    ``{"kind", "sha256", "vocab_size", "json"}`` (``json`` is :func:`tokenizer_to_json`'s text;
    a few MB for a 65k vocabulary). None or a :class:`ByteTokenizer` gives ``{"kind": "bytes"}``."""
    if tokenizer is None or isinstance(tokenizer, ByteTokenizer):
        return {"kind": KIND_BYTES}
    text = tokenizer_to_json(tokenizer)
    return {"kind": KIND_HF, "sha256": tokenizer_hash(text), "vocab_size": tokenizer.vocab_size, "json": text}


def load_artifact_tokenizer(artifact: Any, lm: dict[str, Any] | None) -> Tokenizer:
    """The tokenizer of an exported artifact from its metadata's ``lm`` dict: the byte
    tokenizer when ``lm`` has no ``tokenizer`` entry (artifacts of byte-level models), else
    the JSON inside the entry (:func:`tokenizer_metadata_entry`) or the sibling file it names
    (:func:`write_artifact_tokenizer`), whose SHA-256 must match (:class:`TokenizerError`
    otherwise: a missing, replaced or edited tokenizer is never used silently)."""
    from pathlib import Path

    entry = (lm or {}).get("tokenizer")
    if not entry or (isinstance(entry, dict) and entry.get("kind", KIND_BYTES) == KIND_BYTES):
        return ByteTokenizer()
    if not isinstance(entry, dict):
        raise TokenizerError("the artifact's metadata has a malformed 'tokenizer' entry")
    model_vocab = (lm or {}).get("vocab_size")
    if model_vocab is not None and entry.get("vocab_size") not in (None, model_vocab):
        raise TokenizerError(f"the tokenizer recorded in {Path(artifact).name} has a vocabulary of "
                             f"{entry.get('vocab_size')}, the model {model_vocab}; they do not belong together")
    if isinstance(entry.get("json"), str):
        if tokenizer_hash(entry["json"]) != entry.get("sha256"):
            raise TokenizerError(f"the tokenizer inside {Path(artifact).name} does not match its SHA-256; the "
                                 "metadata was edited or damaged: export again")
        return tokenizer_from_json(entry["json"])
    name = entry.get("file")
    if not isinstance(name, str) or Path(name).name != name:
        raise TokenizerError(f"the artifact's metadata names tokenizer file {name!r}, which is not a file name")
    path = Path(artifact).with_name(name)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenizerError(f"{Path(artifact).name} needs its tokenizer {path}, which cannot be read "
                             f"({getattr(exc, 'strerror', None) or exc}); copy it along with the artifact") from exc
    if tokenizer_hash(text) != entry.get("sha256"):
        raise TokenizerError(f"{path} is not the tokenizer {Path(artifact).name} was exported with (SHA-256 differs "
                             "from the artifact's metadata); copy the matching file or export again")
    tok = tokenizer_from_json(text)
    if entry.get("vocab_size") is not None and tok.vocab_size != entry["vocab_size"]:
        raise TokenizerError(f"{path} has a vocabulary of {tok.vocab_size}, the artifact {entry['vocab_size']}")
    return tok
