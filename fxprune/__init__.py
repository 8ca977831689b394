"""fxprune: a pruning compiler for PyTorch.

    result = fxprune.compile(model, {"pruner": "l1", "sparsity": 0.5}, torch.randn(1, 3, 224, 224))
    result.model    # physically smaller, verified equal to the masked model
    result.report   # channels, params, MACs before/after
"""

from . import datasets, models, nni, nni_masks, rules, training
from .bench import BenchResult, benchmark
from .compiler import CompileResult, analyze, compile, speedup
from .config import Config, parse_config
from .errors import (
    ConfigError,
    ExportError,
    FormatError,
    FxPruneError,
    InputError,
    RuleError,
    TraceError,
    UnsupportedError,
    VerifyError,
)
from .graph import DependencyGraph
from .masks import Masks
from .passes.export import ExportResult, export_onnx
from .pruners.iterative import IterateResult, iterate
from .rules import Rule, register_rule
from .serialize import Loaded, SavedMasks, load, save
from .session import Session, prepare
from .version import __version__
from .writeback import apply_to

__all__ = [
    "compile", "prepare", "Session", "speedup", "analyze", "CompileResult", "Config", "parse_config",
    "DependencyGraph", "Masks",
    "Rule", "register_rule", "rules", "FxPruneError", "ConfigError", "TraceError", "InputError",
    "UnsupportedError", "VerifyError", "RuleError", "ExportError", "export_onnx", "ExportResult", "benchmark",
    "BenchResult", "models", "datasets", "training",
    "FormatError", "save", "load", "Loaded", "SavedMasks", "__version__",
    "apply_to", "nni", "nni_masks",
]
__all__ += ["iterate", "IterateResult"]
