"""fxprune: a pruning compiler for PyTorch.

    result = fxprune.compile(model, {"pruner": "l1", "sparsity": 0.5}, torch.randn(1, 3, 224, 224))
    result.model    # physically smaller, verified equal to the masked model
    result.report   # channels, params, MACs before/after
"""

from . import models, rules
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
from .io import Loaded, SavedMasks, load, save
from .masks import Masks
from .passes.export import ExportResult, export_onnx
from .rules import Rule, register_rule

__all__ = [
    "compile", "speedup", "analyze", "CompileResult", "Config", "parse_config", "DependencyGraph", "Masks",
    "Rule", "register_rule", "rules", "FxPruneError", "ConfigError", "TraceError", "InputError",
    "UnsupportedError", "VerifyError", "RuleError", "ExportError", "export_onnx", "ExportResult", "benchmark",
    "BenchResult",
    "models",
    "FormatError", "save", "load", "Loaded", "SavedMasks",
]
__version__ = "0.1.0"
