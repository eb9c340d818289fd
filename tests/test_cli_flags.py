"""Honest flags (issue 22, "done when" 2): every flag of every subcommand either changes what
the command outputs (stdout, stderr, exit code, the files it writes) or is refused, with an
error naming it, for the models/tasks it does not apply to. A flag whose effect cannot be seen
in the output is listed in ``EXEMPT`` with its reason and the test that checks it instead.

``test_every_flag_has_a_case`` walks every subcommand's parser: a new flag without a case
here fails, so no flag can be added that is silently ignored without anyone deciding so.
Each effect case runs the command twice, without and with the flag, in separate scratch
folders, and compares one deterministic observation of the two outcomes (a JSON field, a
file, the exit code), never timings.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from staredge.cli import build_parser, main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- outcomes


@dataclass
class Outcome:
    """What one command run shows a user."""

    rc: int
    out: str
    err: str
    files: dict[str, str]  # path relative to the run's folder -> SHA-256 of its bytes
    folder: Path | None = None  # where it ran

    def json(self) -> Any:
        return json.loads(self.out)


def _files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(argv: list[str], folder: Path, monkeypatch, capsys, stdin: str | None = None,
            setup: Callable[[Path], None] | None = None) -> Outcome:
    """``staredge ARGV`` in ``folder`` (created; ``setup`` prepares it), as a user sees it."""
    folder.mkdir(parents=True, exist_ok=True)
    if setup:
        setup(folder)
    before = _files(folder)
    monkeypatch.chdir(folder)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin or ""))
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    got = capsys.readouterr()
    after = {k: v for k, v in _files(folder).items() if before.get(k) != v}
    return Outcome(int(rc or 0), got.out, got.err, after, folder)


# ----------------------------------------------------------------------------- observations


def J(*path: Any) -> Callable[[Outcome], Any]:
    """A field of the JSON document on stdout (None when stdout is not JSON)."""

    def get(o: Outcome) -> Any:
        try:
            value = o.json()
        except ValueError:
            return None
        for key in path:
            value = value[key] if not callable(key) else key(value)
        return value

    get.__name__ = "json" + "".join(f"[{k!r}]" for k in path)
    return get


def MANIFEST(key: str) -> Callable[[Outcome], Any]:
    """A field of the first model in the ios-bundle manifest the run wrote (None without one);
    the manifest file itself differs between identical runs (its created_utc)."""

    def get(o: Outcome) -> Any:
        path = (o.folder or Path(".")) / "m" / "manifest.json"
        return json.loads(path.read_text("utf-8"))["models"][0][key] if "m/manifest.json" in o.files else None

    get.__name__ = f"manifest[{key!r}]"
    return get


#: The CoreML weights of the bundled digits model (byte-identical between identical runs).
IOS_WEIGHTS = "m/starnet_digits.mlpackage/Data/com.apple.CoreML/weights/weight.bin"


def RC(o: Outcome) -> int:
    return o.rc


def OUT(o: Outcome) -> str:
    return o.out


def ERR_RC(o: Outcome) -> tuple[int, bool]:
    return o.rc, "error" in o.err


def FILES(o: Outcome) -> dict[str, str]:
    return o.files


def OUT_FILES(o: Outcome) -> tuple[str, dict[str, str]]:
    return o.out, o.files


# ----------------------------------------------------------------------------- cases


@dataclass
class Effect:
    """``base`` and ``base + extra`` differ in ``observe``."""

    base: list[str]
    extra: list[str]
    observe: Callable[[Outcome], Any]
    stdin: str | None = None
    setup: Callable[[Path], None] | None = None
    slow: bool = False


@dataclass
class Refused:
    """``argv`` (which gives the flag where it does not apply) is an error naming the flag."""

    argv: list[str]
    words: str = ""
    needs_no_gpu: bool = False
    setup: Callable[[Path], None] | None = None


@dataclass
class Exempt:
    """No effect in the output by design; ``test`` (``file::function``) checks it instead."""

    reason: str
    test: str
    extra: dict = field(default_factory=dict)


def _existing(*names: str) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        for name in names:
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("an earlier file\n")

    return setup


def _labels(folder: Path) -> None:
    (folder / "labels.txt").write_text("".join(f"digit-{i}\n" for i in range(10)))


def _random_checkpoint(folder: Path) -> None:
    """A digits checkpoint whose file name and header say nothing of its architecture."""
    import torch

    from staredge.models import create, save_safetensors

    torch.manual_seed(1)
    save_safetensors(create("starnet_digits"), folder / "weights.safetensors")


def _checkpoint_and_labels(folder: Path) -> None:
    _random_checkpoint(folder)
    _labels(folder)


#: Placeholders replaced by the session's shared inputs (see the ``inputs`` fixture).
ONNX, PNG, LFM2, RESULTS = "{ONNX}", "{PNG}", "{LFM2}", "{RESULTS}"

MODELS = ["models", "--family", "demonet", "--json"]
GENOME = ["genome", "11111-91111", "--seq-len", "8", "--json"]
INFO = ["info", ONNX, "--json"]
CLASSIFY = ["classify", ONNX, PNG, "--json"]
GENERATE = ["generate", "star_lm_pydoc", "The ", "--max-new-tokens", "8", "--temperature", "0"]
SAMPLED = ["generate", "star_lm_pydoc", "The ", "--max-new-tokens", "8", "--temperature", "1", "--seed", "0"]
CHAT = ["chat", LFM2, "--temperature", "0", "--max-new-tokens", "8", "--max-context", "128"]
CHAT_SAMPLED = ["chat", LFM2, "--temperature", "1", "--seed", "0", "--max-new-tokens", "8", "--max-context", "128"]
EXPORT = ["export", "starnet_digits", "--formats", "onnx", "--no-validate", "--out", "o", "--json"]
BENCH = ["bench", "starnet_digits", "--protocol", "quick", "--backends", "pytorch", "--no-baselines", "--iters", "2",
         "--warmup", "0", "--repeats", "1", "--threads", "1", "--no-progress", "--json"]
MERGE = ["bench", "--merge", RESULTS]
DEMO = ["demo", "--formats", "onnx", "--limit", "1", "--iters", "1", "--json"]
TUNE = ["tune", "starnet_digits", "--formats", "onnx", "--precision", "fp32", "--iters", "1", "--warmup", "0",
        "--repeats", "1", "--threads", "1", "--out", "t", "--json"]
IOS = ["ios-bundle", "starnet_digits", "--no-validate", "--out", "m"]
HI = "hello there\n"
THREADS_TEST = "tests/test_cli_flags.py::test_threads_reach_the_runtime"


def _without(argv: list[str], *flags: str) -> list[str]:
    """``argv`` without the given flags (and the value after each that takes one)."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a in flags:
            skip = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            continue
        out.append(a)
    return out


