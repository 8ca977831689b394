"""NNI v1 forms of the one-shot weight pruners: Level, L1Filter, L2Filter, FPGM (the v1 seed, v1.7-v2.2 signatures).

    from fxprune.pruners.v1 import L1FilterPruner     # instead of `from nni.compression.torch import L1FilterPruner`
    pruner = L1FilterPruner(model, [{"sparsity": 0.8, "op_types": ["Conv2d"]}])
    model = pruner.compress()                         # v1: the model itself, masked in place
    pruner.export_model("model.pth", "mask.pth")      # state_dict with the masks applied, and the masks

v1 semantics: `compress()` masks the model you passed in place and returns it (v1 wrapped its modules; fxprune
masks them with a parametrization, `weight = original * mask`); without `dependency_aware=True` each layer is
masked from its own weights (no tracing, no `dummy_input`); `dependency_aware=True` needs `dummy_input`, as in v1.
`optimizer` is accepted and not needed (the masks are fixed at `compress()`; v1 patched `optimizer.step()` to
re-apply them, fxprune's masking holds through training). Prune physically afterwards with
`fxprune.speedup(model, pruner.get_masks(), x)` or `fxprune.nni.ModelSpeedup`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ...errors import InputError
from .. import oneshot

__all__ = ["LevelPruner", "L1FilterPruner", "L2FilterPruner", "FPGMPruner"]


class LevelPruner(oneshot.LevelPruner):
    """v1 LevelPruner(model, config_list, optimizer=None): the smallest |w| of each selected layer, in place."""

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], optimizer: Any = None) -> None:
        super().__init__(model, config_list)
        self.optimizer = optimizer

    def compress(self) -> nn.Module:  # type: ignore[override]
        """Mask the model in place and return it (v1)."""
        return super().compress()[0]


class _V1Filter:
    """v1 filter pruners: `(model, config_list, optimizer=None, dependency_aware=False, dummy_input=None)`."""

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], optimizer: Any = None,
                 dependency_aware: bool = False, dummy_input: Any = None) -> None:
        if dependency_aware and dummy_input is None:
            raise InputError(f"{type(self).__name__}(dependency_aware=True) traces the model to find the layers "
                             "coupled to each filter: pass dummy_input=torch.randn(1, 3, 32, 32) (the shape your "
                             "model takes), as in NNI v1")
        # v1 reads dummy_input only in dependency-aware mode
        mode = "dependency_aware" if dependency_aware else "normal"
        super().__init__(model, config_list, mode=mode,  # type: ignore[call-arg]
                         dummy_input=dummy_input if dependency_aware else None)
        self.optimizer = optimizer
        self.dependency_aware = dependency_aware

    def compress(self) -> nn.Module:
        """Mask the model in place and return it (v1)."""
        return super().compress()[0]  # type: ignore[misc]


class L1FilterPruner(_V1Filter, oneshot.L1NormPruner):
    """v1: remove the filters with the smallest L1 norm ("Pruning Filters for Efficient ConvNets")."""


class L2FilterPruner(_V1Filter, oneshot.L2NormPruner):
    """v1: remove the filters with the smallest L2 norm."""


class FPGMPruner(_V1Filter, oneshot.FPGMPruner):
    """v1: remove the filters closest to the geometric median of their layer's filters."""
