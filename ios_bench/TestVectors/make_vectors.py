"""Write stats_vectors.json: latency lists and the statistics StarEdge's Python computes.

The Swift tests (Tests/StarEdgeBenchCoreTests/VectorTests.swift) recompute every figure
and must get the same doubles; tests/test_ios_bench.py checks that this file still equals
what ``staredge.bench.stats`` computes. Regenerate after changing the Python definitions:

    .venv/bin/python ios_bench/TestVectors/make_vectors.py
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "stats_vectors.json"


def _latencies(rng: random.Random, n: int, base: float, spread: float, outliers: int, digits: int) -> list[float]:
    """Phone-like latencies: log-normal around ``base`` ms plus a few slow outliers."""
    values = [round(base * math.exp(rng.gauss(0.0, spread)), digits) for _ in range(n)]
    for i in rng.sample(range(n), min(outliers, n)):
        values[i] = round(values[i] * rng.uniform(2.0, 6.0), digits)
    return values


def build_vectors() -> dict:
    """Every vector, computed with staredge.bench.stats (the definitions Swift must match)."""
    from staredge.bench.stats import RunStats, mean, percentile

    rng = random.Random(20261201)
    cases: list[tuple[str, list[float], float | None, tuple[int, int] | None, int]] = [
        ("single value", [0.7], 3.1, None, 0),
        ("two values", [1.0, 2.0], None, None, 1),
        ("exact ties at the 7th decimal (round half to even)", [0.0078125, 0.0234375, 0.0390625, 0.0546875], 0.0078125, None, 0),
        ("sum needs exact accumulation", [1e8, 1.000000001, 0.001, 3.3333333333, 1e-9, 2.7182818284, 1e8], None, (1, 1), 0),
        ("modelbench round: 50 with outliers, drop 10 + 10",
         _latencies(rng, 50, 0.7, 0.05, 4, 9), 2.9, (10, 10), 1),
        ("ios run: 500 timed", _latencies(rng, 500, 0.71, 0.08, 12, 9), 0.93, None, 50),
        ("constant latencies", [0.5] * 20, 0.5, (5, 5), 1),
    ]
    for k in range(12):
        n = rng.choice([3, 7, 20, 49, 50, 51, 100, 333, 500])
        low = rng.randint(0, max(0, (n - 1) // 3))
        high = rng.randint(0, max(0, n - 1 - low - 1)) if n - 1 - low > 0 else 0
        trim = (low, high) if (low or high) and low + high < n else None
        digits = rng.choice([3, 6, 9, 12])
        cases.append((f"random {k}", _latencies(rng, n, rng.uniform(0.3, 12.0), rng.uniform(0.01, 0.4), rng.randint(0, 5), digits),
                      round(rng.uniform(0.5, 20.0), 6), trim, rng.randint(0, 50)))
    stats = []
    for name, samples, first, trim, warmup in cases:
        run = RunStats.from_samples(samples, first, trim=trim, warmup=warmup)
        stats.append({"name": name, "samples_ms": samples, "first_ms": first, "trim": list(trim) if trim else None,
                      "warmup": warmup, "expected": run.to_dict()})

    percentiles = []
    for samples in ([5.0], [1.0, 2.0], [3.0, 1.0, 2.0], stats[4]["samples_ms"], stats[5]["samples_ms"]):
        for q in (0, 1, 25, 50, 90, 99, 99.9, 100):
            percentiles.append({"samples_ms": samples, "q": q, "expected": percentile(samples, q)})

    rounding = []
    for x in (0.0078125, 0.0234375, 2.5e-7, 1.0000005, 0.1234565, 12.3456785, 1e-7, -0.0000004, 123456.7890125):
        for digits in (3, 5, 6):
            rounding.append({"x": x, "digits": digits, "expected": round(x, digits)})
    for _ in range(200):
        x = rng.uniform(0, 50) * 10 ** rng.randint(-3, 2)
        digits = rng.choice([3, 5, 6])
        rounding.append({"x": x, "digits": digits, "expected": round(x, digits)})

    # The harness's reported figure: last run's statistic, or the mean over runs; round(., 5).
    reported = []
    for statistic, reduce in (("mean", "last"), ("trimmed_mean", "mean"), ("median", "mean"), ("p90", "last")):
        runs = [RunStats.from_samples(_latencies(rng, 50, 0.8, 0.1, 3, 9), 1.0, trim=(10, 10)) for _ in range(20)]
        values = [r.statistic(statistic) for r in runs]
        figure = values[-1] if reduce == "last" else mean(values)
        reported.append({"statistic": statistic, "reduce": reduce, "runs": [r.to_dict() for r in runs],
                         "expected": round(figure, 5)})

    reprs = [{"x": x, "text": repr(x)} for x in (
        0.71, 3.0, 100.0, 1e16, 9999999999999998.0, 1e-5, 0.0001, 0.00012345, 2.5e-7, 123456789.123, 1e22,
        0.1 + 0.2, -0.0, -1.5, 5e-324, 1.7976931348623157e308, 4.35, 0.000999999, 1234.5678e-12,
    )]
    reprs += [{"x": v, "text": repr(v)} for v in stats[5]["samples_ms"][:40]]
    return {
        "about": "Latency lists and the statistics staredge.bench.stats computes for them (make_vectors.py).",
        "stats": stats,
        "percentiles": percentiles,
        "round": rounding,
        "reported": reported,
        "repr": reprs,
    }


def render(vectors: dict) -> str:
    """The file's text (one JSON document, stable layout)."""
    return json.dumps(vectors, indent=1) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1]))
    OUTPUT.write_text(render(build_vectors()), encoding="utf-8")
    print(f"wrote {OUTPUT}")