CASES: dict[tuple[str, str], Effect | Refused | Exempt] = {
    # ------------------------------------------------------------------ models
    ("models", "--family"): Effect(MODELS, ["--family", "starnet"], J("models", lambda rows: [r["name"] for r in rows])),
    ("models", "--json"): Effect(["models", "--family", "demonet"], ["--json"], OUT),
    ("models", "--markdown"): Effect(["models", "--family", "demonet"], ["--markdown"], OUT),
    ("models", "--force"): Effect(["models", "--json", "m.json"], ["--force"], RC, setup=_existing("m.json")),
    # ------------------------------------------------------------------ genome
    ("genome", "--seq-len"): Effect(GENOME, ["--seq-len", "16"], J("total_cache_bytes")),
    ("genome", "--dim"): Effect(GENOME, ["--dim", "64"], J("total_params")),
    ("genome", "--depth"): Effect(GENOME, ["--depth", "4"], J("rows", len)),
    ("genome", "--bytes-per-element"): Effect(GENOME, ["--bytes-per-element", "4"], J("total_cache_bytes")),
    ("genome", "--repair"): Effect(["genome", "11111-91114", "--seq-len", "8", "--json"], ["--repair"], RC),
    ("genome", "--json"): Effect(GENOME[:-1], ["--json"], OUT),
    ("genome", "--force"): Effect([*GENOME, "g.json"], ["--force"], RC, setup=_existing("g.json")),
    # ------------------------------------------------------------------ info
    ("info", "--no-load"): Effect(INFO, ["--no-load"], J("inputs")),
    ("info", "--json"): Effect(INFO[:-1], ["--json"], OUT),
    ("info", "--force"): Effect([*INFO, "i.json"], ["--force"], RC, setup=_existing("i.json")),
    # ------------------------------------------------------------------ classify
    ("classify", "--top-k"): Effect(CLASSIFY, ["--top-k", "2"], OUT),
    ("classify", "--labels"): Effect(CLASSIFY, ["--labels", "labels.txt"], OUT, setup=_labels),
    ("classify", "--json"): Effect(CLASSIFY[:-1], ["--json"], OUT),
    ("classify", "--csv"): Effect(CLASSIFY, ["--csv", "c.csv"], FILES),
    ("classify", "--force"): Effect([*CLASSIFY, "c.json"], ["--force"], RC, setup=_existing("c.json")),
    ("classify", "--backends"): Refused([*CLASSIFY, "--backends", "openvino"], "--backends"),
    ("classify", "--device"): Refused([*CLASSIFY, "--device", "cuda"], "cuda", needs_no_gpu=True),
    ("classify", "--model"): Refused([*CLASSIFY, "--model", "starnet_s1"], "--model"),
    ("classify", "--num-classes"): Refused([*CLASSIFY, "--num-classes", "3"], "--num-classes"),
    ("classify", "--threads"): Exempt("intra-op threads: the same probabilities by design, only speed changes",
                                      THREADS_TEST),
    # ------------------------------------------------------------------ generate
    ("generate", "--prompt-file"): Effect(_without(GENERATE, "The "), ["--prompt-file", "p.txt"], OUT,
                                          setup=lambda f: (f / "p.txt").write_text("def ")),
    ("generate", "--max-new-tokens"): Effect(GENERATE, ["--max-new-tokens", "3"], OUT),
    ("generate", "--temperature"): Effect([*GENERATE, "--seed", "0"], ["--temperature", "1.5"], OUT),
    ("generate", "--top-k"): Effect(SAMPLED, ["--top-k", "1"], OUT),
    ("generate", "--top-p"): Effect(SAMPLED, ["--top-p", "0.01"], OUT),
    ("generate", "--repetition-penalty"): Effect([*GENERATE, "--max-new-tokens", "32"],
                                                 ["--repetition-penalty", "5"], OUT),
    ("generate", "--seed"): Effect(SAMPLED, ["--seed", "1"], OUT),
    ("generate", "--stop"): Effect([*GENERATE, "--max-new-tokens", "32"], ["--stop", " "], OUT),
    ("generate", "--truncate"): Effect(["generate", "star_lm_pydoc", "ab" * 520, "--max-new-tokens", "1",
                                        "--temperature", "0", "--no-echo"], ["--truncate", "left"], RC),
    ("generate", "--no-echo"): Effect(GENERATE, ["--no-echo"], OUT),
    ("generate", "--stats"): Effect(GENERATE, ["--stats"], lambda o: "tokens" in o.err),
    ("generate", "--backends"): Refused([*GENERATE, "--backends", "onnxruntime"], "--backends"),
    ("generate", "--device"): Refused([*GENERATE, "--device", "cuda"], "cuda", needs_no_gpu=True),
    ("generate", "--threads"): Exempt("intra-op threads: the same tokens by design, only speed changes",
                                      THREADS_TEST),
    # ------------------------------------------------------------------ chat (a tiny imported LFM2 folder)
    ("chat", "--system"): Effect(CHAT_SAMPLED, ["--system", "Answer in French, always, whatever is asked."], OUT,
                                 stdin=HI),
    ("chat", "--max-new-tokens"): Effect(CHAT, ["--max-new-tokens", "2"], OUT, stdin=HI),
    ("chat", "--temperature"): Effect([*CHAT, "--seed", "0"], ["--temperature", "1.5"], OUT, stdin=HI),
    ("chat", "--top-k"): Effect(CHAT_SAMPLED, ["--top-k", "1"], OUT, stdin=HI),
    ("chat", "--top-p"): Effect(CHAT_SAMPLED, ["--top-p", "0.01"], OUT, stdin=HI),
    ("chat", "--repetition-penalty"): Effect(CHAT_SAMPLED, ["--repetition-penalty", "5"], OUT, stdin=HI),
    ("chat", "--seed"): Effect(CHAT_SAMPLED, ["--seed", "1"], OUT, stdin=HI),
    ("chat", "--max-context"): Effect(CHAT, ["--max-context", "4"], ERR_RC, stdin=HI),
    ("chat", "--threads"): Exempt("intra-op threads: the same reply by design, only speed changes", THREADS_TEST),
    # ------------------------------------------------------------------ export (image classifier)
    ("export", "--formats"): Effect(EXPORT, ["--formats", "openvino"], J("artifacts", 0, "format")),
    ("export", "--precision"): Effect(EXPORT, ["--precision", "fp16"], J("artifacts", 0, "precision")),
    ("export", "--calibration"): Refused([*EXPORT, "--calibration", "."], "--calibration"),
    ("export", "--calibration-samples"): Refused([*EXPORT, "--calibration-samples", "8"], "--calibration-samples"),
    ("export", "--rewrite"): Effect(EXPORT, ["--rewrite", "none"], J("artifacts", 0, "rewrites")),
    ("export", "--out"): Effect(EXPORT, ["--out", "elsewhere"], J("artifacts", 0, "path")),
    ("export", "--force"): Effect(EXPORT, ["--force"], RC, setup=_existing("o/starnet_digits.onnx")),
    ("export", "--checkpoint"): Effect(EXPORT, ["--checkpoint", "weights.safetensors"], FILES,
                                       setup=_random_checkpoint),
    ("export", "--pretrained"): Refused(["export", "demonet", "--pretrained", "--out", "o"], "weights"),
    ("export", "--model"): Effect(["export", "weights.safetensors", "--formats", "onnx", "--no-validate", "--out",
                                   "o", "--json"], ["--model", "starnet_digits"], RC, setup=_random_checkpoint),
    ("export", "--num-classes"): Effect(EXPORT, ["--num-classes", "3"], FILES),
    ("export", "--labels"): Effect(EXPORT, ["--labels", "labels.txt"], FILES, setup=_labels),
    ("export", "--dynamic-batch"): Effect(EXPORT, ["--dynamic-batch"], J("artifacts", 0, "dynamic_batch")),
    ("export", "--img-size"): Effect(EXPORT, ["--img-size", "64"], FILES),
    ("export", "--batch"): Effect(EXPORT, ["--batch", "2"], FILES),
    ("export", "--max-context"): Refused([*EXPORT, "--max-context", "10"], "--max-context"),
    ("export", "--prefill-chunk"): Refused([*EXPORT, "--prefill-chunk", "4"], "--prefill-chunk"),
    ("export", "--coreml-state"): Refused([*EXPORT, "--coreml-state", "fp16"], "--coreml-state"),
    ("export", "--dim"): Refused([*EXPORT, "--dim", "16"], "--dim"),
    ("export", "--depth"): Refused([*EXPORT, "--depth", "2"], "--depth"),
    ("export", "--no-validate"): Effect(_without(EXPORT, "--no-validate"), ["--no-validate"],
                                       J("artifacts", 0, "passed")),
    ("export", "--keep-failed"): Refused([*EXPORT, "--keep-failed"], "--keep-failed"),
    ("export", "--json"): Effect(EXPORT[:-1], ["--json"], OUT),
    # ------------------------------------------------------------------ bench (pytorch backend: no export)
    ("bench", "--backends"): Effect(BENCH, ["--backends", "onnxruntime"], J("results", 0, "runtime")),
    ("bench", "--precision"): Refused([*BENCH, "--precision", "int8"], "--precision"),
    ("bench", "--calibration"): Refused([*BENCH, "--calibration", "."], "--calibration"),
    ("bench", "--calibration-samples"): Refused([*BENCH, "--calibration-samples", "8"], "--calibration-samples"),
    ("bench", "--protocol"): Effect(BENCH, ["--protocol", "paper-cpu"], J("results", 0, "protocol")),
    ("bench", "--threads"): Effect(BENCH, ["--threads", "2"], J("results", 0, "threads_requested")),
    ("bench", "--warmup"): Effect(BENCH, ["--warmup", "1"], J("results", 0, "runs", 0, "warmup")),
    ("bench", "--iters"): Effect(BENCH, ["--iters", "3"], J("results", 0, "runs", 0, "n")),
    ("bench", "--repeats"): Effect(BENCH, ["--repeats", "2"], J("results", 0, "runs", len)),
    ("bench", "--statistic"): Effect(BENCH, ["--statistic", "p90"],
                                     J("protocols", lambda d: [p["statistic"] for p in d.values()])),
    ("bench", "--reduce"): Effect(BENCH, ["--reduce", "mean"],
                                  J("protocols", lambda d: [p["reduce"] for p in d.values()])),
    ("bench", "--device"): Refused([*BENCH, "--device", "cuda"], "cuda", needs_no_gpu=True),
    ("bench", "--rewrite"): Refused([*BENCH, "--rewrite", "none"], "--rewrite"),
    ("bench", "--no-baselines"): Effect(_without(BENCH, "--no-baselines"), ["--no-baselines"], J("results", len)),
    ("bench", "--compare-rewrites"): Refused([*BENCH, "--compare-rewrites"], "--compare-rewrites"),
    ("bench", "--compare-star-sum"): Effect(BENCH, ["--compare-star-sum"],
                                           J("results", lambda rs: sorted(r["variant"] for r in rs))),
    ("bench", "--out"): Effect(MERGE, ["--out", "d"], FILES),
    ("bench", "--json"): Effect(MERGE, ["--json"], OUT),
    ("bench", "--markdown"): Effect(MERGE, ["--markdown", "t.md"], FILES),
    ("bench", "--csv"): Effect(MERGE, ["--csv", "t.csv"], FILES),
    ("bench", "--bars"): Effect(MERGE, ["--bars", "b.png"], FILES),
    ("bench", "--plot"): Effect(MERGE, ["--plot", "p.png"], lambda o: (sorted(o.files), "plot" in o.err)),
    ("bench", "--merge"): Effect(["bench"], ["--merge", RESULTS], RC),
    ("bench", "--keep-samples"): Effect(BENCH, ["--keep-samples"], lambda o: "samples_ms" in o.out),
    ("bench", "--workdir"): Effect([*BENCH, "--backends", "onnxruntime"], ["--workdir", "w"],
                                   lambda o: sorted(Path(f).suffix for f in o.files)),
    ("bench", "--no-progress"): Exempt("the progress display is drawn on a terminal only, never into captured or "
                                       "redirected output", "tests/test_cli_flags.py::test_no_progress_turns_the_display_off"),
    ("bench", "--force"): Effect([*MERGE, "--json", "r.json"], ["--force"], RC, setup=_existing("r.json")),
    ("bench", "--interleave"): Exempt("changes only the order in which backends are timed (round-robin), which "
                                      "the numbers do not show", "tests/test_bench.py::"
                                      "test_interleaved_runs_alternate_backends_round_robin"),
    ("bench", "--task"): Exempt("--task generate runs the LM decode benchmark (minutes of timing); its effect and "
                                "its refusals are tested with the benchmark recorded",
                                "tests/test_cli_bench.py::"
                                "test_bench_generate_json_without_file_prints_the_document_like_every_command"),
    # ------------------------------------------------------------------ demo
    ("demo", "--out"): Effect(DEMO, ["--out", "d"], J("out_dir", bool)),
    ("demo", "--limit"): Effect(DEMO, ["--limit", "2"], J("n_images")),
    ("demo", "--formats"): Effect(DEMO, ["--formats", "openvino"], J("rows", lambda rs: [r["format"] for r in rs])),
    ("demo", "--threads"): Effect(DEMO, ["--threads", "2"], J("threads")),
    ("demo", "--iters"): Effect(DEMO, ["--iters", "2"], J("iters")),
    ("demo", "--json"): Effect(DEMO[:-1], ["--json"], OUT),
    ("demo", "--force"): Effect([*DEMO, "d.json"], ["--force"], RC, setup=_existing("d.json")),
    # ------------------------------------------------------------------ tune
    ("tune", "--formats"): Effect(TUNE, ["--formats", "openvino"], J("candidates", 0, "format")),
    ("tune", "--precision"): Effect(TUNE, ["--precision", "fp16"], J("candidates", 0, "precision")),
    ("tune", "--out"): Effect(TUNE, ["--out", "t2"], J("out_dir")),
    ("tune", "--threads"): Effect(TUNE, ["--threads", "2"], J("threads")),
    ("tune", "--warmup"): Effect(TUNE, ["--warmup", "1"], J("warmup")),
    ("tune", "--iters"): Effect(TUNE, ["--iters", "2"], J("iters")),
    ("tune", "--repeats"): Effect(TUNE, ["--repeats", "2"], J("rounds")),
    ("tune", "--calibration"): Refused([*TUNE, "--calibration", "."], "--calibration"),
    ("tune", "--calibration-samples"): Refused([*TUNE, "--calibration-samples", "8"], "--calibration-samples"),
    ("tune", "--rewrite"): Effect(TUNE, ["--rewrite", "none"], J("rewrite")),
    ("tune", "--checkpoint"): Effect(TUNE, ["--checkpoint", "weights.safetensors"],
                                     lambda o: o.files.get("t/starnet_digits.onnx"), setup=_random_checkpoint),
    ("tune", "--pretrained"): Refused(["tune", "demonet", "--pretrained", "--formats", "onnx", "--precision", "fp32"],
                                      "weights"),
    ("tune", "--model"): Effect(["tune", "weights.safetensors", *TUNE[2:]], ["--model", "starnet_digits"], RC,
                                setup=_random_checkpoint),
    ("tune", "--num-classes"): Effect(TUNE, ["--num-classes", "3"], lambda o: o.files.get("t/starnet_digits.onnx")),
    ("tune", "--labels"): Effect([*TUNE, "--checkpoint", "weights.safetensors"], ["--labels", "labels.txt"],
                                 lambda o: o.files.get("t/starnet_digits.onnx"), setup=_checkpoint_and_labels),
    ("tune", "--force"): Effect(TUNE, ["--force"], RC, setup=_existing("t/tune.json")),
    ("tune", "--json"): Effect(TUNE[:-1], ["--json"], OUT),
    # ------------------------------------------------------------------ ios-bundle (CoreML conversion: ~15 s a run)
    ("ios-bundle", "--out"): Effect(IOS, ["--out", "m2"], RC, setup=_existing("m/manifest.json")),
    ("ios-bundle", "--precision"): Effect(IOS, ["--precision", "fp16"],
                                          lambda o: (MANIFEST("precision")(o), o.files.get(IOS_WEIGHTS)), slow=True),
    ("ios-bundle", "--rewrite"): Effect(IOS, ["--rewrite", "none"], MANIFEST("rewrites"), slow=True),
    ("ios-bundle", "--pretrained"): Refused(["ios-bundle", "demonet", "--pretrained", "--out", "m"], "weights"),
    ("ios-bundle", "--checkpoint"): Effect(IOS, ["--checkpoint", "weights.safetensors"],
                                           lambda o: o.files.get(IOS_WEIGHTS), setup=_random_checkpoint, slow=True),
    ("ios-bundle", "--force"): Effect(IOS, ["--force"], RC, setup=_existing("m/manifest.json")),
    ("ios-bundle", "--no-validate"): Exempt("the validated half (a CoreML run through the MIL reference executor, "
                                            "about 30 s) is tests/test_ios_bench.py::test_ios_bundle_exports_a_"
                                            "validated_package_and_its_manifest (validated True); this test checks "
                                            "the --no-validate half, so a third CoreML run is not repeated here",
                                            "tests/test_cli_flags.py::test_no_validate_is_said_and_recorded"),
}

