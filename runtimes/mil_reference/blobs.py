"""Weights stored outside the model spec: the MIL blob storage file (``weights/weight.bin``)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from staredge.runtimes.mil_reference.errors import MILProgramError, UnsupportedOpError


#: MIL blob storage data types (``BlobDataType`` in the storage format) → numpy dtypes.
_BLOB_DTYPES: dict[int, Any] = {
    1: np.float16,
    2: np.float32,
    3: np.uint8,
    4: np.int8,
    5: "bfloat16",
    6: np.int16,
    7: np.uint16,
    14: np.int32,
    15: np.uint32,
}
_BLOB_SENTINEL = 0xDEADBEEF


class BlobFile:
    """Reader of a MIL blob storage file (``weights/weight.bin``).

    Layout (little-endian): a 64-byte file header (``uint32`` blob count, ``uint32``
    format version, padding), then per blob a 64-byte metadata record (``uint32`` sentinel
    0xDEADBEEF, ``uint32`` data type, ``uint64`` size in bytes, ``uint64`` absolute offset
    of the data, reserved bytes) followed by the data, each aligned to 64 bytes. A const's
    ``blobFileValue.offset`` points at its metadata record; its shape comes from the
    const's declared type.
    """

    def __init__(self, path: str | Path, threads: int | None = 1) -> None:
        self.path = Path(path)
        #: BLAS threads while predicting (None: numpy's default). One thread is the default
        #: because the executor's GEMMs are small: on a busy machine multi-threaded OpenBLAS
        #: spends most of its time waiting (measured 30x slower on a loaded 2-core box).
        self.threads = threads
        try:
            self._data = self.path.read_bytes()
        except OSError as exc:
            raise MILProgramError(f"cannot read the weight file {self.path} ({exc}); re-export the model") from exc
        if len(self._data) < 64:
            raise MILProgramError(f"{self.path} is too short to be a MIL weight file")
        self.count, self.version = struct.unpack_from("<II", self._data, 0)
        if self.version != 2:
            raise MILProgramError(f"{self.path}: MIL blob storage version {self.version} is not supported (expected 2)")

    def read(self, offset: int, shape: tuple[int, ...], expected: Any | None = None) -> np.ndarray:
        """The array whose metadata record starts at ``offset``, reshaped to ``shape``."""
        if offset < 64 or offset + 64 > len(self._data):
            raise MILProgramError(f"{self.path}: blob offset {offset} is outside the file")
        sentinel, dtype_code, size, data_offset = struct.unpack_from("<IIQQ", self._data, offset)
        if sentinel != _BLOB_SENTINEL:
            raise MILProgramError(f"{self.path}: no blob record at offset {offset} (bad sentinel); the file is damaged")
        dtype = _BLOB_DTYPES.get(dtype_code)
        if dtype is None:
            raise UnsupportedOpError(
                f"{self.path}: blob data type code {dtype_code} (sub-byte or 8-bit float palettes/quantised "
                f"weights) is not supported by the reference executor"
            )
        if data_offset + size > len(self._data):
            raise MILProgramError(f"{self.path}: blob at {offset} runs past the end of the file; the file is truncated")
        raw = self._data[data_offset : data_offset + size]
        if dtype == "bfloat16":
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=dtype)
        count = int(np.prod(shape)) if shape else 1
        if arr.size != count:
            raise MILProgramError(
                f"{self.path}: blob at {offset} holds {arr.size} values but its const declares shape {shape}"
            )
        if expected is not None and arr.dtype != np.dtype(expected):
            arr = arr.astype(expected)
        return arr.reshape(shape).copy()
