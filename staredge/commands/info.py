"""``staredge info ARTIFACT``: what an exported file is, without running it.

Format, task, precision, the graph's inputs and outputs (read by its runtime when that is
installed here), a language model's decode state, the embedded StarEdge metadata, the size
on disk and a SHA-256 per file. ``--json`` prints (or writes) the same as one document.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

from staredge.commands import _args
from staredge.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``info`` subcommand."""
    p = sub.add_parser(
        "info", help="describe an exported artifact: format, task, inputs/outputs, precision, metadata, size, hashes",
        description="Describe an exported artifact (any format, image or language model) without running it: "
                    "format, task, precision, inputs and outputs, decode state, the StarEdge metadata, "
                    "the size on disk and the SHA-256 of each file.")
    p.add_argument("artifact", metavar="ARTIFACT",
                   help=".onnx, OpenVINO .xml (or its folder), .tflite, .mlpackage, or a .safetensors checkpoint")
    p.add_argument("--no-load", action="store_true",
                   help="do not open the artifact with its runtime (no inputs/outputs; metadata and hashes only)")
    _args.add_json(p, "the description", force=True)
    p.set_defaults(func=run)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe_artifact(path: str, load: bool = True) -> dict[str, Any]:
    """The description ``staredge info`` prints, as a dict (see the module docstring)."""
    from staredge.formats import CHECKPOINT_FORMAT, detect_format
    from staredge.metadata import MetadataError, read_metadata

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{path}: no such file or folder; give an exported artifact (see `staredge export`)")
    spec = detect_format(p)
    files = spec.artifact_files(p)
    doc: dict[str, Any] = {
        "path": str(p), "format": spec.name, "runtime": getattr(spec, "runtime", None),
        "size_bytes": sum(f.stat().st_size for f in files),
        "files": [{"path": str(f.relative_to(p) if p.is_dir() else f.name), "size_bytes": f.stat().st_size,
                   "sha256": _sha256(f)} for f in files],
    }
    try:
        meta = read_metadata(p, spec.name)
    except MetadataError as exc:
        doc.update(metadata=None, metadata_error=str(exc), task=None, precision=None)
    else:
        full = meta.to_dict()
        doc.update(model=meta.model, task=meta.task, precision=meta.precision, metadata=full)
        lm = full.get("lm") or {}
        tok = lm.get("tokenizer") if isinstance(lm, dict) else None
        if isinstance(tok, dict) and isinstance(tok.get("json"), str):
            # the embedded tokenizer.json (MBs for a 65k vocabulary): its size and hash, not its text
            lm["tokenizer"] = {**{k: v for k, v in tok.items() if k != "json"}, "json_bytes": len(tok["json"].encode("utf-8"))}
        if lm:
            doc["state"] = lm.get("state")
            doc["max_context"] = lm.get("max_context")
    doc["inputs"] = doc["outputs"] = None
    if load and spec.name != CHECKPOINT_FORMAT:
        doc.update(_graph_io(p))
    return doc


def _graph_io(path: Path) -> dict[str, Any]:
    """Inputs and outputs as the runtime reads them, or why they could not be read."""
    from staredge.errors import StarEdgeError
    from staredge.runtimes import load_backend

    try:
        backend = load_backend(path, device="cpu", threads=1)
    except StarEdgeError as exc:
        return {"io_error": str(exc)}
    try:
        def infos(name: str):
            for owner in (backend, getattr(backend, "engine", None)):
                fn = getattr(owner, name, None)
                if callable(fn):
                    got = fn()
                    if got:
                        return [{"name": t[0], "shape": None if t[1] is None else list(t[1]), "dtype": t[2]}
                                for t in got]
            return None

        return {"inputs": infos("inputs"), "outputs": infos("outputs"), "runtime": backend.name}
    finally:
        backend.close()


def run(args: argparse.Namespace) -> int:
    """Print the description (a table, or JSON)."""
    _args.check_json_target(args)
    doc = describe_artifact(args.artifact, load=not args.no_load)
    if _args.emit_json(args, doc):
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"staredge info: {doc['path']}", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    shape = lambda s: "?" if s is None else "[" + ", ".join("?" if d is None else str(d) for d in s) + "]"  # noqa: E731
    rows = [("format", doc["format"]), ("runtime", str(doc.get("runtime"))), ("model", str(doc.get("model", "—"))),
            ("task", str(doc.get("task"))), ("precision", str(doc.get("precision"))),
            ("size", f"{doc['size_bytes']:,} B in {len(doc['files'])} file(s)")]
    for kind in ("inputs", "outputs"):
        if doc.get(kind):
            rows.append((kind, "\n".join(f"{t['name']} {shape(t['shape'])} {t['dtype']}" for t in doc[kind])))
    if doc.get("io_error"):
        rows.append(("inputs/outputs", f"not read: {doc['io_error']}"))
    if doc.get("state"):
        rows.append(("decode state", "\n".join(f"{s.get('name')} {shape(s.get('shape'))} {s.get('dtype')}"
                                               for s in doc["state"])))
        rows.append(("max context", str(doc.get("max_context"))))
    meta = doc.get("metadata")
    if meta is None:
        rows.append(("metadata", doc.get("metadata_error", "none")))
    else:
        for key in ("labels", "input_size", "rewrites", "dynamic_batch"):
            value = meta.get(key)
            if key == "labels" and value:
                value = f"{len(value)} classes: {', '.join(map(str, value[:5]))}{', ...' if len(value) > 5 else ''}"
            if value not in (None, [], {}):
                rows.append((key, str(value)))
    for f in doc["files"]:
        rows.append((f"sha256 {f['path']}", f["sha256"]))
    for k, v in rows:
        table.add_row(k, v)
    Console(width=max(120, Console().width)).print(table)
    return 0
