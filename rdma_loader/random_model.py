"""A model directory of random F32 tensors, written with the standard library alone.

For benchmarks and the Soft-RoCE VM (no torch there): real safetensors files of any size, with
tensors of 16 to 96 MiB like a mid-size model's layers, and a config.json. It is not a model
vLLM can run (``workers.tiny_model`` makes those); it is bytes with a valid manifest.
"""

from __future__ import annotations

import json
import os
import random
import struct
from pathlib import Path

MIB = 1 << 20


def write_random_model(target: Path, total_bytes: int, files: int = 2, seed: int = 0) -> Path:
    """Write (once; an existing complete directory is reused) and return ``target``."""
    target = Path(target)
    if (target / "config.json").is_file():
        return target
    rng = random.Random(seed)
    sizes = []
    while sum(sizes) < total_bytes:
        sizes.append(min(rng.randrange(16, 97) * MIB, total_bytes - sum(sizes)) // 4 * 4 or 4)
    staging = target.with_name(f".{target.name}.partial")
    staging.mkdir(parents=True, exist_ok=True)
    per_file = -(-len(sizes) // files)
    for f in range(files):
        chunk = sizes[f * per_file:(f + 1) * per_file]
        if chunk:
            _write_file(staging / f"model-{f + 1:05d}-of-{files:05d}.safetensors", f, chunk)
    (staging / "config.json").write_text(json.dumps({"model_type": "random", "total_bytes": total_bytes,
                                                     "seed": seed}))
    os.rename(staging, target)
    return target


def _write_file(path: Path, file_index: int, sizes: list[int]) -> None:
    header, cursor = {"__metadata__": {"format": "pt"}}, 0
    for t, size in enumerate(sizes):
        header[f"layers.{file_index}.{t}.weight"] = {"dtype": "F32", "shape": [size // 4],
                                                     "data_offsets": [cursor, cursor + size]}
        cursor += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        for size in sizes:
            fh.write(os.urandom(size))
