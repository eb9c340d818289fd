"""Token-by-token validation of LM artifacts against the PyTorch model.

The artifact is run by the stepper ``Predictor.stream`` serves
(:func:`staredge.runtimes.lm.load_lm_artifact`: the runtime's text-generation backend, its
engine and settings) and the one decode loop (:func:`staredge.decoding.decode_tokens`): a
real English prompt (from the shipped model's description, :func:`validation_prompt`) is
prefilled in the artifact's chunks, then the artifact decodes greedily. Every logit row (prompt and decode steps) is
compared with the PyTorch model's **parallel** forward over the same tokens, and the greedy
tokens with PyTorch's greedy continuation.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import Any

import numpy as np
import torch

from staredge.errors import ConfigError
from staredge.models.star import BOS_ID
from staredge.runtimes.lm import LMStepper

#: fp32 artifacts: max |Δ| of logits vs the parallel forward.
FP32_ATOL = 1e-4
#: Artifacts whose state is stored in fp16 (CoreML stateful): their own tolerance, and the
#: first 32 greedy tokens must agree (measured on the shipped model: 2.4e-3, 128/128).
FP16_STATE_ATOL = 1e-2
FP16_MIN_GREEDY = 32
#: Greedy tokens compared by default.
GREEDY_TOKENS = 128
#: Decode steps the validation needs at least.
MIN_DECODE_STEPS = 64
#: Bytes of English the validation prompt holds at least.
MIN_PROMPT_BYTES = 64
#: The smallest context validated with the full budget (BOS, a 64-byte prompt, 64 decode
#: steps); a smaller context is validated too, on what it holds (:func:`validation_budget`).
MIN_CONTEXT = 1 + MIN_PROMPT_BYTES + MIN_DECODE_STEPS


def validation_budget(max_context: int) -> tuple[int, int]:
    """(prompt bytes, decode steps) that validation uses at ``max_context``: from
    :data:`MIN_CONTEXT` on, the shipped prompt (never cut below 64 bytes) and 64 decode steps
    at least; below it, BOS and the rest of the context split between prompt and decode
    steps (half each, at least one decode step), so every context the model allows validates."""
    room = int(max_context) - 1
    if room >= MIN_PROMPT_BYTES + MIN_DECODE_STEPS:
        prompt = min(len(validation_prompt()), max(MIN_PROMPT_BYTES, room - MIN_DECODE_STEPS))
        return prompt, min(GREEDY_TOKENS - 1, room - prompt)
    prompt = room // 2
    return prompt, room - prompt


def validation_prompt() -> bytes:
    """At least 64 bytes of English from the shipped data: the description of the shipped
    model's training text in ``staredge/data/star_lm_pydoc.json``."""
    doc = json.loads(resources.files("staredge.data").joinpath("star_lm_pydoc.json").read_text("utf-8"))
    text = doc["info"]["trained_on"].encode("utf-8")
    if len(text) < MIN_PROMPT_BYTES:  # pragma: no cover - the shipped file holds 97 bytes
        raise ConfigError(f"the shipped validation prompt is shorter than {MIN_PROMPT_BYTES} bytes")
    return text


def prompt_ids(prompt: bytes | None = None) -> list[int]:
    """BOS followed by the prompt's bytes."""
    return [BOS_ID] + list(validation_prompt() if prompt is None else prompt)


@torch.no_grad()
def reference(model, ids: list[int], new_tokens: int) -> tuple[list[int], np.ndarray]:
    """PyTorch greedy continuation (step form) and the parallel forward's logits over
    ``ids + tokens[:-1]`` ([len, vocab])."""
    model = model.eval()
    state = model.init_state(1)
    logits, state = model.step(torch.tensor([ids]), state)
    tokens = []
    nxt = int(logits[0, -1].argmax())
    for k in range(new_tokens):
        tokens.append(nxt)
        if k == new_tokens - 1:
            break
        logits, state = model.step(torch.tensor([[nxt]]), state)
        nxt = int(logits[0, -1].argmax())
    full = model(torch.tensor([ids + tokens[:-1]]))[0].float().numpy()
    return tokens, full


