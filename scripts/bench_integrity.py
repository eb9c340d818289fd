"""Cost of the load-time weight digest check (staredge.integrity), in ms per MB.

    .venv/bin/python scripts/bench_integrity.py --mb 64 256 --repeats 5

Builds synthetic artifacts of each size whose payload dominates (an ONNX file with one big
initializer, an OpenVINO .xml + .bin pair; TFLite and CoreML payloads are hashed by the same
loop over file ranges as the .bin, after a walk of the flatbuffer's tensor table), times
``staredge.integrity.verify`` (metadata read + payload walk + SHA-256) against the same file
read with no check, and prints one row per format and size: median ms, ms per MB.
Run it on a quiet machine; the numbers go into docs/security.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _onnx(path: Path, mb: int) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = mb * (1 << 20) // 4
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal(n).astype(np.float32), "w")
    node = helper.make_node("Add", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])], initializer=[w])
    onnx.save_model(helper.make_model(graph), str(path))
    return path


def _openvino(folder: Path, mb: int) -> Path:
    import os

    folder.mkdir()
    (folder / "m.bin").write_bytes(os.urandom(mb << 20))
    xml = folder / "m.xml"
    xml.write_text('<?xml version="1.0"?>\n<net name="m" version="11"><layers/><edges/><rt_info/></net>\n')
    return xml


def main() -> None:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from staredge.integrity import seal, verify
    from staredge.metadata import ArtifactMetadata, write_metadata

    with tempfile.TemporaryDirectory() as tmp:
        for mb in args.mb:
            for fmt, build in (("onnx", lambda: _onnx(Path(tmp) / f"m{mb}.onnx", mb)),
                               ("openvino", lambda: _openvino(Path(tmp) / f"ov{mb}", mb))):
                path = build()
                write_metadata(path, ArtifactMetadata(model="m", family="custom", format=fmt), fmt)
                seal(path, fmt)
                times, reads = [], []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    assert verify(path, fmt) is not None
                    times.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    for f in (path, path.with_suffix(".bin")) if fmt == "openvino" else (path,):
                        f.read_bytes()
                    reads.append(time.perf_counter() - t0)
                med, rd = statistics.median(times) * 1e3, statistics.median(reads) * 1e3
                print(f"{fmt:9s} {mb:5d} MB  verify {med:8.1f} ms  ({med / mb:.2f} ms/MB)   plain read {rd:8.1f} ms "
                      f"({rd / mb:.2f} ms/MB)", flush=True)


if __name__ == "__main__":
    main()
