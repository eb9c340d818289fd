"""Hardening (issue 16): API and CLI arguments of generation and the Predictor.

Each case is a reproducer from the issue that used to escape as a raw Python or torch
exception (or was silently misread) and is now a ConfigError/LimitError saying what to pass.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from staredge.errors import ConfigError, LimitError, StarEdgeError
from staredge.generation import (
    EOS_ID,
    MAX_NEW_TOKENS,
    MAX_PROMPT_BYTES,
    VOCAB_SIZE,
    generate,
    stream,
    validate_stream_args,
)


class Echo:
    """Smallest model with the step contract: always predicts byte 'a', then EOS at the end."""

    max_seq_len = 64

    def init_state(self, batch_size: int = 1) -> int:
        return 0

    def step(self, input_ids: torch.Tensor, state: int):
        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], VOCAB_SIZE)
        logits[..., ord("a")] = 5.0
        logits[..., EOS_ID] = 4.0
        return logits, state + input_ids.shape[1]


@pytest.mark.parametrize("kwargs, cls, match", [
    (dict(seed="abc"), ConfigError, "seed must be an integer 0..2\\*\\*63-1 or None, got str 'abc'"),
    (dict(seed=2**80), ConfigError, "seed must be in 0..2\\*\\*63-1"),
    (dict(seed=-1), ConfigError, "seed must be in 0..2\\*\\*63-1"),
    (dict(seed=1.5), ConfigError, "got float 1.5"),
    (dict(seed=True), ConfigError, "got bool"),
    (dict(prompt="ab\ud800c"), ConfigError, "lone surrogate U\\+D800 at character 2"),
    (dict(prompt=["The ", "cat"]), ConfigError, "list of strings"),
    (dict(prompt=None), ConfigError, "prompt is None"),
    (dict(prompt=[256, 1.5]), ConfigError, "token ids must be integers"),
    (dict(prompt=[256, None]), ConfigError, "got NoneType None"),
    (dict(prompt={"a": 1}), ConfigError, "prompt must be text, bytes or a list of token ids"),
    (dict(prompt=3), ConfigError, "prompt must be text"),
    (dict(stop=b"x"), ConfigError, "stop is bytes .*stop='x'.*stop=\\[120\\]"),
    (dict(stop=[b"x"]), ConfigError, "is bytes; pass it as a str"),
    (dict(stop=["s"] * 300), LimitError, "MAX_STOP_STRINGS"),
    (dict(stop="x" * 5000), LimitError, "MAX_STOP_CHARS"),
    (dict(max_new_tokens="5"), ConfigError, "max_new_tokens must be an integer"),
    (dict(max_new_tokens=10**12), LimitError, "MAX_NEW_TOKENS"),
    (dict(add_bos="yes"), ConfigError, "add_bos must be True or False"),
    (dict(prefill_chunk=2.0), ConfigError, "prefill_chunk must be a positive integer"),
])
def test_bad_generation_arguments(kwargs, cls, match):
    kwargs = {"prompt": "The ", **kwargs}
    prompt = kwargs.pop("prompt")
    with pytest.raises(cls, match=match):
        stream(Echo(), prompt, **kwargs)


def test_prompt_limit_is_checked_before_encoding():
    with pytest.raises(LimitError, match="MAX_PROMPT_BYTES"):
        validate_stream_args(b"x" * (MAX_PROMPT_BYTES + 1), 1, None, None)
    assert MAX_NEW_TOKENS >= 1 << 16


def test_good_arguments_still_generate():
    assert generate(Echo(), "The ", max_new_tokens=3, temperature=0, seed=2**63 - 1) == "aaa"
    assert generate(Echo(), [256, 65], max_new_tokens=2, temperature=0) == "aa"
    assert generate(Echo(), torch.tensor([256, 65]), max_new_tokens=2, temperature=0) == "aa"
    assert generate(Echo(), b"\xff\xfe", max_new_tokens=1, temperature=0) == "a"
    assert generate(Echo(), "x", max_new_tokens=5, temperature=0, stop=["aaa"]) == ""


def test_max_seq_len_zero_is_refused():
    from staredge.models.star import STARLanguageModel

    with pytest.raises(ConfigError, match="max_seq_len must be >= 1, got 0"):
        STARLanguageModel(16, 1, "9", max_seq_len=0)


@settings(max_examples=200, derandomize=True, deadline=None, database=None)
@given(prompt=st.one_of(st.text(max_size=8), st.binary(max_size=8), st.none(), st.integers(),
                        st.lists(st.one_of(st.integers(-3, 300), st.text(max_size=2), st.floats()), max_size=4)),
       seed=st.one_of(st.none(), st.integers(-2, 2**64), st.floats(), st.text(max_size=3)),
       stop=st.one_of(st.none(), st.text(max_size=3), st.binary(max_size=2), st.integers(-2, 300),
                      st.lists(st.one_of(st.text(max_size=2), st.integers(-1, 300)), max_size=3)),
       max_new_tokens=st.one_of(st.integers(-1, 4), st.floats(), st.none()))
def test_fuzz_generation_arguments(prompt, seed, stop, max_new_tokens):
    try:
        text = generate(Echo(), prompt, max_new_tokens=max_new_tokens, seed=seed, stop=stop, temperature=0)
    except StarEdgeError:
        return
    assert isinstance(text, str) and set(text) <= {"a"}


# ----------------------------------------------------------------------------- CLI


def _staredge(*argv: str | bytes) -> subprocess.CompletedProcess:
    code = "import sys; from staredge.cli import main; sys.exit(main())"
    env = dict(os.environ, STAREDGE_TEST_THREADS="1")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, env=env, timeout=300)


def test_cli_generate_with_invalid_utf8_prompt():
    # bash $'\xff\xfe': not UTF-8, handed to Python as lone surrogates; used as raw bytes
    proc = _staredge("generate", b"\xff\xfe", "--max-new-tokens", "3", "--seed", "1", "--temperature", "0")
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr
    assert proc.stdout.startswith("\ufffd\ufffd".encode())  # the echo shows the two bytes as U+FFFD


def test_cli_generate_with_bad_seed_is_one_line():
    from staredge.cli import main

    with pytest.raises(SystemExit):  # argparse: --seed takes an int
        main(["generate", "x", "--seed", "abc"])


# ----------------------------------------------------------------------------- Predictor


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size="8"), "batch_size must be a positive integer, got str '8'; pass batch_size=8"),
    (dict(batch_size=0), "batch_size must be >= 1"),
    (dict(batch_size=2.5), "got float"),
    (dict(batch_size=True), "got bool"),
    (dict(max_pixels="1e6"), "max_pixels must be a positive integer or None"),
    (dict(max_pixels=0), "max_pixels must be a positive integer or None"),
])
def test_predictor_arguments_are_checked_before_loading(tmp_path, kwargs, match):
    from staredge import Predictor

    # the file does not exist: the argument error comes first, before anything is loaded
    with pytest.raises(ConfigError, match=match):
        Predictor(tmp_path / "missing.onnx", **kwargs)


# ----------------------------------------------------------------------------- outputs and other CLI inputs


def test_bench_merge_of_an_image_is_one_line(tmp_path, capsys):
    from PIL import Image

    from staredge.cli import main

    png = tmp_path / "image.png"
    Image.new("RGB", (4, 4)).save(png)
    assert main(["bench", "--merge", str(png)]) == 2
    err = capsys.readouterr().err
    assert "is not a results file" in err and "Traceback" not in err


def test_output_checks_refuse_before_any_work(tmp_path):
    from staredge.commands._outputs import check_output_file, check_output_folder
    from staredge.errors import ArtifactExistsError

    (tmp_path / "a-file").write_text("x")
    for bad, match in [(tmp_path / "a-file", "is a file, not a folder"),
                       (tmp_path / "a-file" / "below", "is a file, so no folder can be created below it"),
                       ("/proc/staredge-out", "cannot write there")]:
        with pytest.raises(ConfigError, match=match):
            check_output_folder(bad)
    assert check_output_folder(tmp_path / "new" / "folder").is_dir()
    report = tmp_path / "r.json"
    report.write_text("{}")
    with pytest.raises(ArtifactExistsError, match="already exists; nothing was done"):
        check_output_file(report, force=False)
    assert check_output_file(report, force=True) == report and report.read_text() == "{}"
    with pytest.raises(ConfigError, match="cannot write there"):
        check_output_file("/proc/staredge-x/r.json", force=False)
    with pytest.raises(ConfigError, match="is a folder"):
        check_output_file(tmp_path, force=True)


def test_artifact_symlink_loop_says_so(tmp_path):
    from staredge import Predictor
    from staredge.errors import ArtifactError

    loop = tmp_path / "loop.onnx"
    loop.symlink_to(loop)
    with pytest.raises(ArtifactError, match="symbolic link that leads nowhere"):
        Predictor(loop)


def test_classify_refuses_nan_outputs():
    import numpy as np

    from staredge import Predictor
    from staredge.errors import ArtifactError
    from staredge.models import create

    model = create("starnet_s050")
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    p = Predictor(model, device="cpu")
    with pytest.raises(ArtifactError, match=r"outputs are not finite \(NaN or Inf\) for 1 of 1 image"):
        p.classify(np.zeros((40, 40, 3), np.uint8))
