"""Small exported artifacts shared by the CLI and docs tests: exported once per session.

Under pytest-xdist the workers share the session's base temporary folder; the first worker
exports under a file lock, the others reuse the files.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock


def shared_root(tmp_path_factory, worker_id: str) -> Path:
    """The folder every worker of this session shares."""
    base = tmp_path_factory.getbasetemp()
    root = (base if worker_id == "master" else base.parent) / "cli_artifacts"
    root.mkdir(parents=True, exist_ok=True)
    return root


def digits_onnx(tmp_path_factory, worker_id: str) -> Path:
    """The trained digits model exported to ONNX (fp32, validated), about 2 s."""
    root = shared_root(tmp_path_factory, worker_id)
    path = root / "starnet_digits.onnx"
    with FileLock(str(root / "digits_onnx.lock")):
        if not path.is_file():
            from staredge.exporters import export
            from staredge.models.digits import digits_model, digits_weights

            report = export(digits_model(digits_weights()), ["onnx"], root, force=True)
            assert report.passed, report.artifacts[0].error
    return path


def digit_png(tmp_path_factory, worker_id: str) -> Path:
    """A held-out digit (a seven) saved as a PNG photo."""
    root = shared_root(tmp_path_factory, worker_id)
    path = root / "seven.png"
    with FileLock(str(root / "seven.lock")):
        if not path.is_file():
            import numpy as np
            from PIL import Image

            from staredge.models.digits import digits_images, heldout_indices

            images, targets = digits_images()
            i = next(i for i in heldout_indices() if int(targets[i]) == 7)
            Image.fromarray(np.asarray(images[i], np.uint8)).resize((64, 64)).save(path)
    return path