class GraphStepper(LMStepper):
    """The PyTorch :class:`~staredge.exporters.lm_graph.LMDecodeGraph` driven through the
    artifact contract (same stepper logic as the runtimes), to check the graph itself."""

    def __init__(self, graph, prefill_chunk: int = 16) -> None:
        from staredge.exporters.lm_graph import lm_metadata_dict
        from staredge.formats import CHECKPOINT_FORMAT, TEXT_GENERATION
        from staredge.metadata import ArtifactMetadata

        self.graph = graph
        lm = lm_metadata_dict(graph, prefill_chunk)
        super().__init__(None, ArtifactMetadata(model=lm["name"], family="star_lm", format=CHECKPOINT_FORMAT,
                                                task=TEXT_GENERATION, input_name="input_ids", output_names=["logits"],
                                                input_size=[1, 1], input_layout="NT", lm=lm))

    @torch.no_grad()
    def _run(self, ids: np.ndarray, position: int) -> np.ndarray:
        out = self.graph(torch.from_numpy(ids), torch.tensor([position]), *[torch.from_numpy(s) for s in self.state])
        self.state = [t.numpy() for t in out[1:]]
        return out[0].numpy()


def validate_lm(stepper, model, ids: list[int] | None = None, new_tokens: int = GREEDY_TOKENS,
                atol: float = FP32_ATOL, min_greedy: int | None = None) -> dict[str, Any]:
    """Run ``stepper`` (a :class:`~staredge.runtimes.lm.LMStepper`; for an artifact the one
    :func:`~staredge.runtimes.lm.load_lm_artifact` returns, which is what ``Predictor.stream``
    serves) greedily through the one decode loop and compare with ``model``; returns the
    numbers (``stepper``: its class, ``threads``: the engine's threads in effect) and ``passed``.

    Passing needs max |Δ| <= ``atol`` over every compared row, at least
    :data:`MIN_DECODE_STEPS` decode steps (or all the context leaves after the prompt), and
    the first ``min_greedy`` greedy tokens (default:
    all) identical to PyTorch's. Rows after the first differing token are not compared (the
    inputs differ from there on).
    """
    if ids is None:
        # the shipped prompt, cut to the model's context (validation fits the model):
        # validation_budget() splits a small context between prompt and decode steps
        ids = prompt_ids(validation_prompt()[:validation_budget(stepper.max_context)[0]])
    else:
        ids = list(ids)
    new_tokens = min(int(new_tokens), stepper.max_context - len(ids) + 1)
    needed = min(MIN_DECODE_STEPS, stepper.max_context - len(ids))  # all the context leaves, up to 64
    if needed < 1 or new_tokens - 1 < needed:
        raise ConfigError(f"max_context {stepper.max_context} leaves {new_tokens - 1} decode steps after a "
                          f"{len(ids)}-token prompt; validation needs {max(needed, 1)}: give a shorter prompt or "
                          f"more new tokens")
    start = time.perf_counter()
    ref_tokens, ref_logits = reference(model, ids, new_tokens)
    record: list[np.ndarray] = []
    tokens = stepper.greedy(ids, new_tokens, record=record)
    got = np.stack(record)
    agree = 0
    while agree < new_tokens and tokens[agree] == ref_tokens[agree]:
        agree += 1
    rows = len(ids) + min(agree, new_tokens - 1)  # rows whose inputs are identical
    diff = float(np.abs(got[:rows] - ref_logits[:rows]).max())
    need = new_tokens if min_greedy is None else min(int(min_greedy), new_tokens)
    return {
        "prompt_tokens": len(ids),
        "prefill_chunk": stepper.prefill_chunk,
        "decode_steps": new_tokens - 1,
        "greedy_tokens": new_tokens,
        "greedy_agree": agree,
        "greedy_identical": agree == new_tokens,
        "max_abs_diff": diff,
        "atol": atol,
        "rows_compared": rows,
        "reference_consistent": bool((ref_logits[len(ids) - 1:].argmax(-1) == np.array(ref_tokens)).all()),
        "passed": bool(diff <= atol and agree >= need and new_tokens - 1 >= needed),
        "validate_s": round(time.perf_counter() - start, 3),
        "stepper": type(stepper).__name__,
        "threads": engine.threads_in_effect() if (engine := getattr(stepper, "engine", None)) is not None else None,
    }


__all__ = ["MIN_CONTEXT", "MIN_DECODE_STEPS", "MIN_PROMPT_BYTES", "FP16_STATE_ATOL", "FP16_MIN_GREEDY", "validate_lm", "validation_budget", "GraphStepper", "validation_prompt", "prompt_ids", "reference", "FP32_ATOL", "GREEDY_TOKENS"]
