"""Chat: the model's own template rendered in Jinja's sandbox, LanguageModel.chat streaming
the same greedy reply as transformers' generate() on the same prompt, ChatSession history,
and ``staredge chat`` fed from stdin (Ctrl-C cancels a reply, not the session)."""

from __future__ import annotations

import io
import warnings

import pytest
import torch

pytest.importorskip("transformers")

from _lfm2_cases import CHAT_TEMPLATE, VARIED, write_folder  # noqa: E402
from staredge.chat import ChatSession, chat_prompt_ids, render_chat  # noqa: E402
from staredge.errors import ChatTemplateError, ConfigError  # noqa: E402
from staredge.generation import LanguageModel  # noqa: E402
from staredge.models.star import from_pretrained  # noqa: E402

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Grüße! 🙂 What is 2+2?"}]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    f = tmp_path_factory.mktemp("chat") / "lfm2"
    write_folder(f, "gqa2", seed=2, **VARIED)
    return f


@pytest.fixture(scope="module")
def lm(folder):
    model = from_pretrained(folder, max_seq_len=256)
    return LanguageModel(model, name="tiny-lfm2")


def test_template_renders_like_transformers(folder, lm):
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(str(folder))
    ours = render_chat(CHAT_TEMPLATE, MESSAGES, bos_token="<|startoftext|>")
    assert ours == hf_tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    ids = chat_prompt_ids(lm.tokenizer, MESSAGES)
    theirs = hf_tok.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True)
    theirs = theirs["input_ids"] if isinstance(theirs, dict) or hasattr(theirs, "keys") else theirs
    assert ids == list(theirs)
    assert ids[0] == 1 and ids.count(1) == 1  # BOS written by the template, not added twice


def test_sandbox_and_errors():
    with pytest.raises(ChatTemplateError, match="no chat template"):
        render_chat(None, MESSAGES)
    with pytest.raises(ChatTemplateError, match="sandbox forbids"):
        render_chat("{{ messages.__class__.__mro__[1].__subclasses__() }}", MESSAGES)
    with pytest.raises(ChatTemplateError, match="sandbox forbids"):
        render_chat("{{ messages.append(1) }}", MESSAGES)  # immutable: no mutation of the messages
    with pytest.raises(ChatTemplateError, match="only users"):
        render_chat("{{ raise_exception('only users') }}", MESSAGES)
    with pytest.raises(ChatTemplateError, match="does not compile"):
        render_chat("{% for %}", MESSAGES)
    with pytest.raises(ConfigError, match="role 'wizard'"):
        render_chat(CHAT_TEMPLATE, [{"role": "wizard", "content": "x"}])
    with pytest.raises(ConfigError, match="list of"):
        render_chat(CHAT_TEMPLATE, "hello")


def test_model_without_template_says_so(tmp_path):
    write_folder(tmp_path / "plain", "gqa2", chat_template=None)
    plain = LanguageModel(from_pretrained(tmp_path / "plain", max_seq_len=128))
    with pytest.raises(ChatTemplateError, match="no chat template"):
        plain.chat(MESSAGES)
    with pytest.raises(ChatTemplateError, match="no chat template"):
        ChatSession(plain)


def test_chat_reply_is_transformers_greedy_reply(folder, lm):
    import transformers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.Lfm2ForCausalLM.from_pretrained(str(folder)).eval()
        hf_tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    ids = chat_prompt_ids(lm.tokenizer, MESSAGES)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = hf.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, eos_token_id=[4, 2],
                          pad_token_id=0)
    new = out[0, len(ids):].tolist()
    expected = hf_tok.decode(new, skip_special_tokens=True)
    stream = lm.chat(MESSAGES, max_new_tokens=24, temperature=0.0)
    pieces = list(stream)
    assert "".join(pieces) == expected
    assert stream.stats.generated_ids == new[:len(stream.stats.generated_ids)]
    assert len(new) == len(stream.stats.generated_ids)
    assert len(set(new)) > 5  # a varied reply, not one token repeated


def test_session_keeps_history_and_drops_cancelled_replies(lm):
    s = ChatSession(lm, system="Be brief.", max_new_tokens=6, temperature=0.0)
    first = "".join(s.send("hello"))
    assert [m["role"] for m in s.messages] == ["system", "user", "assistant"]
    assert s.messages[-1]["content"] == first
    reply = s.send("and again")
    next(reply, None)
    reply.close()  # cancelled: the exchange is not kept
    assert len(s.messages) == 3
    "".join(s.send("third"))
    assert [m["role"] for m in s.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert s.messages[3]["content"] == "third"
    s.reset()
    assert [m["role"] for m in s.messages] == ["system"]


class _InterruptingSession:
    """Wraps a ChatSession; the n-th reply raises KeyboardInterrupt after its first piece."""

    def __init__(self, session, interrupt_turn):
        self.session, self.turn, self.interrupt_turn = session, 0, interrupt_turn

    def reset(self):
        self.session.reset()

    def send(self, text):
        self.turn += 1
        gen = self.session.send(text)
        if self.turn != self.interrupt_turn:
            return gen

        def interrupted():
            yield next(gen)
            gen.close()
            raise KeyboardInterrupt

        return interrupted()


def _greedy_replies(lm, texts, max_new_tokens):
    s = ChatSession(lm, max_new_tokens=max_new_tokens, temperature=0.0)
    return ["".join(s.send(t)) for t in texts]


def test_cli_loop_from_stdin_with_ctrl_c_cancelling_one_reply(lm):
    from staredge.commands.chat import chat_loop

    session = ChatSession(lm, max_new_tokens=5, temperature=0.0)
    wrapped = _InterruptingSession(session, interrupt_turn=2)
    stdin = io.StringIO("hello\nsecond\n\n/reset\nthird\n/exit\nnever sent\n")
    out, err = io.StringIO(), io.StringIO()
    assert chat_loop(wrapped, stdin, out, err) == 0
    assert "[cancelled]" in err.getvalue() and "[conversation forgotten]" in err.getvalue()
    assert wrapped.turn == 3  # hello, second (cancelled), third; nothing after /exit
    assert [m["content"] for m in session.messages if m["role"] == "user"] == ["third"]
    hello, = _greedy_replies(lm, ["hello"], 5)
    third, = _greedy_replies(lm, ["third"], 5)  # after /reset: no history
    # the cancelled turn ("second") ran with hello's exchange in its history
    with_history = ChatSession(lm, max_new_tokens=5, temperature=0.0)
    "".join(with_history.send("hello"))
    second_first_piece = next(with_history.send("second"))
    assert out.getvalue() == f"{hello}\n{second_first_piece}\n{third}\n"


def test_cli_command_end_to_end(folder, lm, monkeypatch, capsys):
    from staredge.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("hello there\nwhat now?\n"))
    rc = main(["chat", str(folder), "--temperature", "0", "--max-new-tokens", "8", "--max-context", "128"])
    assert rc == 0
    first, second = _greedy_replies(lm, ["hello there", "what now?"], 8)
    assert capsys.readouterr().out == f"{first}\n{second}\n"
