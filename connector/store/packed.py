"""Columns packed into one blob: the store's columnar copies of metric values and scores.

A blob is NumPy's `.npz` (read without pickle). Number columns are kept as
they are; a text column (an object array of str / None) is kept as one code
per row into its distinct texts, which are one JSON array (any text, NUL
included, comes back exactly), with -1 for None.
"""

from __future__ import annotations

import io

import numpy as np
import orjson

_TEXTS = ":texts"  # suffix of the member that holds a text column's distinct texts


def pack(columns: dict[str, np.ndarray]) -> bytes:
    """One blob of equally long columns: numbers as they are, object arrays as coded texts."""
    members: dict[str, np.ndarray] = {}
    for name, values in columns.items():
        if values.dtype == object:
            members[name], members[name + _TEXTS] = _coded(values)
        else:
            members[name] = values
    buffer = io.BytesIO()
    np.savez(buffer, **members)
    return buffer.getvalue()


def unpack(blob: bytes) -> dict[str, np.ndarray]:
    """The columns `pack` was given, text columns as object arrays again."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as members:
        files = set(members.files)
        out: dict[str, np.ndarray] = {}
        for name in files:
            if name.endswith(_TEXTS):
                continue
            values = members[name]
            if name + _TEXTS in files:
                table = np.array([*orjson.loads(members[name + _TEXTS].tobytes()), None], dtype=object)
                values = table[values]  # code -1 is the table's last entry: None
            out[name] = values
    return out


def _coded(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    items = values.tolist()
    index: dict[object, int] = {}
    for item in dict.fromkeys(items):
        if item is not None:
            if not isinstance(item, str):
                raise TypeError(f"a text column holds {type(item).__name__} {item!r}")
            index[item] = len(index)
    index[None] = -1
    width = np.int8 if len(index) < 127 else np.int16 if len(index) < 32_767 else np.int32
    codes = np.fromiter(map(index.__getitem__, items), width, len(items))
    texts = [t for t in index if t is not None]
    return codes, np.frombuffer(orjson.dumps(texts), dtype=np.uint8)
