"""The converters' safetensors bytes, the same on every rerun."""

from __future__ import annotations

import json
import struct


def serialize(state: dict, metadata: dict[str, str]) -> bytes:
    """The safetensors file, its header's keys sorted: safetensors writes the metadata in a hash map's
    order, which changes from run to run, and a rerun should give the same bytes, not only the same
    tensors."""
    from safetensors.torch import save

    data = save(state, metadata)
    (length,) = struct.unpack("<Q", data[:8])
    header = json.dumps(json.loads(data[8:8 + length]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the tensors' data stays 8-byte aligned, as safetensors pads it
    return struct.pack("<Q", len(header)) + header + data[8 + length:]
