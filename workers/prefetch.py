"""Acting on the planner's prefetch hint: read the next model's weights into host RAM (the page
cache) while the current model still runs, so the swap reads memory instead of the disk.

The hint arrives on the worker's row (``Worker.prefetch_model``, set by dispatch); the heartbeat
thread passes it here. Only local model directories are warmed; a hub id has nothing to read.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from scheduler import Settings

log = logging.getLogger(__name__)


def warm_page_cache(model_dir: Path) -> int:
    """Ask the kernel to read every safetensors file of ``model_dir`` ahead (readahead in the
    background; nothing is copied into this process). Returns the bytes asked for."""
    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            os.posix_fadvise(fd, 0, size, os.POSIX_FADV_WILLNEED)
            total += size
        finally:
            os.close(fd)
    return total


class Prefetcher:
    """Warms each hinted model once (until the hint changes)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.warmed: str | None = None

    def hint(self, model: str | None) -> None:
        if model is None or model == self.warmed:
            return
        spec = self.settings.models.get(model)
        source = Path(spec.source).expanduser() if spec else None
        if source is None or not source.is_dir():
            return
        self.warmed = model
        size = warm_page_cache(source)
        log.info("prefetching %s: %.2f GB of weights into the page cache", model, size / 1e9)