#: Flags every subcommand has, tested once for all: ``-h`` (argparse) and ``-v/--verbose``
#: (tests/test_cli_quiet.py: converter lines shown or logged).
GLOBAL_FLAGS = ("-h", "-v")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _flags() -> set[tuple[str, str]]:
    return {(name, a.option_strings[0]) for name, p in _subparsers().items() for a in p._actions
            if a.option_strings and a.help != argparse.SUPPRESS and a.option_strings[0] not in GLOBAL_FLAGS}


def test_every_flag_has_a_case():
    flags = _flags()
    assert sorted(flags - set(CASES)) == [], "flags with no effect case, refusal or justified exemption"
    assert sorted(set(CASES) - flags) == [], "cases for flags that no longer exist"


def test_exemptions_name_a_test_that_exists():
    import ast

    for key, case in CASES.items():
        if isinstance(case, Exempt):
            path, _, name = case.test.partition("::")
            tree = ast.parse((ROOT / path).read_text("utf-8"))
            assert name in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, (key, case.test)
            assert len(case.reason) > 20, key


# ----------------------------------------------------------------------------- shared inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, worker_id) -> dict[str, str]:
    from tests._cli_artifacts import digit_png, digits_onnx

    got = {ONNX: str(digits_onnx(tmp_path_factory, worker_id)), PNG: str(digit_png(tmp_path_factory, worker_id)),
           RESULTS: str(ROOT / "docs" / "img" / "bench-results" / "main.json")}
    return got


