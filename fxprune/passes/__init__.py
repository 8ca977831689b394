"""The passes of the pipeline, one per file: trace, mask, speedup, verify, export."""

from .mask import insert_masks
from .speedup import speedup_pass
from .trace import trace
from .verify import verify

__all__ = ["trace", "insert_masks", "speedup_pass", "verify"]
