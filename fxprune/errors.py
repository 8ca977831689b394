"""One exception family. Every message names the config key, layer or node, and the fix."""

from __future__ import annotations

import torch.fx

__all__ = [
    "FxPruneError",
    "ConfigError",
    "TraceError",
    "InputError",
    "UnsupportedError",
    "VerifyError",
    "ExportError",
    "FormatError",
    "RuleError",
    "NotHandled",
    "node_context",
]


class FxPruneError(Exception):
    """Base class of every error fxprune raises on purpose."""


class ConfigError(FxPruneError, ValueError):
    """The config (or NNI config_list) is malformed or selects nothing."""


class TraceError(FxPruneError):
    """The model could not be turned into an fx graph."""


class InputError(FxPruneError, ValueError):
    """The example inputs do not fit the model (shape, dtype, device, count)."""


class UnsupportedError(FxPruneError):
    """The user asked to prune something the rules say cannot be pruned."""


class VerifyError(FxPruneError):
    """The pruned model does not compute what the masked model computes."""


class ExportError(FxPruneError):
    """ONNX export, checking or onnxruntime parity failed."""


class FormatError(FxPruneError, ValueError):
    """A saved fxprune file cannot be written (unsavable model) or read (truncated, foreign, wrong version)."""


class RuleError(FxPruneError, ValueError):
    """A rule of the table is wrong: its hook raised on a node (a bug in the rule, not a use it declines), or
    a registration would silently replace an existing row."""


class NotHandled(FxPruneError):
    """Raised by a rule's `couple` hook for a use of its op it cannot describe (a 1-D matmul, a slice whose
    bounds are computed at run time, ...): the node becomes a barrier, named in the compile's one warning.
    Not an error the user sees: fxprune catches it."""


def node_context(node: torch.fx.Node) -> str:
    """`node.format_node()` plus the user's source line the trace recorded, if any."""
    text = node.format_node()
    trace = node.meta.get("stack_trace")
    if trace:
        lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
        # The last two lines of an fx stack trace are 'File "...", line N, in f' and the code.
        text += "\n    from " + " | ".join(lines[-2:])
    return text