@pytest.fixture(scope="module")
def lfm2_folder(tmp_path_factory) -> str:
    pytest.importorskip("transformers")
    from _lfm2_cases import VARIED, write_folder

    folder = tmp_path_factory.mktemp("flags_chat") / "lfm2"
    write_folder(folder, "gqa2", seed=2, **VARIED)
    return str(folder)


def _fill(argv: list[str], inputs: dict[str, str]) -> list[str]:
    return [inputs.get(a, a) for a in argv]


def _params(kind):
    out = []
    for (cmd, flag), case in sorted(CASES.items()):
        if isinstance(case, kind):
            marks = [pytest.mark.slow] if getattr(case, "slow", False) or cmd == "ios-bundle" else []
            out.append(pytest.param(cmd, flag, case, id=f"{cmd} {flag}", marks=marks))
    return out


@pytest.mark.parametrize("cmd,flag,case", _params(Effect))
def test_flag_changes_the_output(cmd, flag, case, inputs, tmp_path, monkeypatch, capsys, request):
    if cmd == "ios-bundle":
        pytest.importorskip("coremltools")
    if any(LFM2 in a for a in case.base):
        inputs = {**inputs, LFM2: request.getfixturevalue("lfm2_folder")}
    base = run_cli(_fill(case.base, inputs), tmp_path / "without", monkeypatch, capsys, case.stdin, case.setup)
    flagged = run_cli(_fill([*case.base, *case.extra], inputs), tmp_path / "with", monkeypatch, capsys, case.stdin,
                      case.setup)
    seen = (case.observe(base), case.observe(flagged))
    assert seen[0] != seen[1], (f"staredge {cmd} {flag} changed nothing in {getattr(case.observe, '__name__', '')}: "
                                f"{seen[0]!r}; stderr: {flagged.err[-600:]}")
    # the run the case is about worked, or failed as a user should see a failure: one line naming why
    for o in (base, flagged):
        assert o.rc in (0, 1, 2) and "Traceback" not in o.err, o.err[-2000:]


