"""NNI v1's AutoCompressPruner (`nni.compression.torch`, v1.7-v2.2 signature) on the v2 engine
(`fxprune.pruners.autocompress`).

    pruner = AutoCompressPruner(model, config_list, trainer=trainer, evaluator=evaluator, dummy_input=dummy_input,
                                num_iterations=3, optimize_mode='maximize', base_algo='l1', cool_down_rate=0.9,
                                admm_num_iterations=30, admm_training_epochs=5, experiment_data_dir='./')
    model = pruner.compress()

The trainer is v1 ADMM's `trainer(model, optimizer, criterion, epoch, callback)` (it calls `callback()` between
`loss.backward()` and `optimizer.step()`; the pruner builds Adam(lr=1e-3, weight_decay=5e-5) and
CrossEntropyLoss, as NNI v1). Each round: SA with the v1 arguments (`base_algo`, temperatures,
`optimize_mode`) on the user's config_list (NNI v1 hard-coded op_types Conv2d), ADMM with `row` as rho,
speedup, evaluate. `compress()` returns the pruned model; the user's model is not changed (NNI v1 sped it
up in place: `pruner.result.apply_to(model)` does that). Artefacts go straight to `experiment_data_dir`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import torch

from ...errors import InputError
from ..autocompress import AutoCompressPruner as _AutoCompress
from ..training import TrainLoop
from .training import ADMMPruner

__all__ = ["AutoCompressPruner"]


class AutoCompressPruner(_AutoCompress):
    """NNI v1's AutoCompressPruner; `compress()` returns the pruned model of the last round."""

    def __init__(self, model: torch.nn.Module, config_list: list[dict[str, Any]], trainer: Callable[..., Any],
                 evaluator: Callable[[torch.nn.Module], float], dummy_input: Any, num_iterations: int = 3,
                 optimize_mode: str = "maximize", base_algo: str = "l1", start_temperature: float = 100,
                 stop_temperature: float = 20, cool_down_rate: float = 0.9, perturbation_magnitude: float = 0.35,
                 admm_num_iterations: int = 30, admm_training_epochs: int = 5, row: float = 1e-4,
                 experiment_data_dir: str | os.PathLike[str] = "./", *, target: str = "params", seed: int = 0,
                 executor: Executor | None = None, progress: bool | None = None) -> None:
        if base_algo == "level":
            raise InputError("base_algo='level': AutoCompress here searches channel sparsities and ADMM prunes "
                             "channels; use 'l1', 'l2' or 'fpgm' (for single weights use ADMMPruner alone)")
        sa = {"evaluator": evaluator, "optimize_mode": optimize_mode, "pruning_algorithm": base_algo,
              "start_temperature": start_temperature, "stop_temperature": stop_temperature,
              "cool_down_rate": cool_down_rate, "perturbation_magnitude": perturbation_magnitude, "target": target,
              "seed": seed, "executor": executor}
        admm = {"trainer": trainer, "iterations": admm_num_iterations, "training_epochs": admm_training_epochs,
                "rho": row}
        self._experiment_data_dir = experiment_data_dir
        super().__init__(model, config_list, num_iterations, admm, sa, log_dir=experiment_data_dir, speedup=True,
                         dummy_input=dummy_input, evaluator=evaluator, progress=progress)

    def _admm_setup(self, admm_params: Any) -> tuple[TrainLoop, dict[str, Any]]:
        binder = ADMMPruner(self.model, self.config_list, admm_params["trainer"], admm_params["iterations"],
                            admm_params["training_epochs"], admm_params["rho"], dummy_input=self.dummy_input)
        return binder.loop, {"iterations": binder.iterations, "training_epochs": binder.training_epochs,
                             "granularity": "coarse-grained", "rho": binder.row}

    def _run_directory(self) -> Path | None:
        return Path(self._experiment_data_dir)

    def compress(self) -> torch.nn.Module:  # type: ignore[override]
        """Run every round; returns the pruned model (also `pruner.result.model`)."""
        super().compress()
        assert self.result is not None
        return self.result.model
