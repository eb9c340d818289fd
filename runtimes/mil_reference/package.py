"""Reading an ``.mlpackage``: its ``Manifest.json`` and the root model spec (a
``CoreML.Specification.Model`` protobuf, parsed with the message classes that ship with
coremltools, loaded without importing the rest of coremltools)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

from staredge.errors import MissingDependencyError
from staredge.runtimes.mil_reference.errors import MILProgramError


def proto_modules():
    """(Model_pb2, MIL_pb2) from coremltools' generated protobuf code.

    Importing ``coremltools`` itself takes tens of seconds (it imports torch and its
    converters); the generated ``*_pb2`` modules need none of that, so they are loaded as
    a private package straight from coremltools' ``proto`` folder. If coremltools is
    already imported, its own modules are reused.
    """
    if "coremltools.proto.Model_pb2" in sys.modules:
        return sys.modules["coremltools.proto.Model_pb2"], sys.modules["coremltools.proto.MIL_pb2"]
    private = "_staredge_coremltools_proto"
    if private not in sys.modules:
        spec = importlib.util.find_spec("coremltools")
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependencyError(
                "reading a CoreML .mlpackage needs the Python package 'coremltools', which is not "
                "installed. Install it with: pip install -c constraints.txt 'staredge[coreml]'"
            )
        proto_dir = Path(list(spec.submodule_search_locations)[0]) / "proto"
        pkg_spec = importlib.util.spec_from_file_location(
            private, proto_dir / "__init__.py", submodule_search_locations=[str(proto_dir)]
        )
        package = importlib.util.module_from_spec(pkg_spec)
        sys.modules[private] = package
        try:
            pkg_spec.loader.exec_module(package)
        except Exception:
            del sys.modules[private]
            raise
    return importlib.import_module(private + ".Model_pb2"), importlib.import_module(private + ".MIL_pb2")


def model_spec_path(package: str | Path) -> Path:
    """The root model spec file inside an ``.mlpackage`` (as named by its ``Manifest.json``)."""
    pkg = Path(package)
    manifest_path = pkg / "Manifest.json"
    if not manifest_path.is_file():
        raise MILProgramError(f"{pkg} is not an .mlpackage: it has no Manifest.json")
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
        root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
        spec_path = pkg / "Data" / root["path"]
    except (ValueError, KeyError, TypeError) as exc:
        raise MILProgramError(f"{manifest_path} is damaged ({exc}); re-export the model") from exc
    if not spec_path.is_file():
        raise MILProgramError(f"{pkg}: the model spec {spec_path} named by Manifest.json is missing; re-export it")
    return spec_path


def load_model_spec(package: str | Path):
    """The ``CoreML.Specification.Model`` protobuf of an ``.mlpackage``."""
    model_pb2, _ = proto_modules()
    spec_path = model_spec_path(package)
    spec = model_pb2.Model()
    try:
        spec.ParseFromString(spec_path.read_bytes())
    except Exception as exc:  # protobuf raises its own DecodeError
        raise MILProgramError(f"{spec_path} is not a readable CoreML model spec ({exc}); re-export it") from exc
    return spec