@pytest.mark.parametrize("cmd,flag,case", _params(Refused))
def test_flag_is_refused_where_it_does_not_apply(cmd, flag, case, inputs, tmp_path, monkeypatch, capsys):
    if case.needs_no_gpu:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is here: --device cuda applies")
    o = run_cli(_fill(case.argv, inputs), tmp_path, monkeypatch, capsys, setup=case.setup)
    assert o.rc == 2 and f"staredge {cmd}: error:" in o.err, o.err[-2000:]
    assert (case.words or flag) in o.err and "Traceback" not in o.err, o.err[-2000:]
    assert not any(f.endswith((".onnx", ".json", ".xml", ".tflite")) for f in o.files), o.files  # no work was done


def test_threads_reach_the_runtime(inputs, lfm2_folder, tmp_path, monkeypatch, capsys):
    """``--threads`` of classify, generate and chat (exempt above: outputs are equal by design)
    is the thread count the runtime runs with: the artifact's runtime is opened with it, the
    PyTorch model runs with it."""
    import torch

    import staredge.predictor as predictor

    opened = []
    real = predictor.load_backend

    def spy(*args, **kwargs):
        opened.append(kwargs.get("threads"))
        return real(*args, **kwargs)

    monkeypatch.setattr(predictor, "load_backend", spy)
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            o = run_cli(_fill([*CLASSIFY, "--threads", str(n)], inputs), tmp_path / f"c{n}", monkeypatch, capsys)
            assert o.rc == 0 and opened[-1] == n, (o.err, opened)
            o = run_cli([*GENERATE, "--threads", str(n)], tmp_path / f"g{n}", monkeypatch, capsys)
            assert o.rc == 0 and torch.get_num_threads() == n, o.err
            o = run_cli([lfm2_folder if a == LFM2 else a for a in [*CHAT, "--threads", str(n)]], tmp_path / f"h{n}",
                        monkeypatch, capsys, stdin=HI)
            assert o.rc == 0 and torch.get_num_threads() == n, o.err
    finally:
        torch.set_num_threads(before)


