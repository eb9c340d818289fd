#!/usr/bin/env python
"""Train the small STAR language model that StarEdge ships, and a Transformer++ baseline.

Data: the English prose of CPython's ``pydoc_data/topics.py`` (the help topics), joined in
sorted-key order as UTF-8 bytes; the last 10 % of the bytes are held out. Both models see
the same batches (one seeded generator), use the same optimiser and schedule, and are
evaluated on the same held-out windows, so their bits per byte compare fairly.

Writes the STAR model to ``staredge/data/star_lm_pydoc.{safetensors,json}`` (the default
model of ``staredge generate``) and every number to ``docs/star-lm-results.json``.

    .venv/bin/python scripts/train_star_lm.py --force   # ~10 min CPU in all (one thread per model,
                                                        # both at once); took 34 min wall on a loaded 2-core box
    .venv/bin/python scripts/train_star_lm.py --steps 5 --out-dir /tmp/x --results /tmp/x/r.json

Reproducible: seeds fix initialisation, batch order and sampling; ``--threads`` fixes the
thread count (floating-point reduction order can still differ between machines).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent

#: The shipped STAR genome, one 5-gene segment per LIV (class, featurizer-sharing group,
#: featurizer strategy, feature-group-sharing group, feature-group strategy); group values
#: are numbered per class. 10 LIVs:
#: GConv-1, SwiGLU, SA-1 (K/V producer), SwiGLU, Rec-1 (N=16), SwiGLU, GConv-1 (uses the
#: first GConv-1's featurizer: group 1, strategy 2), SwiGLU, SA-1 (reuses K and V of the
#: first SA-1: feature group 1, strategy 4, i.e. cross-layer KV sharing, no KV cache of
#: its own), SwiGLU.
STAR_GENOME = "71111-91111-11111-92121-51111-93131-71221-94141-12114-95151"

#: Held-out fraction (the tail of the corpus).
HOLDOUT_FRACTION = 0.10

#: Prompts for the sample generations recorded with the results.
SAMPLE_PROMPTS = ("The ", "A class definition ", "In Python, ", "The return value ")


def load_corpus() -> tuple[bytes, dict]:
    """The pydoc topics prose as UTF-8 bytes, and where it came from."""
    import pydoc_data.topics as topics_mod

    topics = topics_mod.topics
    text = "\n\n".join(topics[k] for k in sorted(topics))
    data = text.encode("utf-8")
    info = {
        "source": "CPython pydoc_data/topics.py (help() topics), values joined with blank lines in sorted-key order",
        "python": platform.python_version(),
        "topics": len(topics),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    return data, info


def split(data: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """Train bytes (first 90 %) and held-out bytes (last 10 %), as int64 tensors."""
    cut = int(len(data) * (1 - HOLDOUT_FRACTION))
    arr = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    return arr[:cut], arr[cut:]


def with_bos(windows: torch.Tensor, bos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (BOS, then all but the last byte) and targets (the bytes) of [B, T] windows.

    Every window starts after a BOS, the way generation starts, so the model learns to
    continue text that begins mid-stream.
    """
    bos = torch.full((windows.shape[0], 1), bos_id, dtype=torch.long)
    return torch.cat([bos, windows[:, :-1]], dim=1), windows


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def held_out_bits_per_byte(model, held: torch.Tensor, seq_len: int, batch: int, bos_id: int) -> float:
    """Mean cross-entropy in bits over every held-out byte (non-overlapping windows)."""
    model.eval()
    n = (len(held) // seq_len) * seq_len
    windows = held[:n].view(-1, seq_len)
    total_nats, total = 0.0, 0
    for i in range(0, len(windows), batch):
        x, y = with_bos(windows[i:i + batch], bos_id)
        logits = model(x)
        total_nats += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
        total += y.numel()
    model.train()
    return total_nats / total / math.log(2)


def build_model(kind: str, args):
    """A fresh STARLanguageModel: the shipped STAR genome or Transformer++ of the same depth."""
    from staredge.models.star import STARLanguageModel, transformer_pp

    genome = STAR_GENOME if kind == "star" else transformer_pp(args.dim, args.n_liv)
    depth = args.n_liv
    return STARLanguageModel(dim=args.dim, depth=depth, genome=genome, max_seq_len=args.max_seq_len)


def analyse(model, args) -> dict:
    """Parameters (without embeddings) and decode-cache bytes, from the core analysis code."""
    from staredge.models.star.analysis import analyze_genome

    out = {"params_total": sum(p.numel() for p in model.parameters())}
    for length in (args.seq_len, args.max_seq_len):
        rep = analyze_genome(model.genome, dim=args.dim, seq_len=length)
        out["params_excluding_embeddings"] = rep.total_params
        out[f"cache_bytes_at_{length}"] = rep.total_cache_bytes
    return out


def train_one(kind: str, args, train: torch.Tensor, held: torch.Tensor, log) -> tuple[object, dict]:
    """Train one model with the shared recipe; return it and its results."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from staredge.generation import BOS_ID

    torch.manual_seed(args.seed)
    model = build_model(kind, args)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    batches = torch.Generator().manual_seed(args.seed + 1)  # same batch order for both models
    warmup = max(1, int(0.05 * args.steps))
    losses = []
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    with Progress(TextColumn(f"training {kind}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
                  TimeRemainingColumn(), disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("", total=args.steps, loss="")
        for step in range(args.steps):
            starts = torch.randint(0, len(train) - args.seq_len, (args.batch,), generator=batches)
            windows = torch.stack([train[s:s + args.seq_len] for s in starts.tolist()])
            x, y = with_bos(windows, BOS_ID)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, args.steps, args.lr, warmup)
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            bar.update(task, advance=1, loss=f"{loss.item() / math.log(2):.3f} bits/byte")
            if step % args.log_every == 0 or step == args.steps - 1:
                recent = sum(losses[-args.log_every:]) / len(losses[-args.log_every:])
                log(f"{kind} step {step + 1}/{args.steps} train {recent / math.log(2):.3f} bits/byte "
                    f"({time.perf_counter() - t0:.0f} s)")
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    model.eval()
    bpb = held_out_bits_per_byte(model, held, args.seq_len, 32, BOS_ID)
    tail = losses[-max(1, args.steps // 10):]
    res = {
        "genome": str(model.genome),
        "held_out_bits_per_byte": round(bpb, 4),
        "final_train_bits_per_byte": round(sum(tail) / len(tail) / math.log(2), 4),
        "train_wall_s": round(wall, 1),
        "train_cpu_s": round(cpu, 1),
        **analyse(model, args),
    }
    log(f"{kind}: held-out {bpb:.4f} bits/byte, {res['params_excluding_embeddings']:,} params (no embeddings), "
        f"{wall:.0f} s wall / {cpu:.0f} s CPU")
    return model, res


def train_worker(kind: str, args) -> tuple[dict, dict]:
    """Train one model in a worker process (one intra-op thread); return its results and weights.

    Each model gets its own process so that two single-threaded trainings share the two
    cores; a 2-thread OpenMP pool on an oversubscribed machine mostly spins.
    """
    torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    data, _ = load_corpus()
    train, held = split(data)
    model, res = train_one(kind, args, train, held, log)
    res["samples"] = samples(model, args)
    log(f"{kind}: samples done")
    return res, {k: v.detach().clone() for k, v in model.state_dict().items()}


def samples(model, args) -> list[dict]:
    """A few seeded generations from ``model`` (recorded in the results and the docs)."""
    from staredge.generation import generate

    out = []
    for i, prompt in enumerate(SAMPLE_PROMPTS):
        text = generate(model, prompt, max_new_tokens=160, temperature=0.7, top_p=0.95, seed=args.seed + i)
        out.append({"prompt": prompt, "temperature": 0.7, "top_p": 0.95, "seed": args.seed + i,
                    "max_new_tokens": 160, "text": text})
    return out


def atomic_write_json(path: Path, doc: dict, force: bool) -> None:
    """Write ``doc`` to ``path`` atomically; refuse to replace an existing file unless ``force``."""
    if path.exists() and not force:
        raise SystemExit(f"{path} exists; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Train both models, save the STAR one, write the results JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--n-liv", type=int, default=10, help="LIVs per model (the STAR genome has 10)")
    p.add_argument("--seq-len", type=int, default=256, help="training and evaluation window (bytes)")
    p.add_argument("--max-seq-len", type=int, default=1024, help="context of the saved model")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per model")
    p.add_argument("--jobs", type=int, default=2, help="models trained at once, one process each")
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--only", choices=["star", "transformer_pp"], default=None, help="train one model only")
    p.add_argument("--out-dir", type=Path, default=REPO / "staredge" / "data")
    p.add_argument("--name", default="star_lm_pydoc")
    p.add_argument("--results", type=Path, default=REPO / "docs" / "star-lm-results.json")
    p.add_argument("--force", action="store_true", help="replace existing weights and results")
    args = p.parse_args(argv)

    from staredge.generation import save_lm


    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    data, corpus = load_corpus()
    train, held = split(data)
    corpus.update(train_bytes=len(train), held_out_bytes=len(held), held_out="last 10% of the bytes")
    log(f"corpus: {corpus['bytes']:,} bytes ({corpus['topics']} topics, Python {corpus['python']}); "
        f"train {len(train):,}, held-out {len(held):,}")
    load_start = os.getloadavg()
    results = {
        "corpus": corpus,
        "recipe": {k: v for k, v in vars(args).items() if k not in ("out_dir", "results", "force", "only", "jobs")},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "threads": args.threads,
                    "load_average_at_start": [round(x, 2) for x in load_start]},
        "models": {},
    }
    kinds = [args.only] if args.only else ["star", "transformer_pp"]
    if args.jobs > 1 and len(kinds) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {kind: pool.submit(train_worker, kind, args) for kind in kinds}
            outcomes = {kind: f.result() for kind, f in futures.items()}
    else:
        outcomes = {kind: train_worker(kind, args) for kind in kinds}
    for kind in kinds:
        res, state = outcomes[kind]
        results["models"][kind] = res
        if kind == "star":
            model = build_model(kind, args)
            model.load_state_dict(state)
            info = {"trained_on": corpus["source"], "held_out_bits_per_byte": res["held_out_bits_per_byte"],
                    "recipe": results["recipe"], "script": "scripts/train_star_lm.py"}
            weights, config = save_lm(model, args.out_dir / args.name, info=info, force=args.force)
            res["weights_file"] = str(weights.relative_to(REPO)) if weights.is_relative_to(REPO) else str(weights)
            res["weights_bytes"] = weights.stat().st_size
            log(f"saved {weights} ({weights.stat().st_size / 1e6:.2f} MB) and {config}")
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.only and args.results.exists():
        # one model retrained: keep the other model's entry from the earlier run
        earlier = json.loads(args.results.read_text(encoding="utf-8"))
        results["models"] = {**earlier.get("models", {}), **results["models"]}
        if args.only != "star" and "streaming_bench" in earlier:
            results["streaming_bench"] = earlier["streaming_bench"]
    atomic_write_json(args.results, results, args.force)
    log(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