def test_no_progress_turns_the_display_off(tmp_path, monkeypatch, capsys):
    """``bench --no-progress`` (exempt above) is the display's switch: the harness is asked for
    a progress display without it, and for none with it."""
    import staredge.bench.harness as harness

    asked = []
    real = harness._Progress.__init__

    def spy(self, enabled, *args, **kwargs):
        asked.append(enabled)
        real(self, enabled, *args, **kwargs)

    monkeypatch.setattr(harness._Progress, "__init__", spy)
    assert run_cli(_without(BENCH, "--no-progress"), tmp_path / "a", monkeypatch, capsys).rc == 0
    assert run_cli(BENCH, tmp_path / "b", monkeypatch, capsys).rc == 0
    assert asked == [True, False]


@pytest.mark.slow  # a CoreML conversion (about 10 s)
def test_no_validate_is_said_and_recorded(tmp_path):
    """``ios-bundle --no-validate`` (exempt above): the terminal says "not validated" and the
    manifest records validated None (a validated run records True with its max |diff|). Run as
    a user runs it, in a fresh process: the converters' lines go to the log like export's, the
    terminal shows only the command's own progress."""
    import os
    import subprocess
    import sys

    pytest.importorskip("coremltools")
    env = {k: v for k, v in os.environ.items() if k != "STAREDGE_VERBOSE"}
    proc = subprocess.run([sys.executable, "-m", "staredge.cli", *IOS], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path, env={**env, "STAREDGE_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0 and "not validated" in proc.stdout, proc.stderr[-2000:]
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text("utf-8"))
    assert [(m["validated"], m.get("max_abs_diff")) for m in manifest["models"]] == [(None, None)]
    assert all(line.startswith("starnet_digits: ") for line in proc.stderr.splitlines()), proc.stderr[-2000:]
    assert (tmp_path / "cache" / "logs" / "ios-bundle.log").is_file()


def test_ios_bundle_checkpoint_goes_with_one_model(tmp_path, monkeypatch, capsys):
    """``ios-bundle --checkpoint`` (its effect: the case above) is refused with two models,
    before any work."""
    o = run_cli(["ios-bundle", "starnet_digits", "demonet", "--checkpoint", "w.pt", "--out", "m"], tmp_path,
                monkeypatch, capsys)
    assert o.rc == 2 and "staredge ios-bundle: error:" in o.err and "--checkpoint" in o.err, o.err[-2000:]
    assert o.files == {}
