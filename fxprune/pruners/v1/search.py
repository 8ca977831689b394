"""NNI v1 forms of the search pruners (`nni.compression.torch`, v1.7-v2.2 signatures), on fxprune's engines.

    from fxprune.pruners.v1 import SimulatedAnnealingPruner, NetAdaptPruner, SensitivityPruner, AMCPruner

The v1 forms take no example input: fxprune records the one the evaluator feeds the model (or, for AMC,
the first batch of `val_loader`); pass `dummy_input=` to choose it. `experiment_data_dir` / `output_dir`
receive the search history (`search_history.{json,csv,png}`) and `search_result.json`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ...errors import InputError
from ..amc import AMCPruner as _AMC
from ..search import EvaluatorCall, ModelArg, NetAdaptPruner, SensitivityPruner
from ..search import SimulatedAnnealingPruner as _SA

__all__ = ["SimulatedAnnealingPruner", "NetAdaptPruner", "SensitivityPruner", "AMCPruner"]


class SimulatedAnnealingPruner(_SA):
    """NNI v1's SimulatedAnnealingPruner: `compress(return_config_list=False)` returns the best masked model
    (or its config list) and writes `search_result.json` (performance, config_list)."""

    def __init__(self, model: torch.nn.Module, config_list: list[dict[str, Any]],
                 evaluator: Callable[[torch.nn.Module], float] | None = None, optimize_mode: str = "maximize",
                 base_algo: str = "l1", start_temperature: float = 100, stop_temperature: float = 20,
                 cool_down_rate: float = 0.9, perturbation_magnitude: float = 0.35,
                 experiment_data_dir: str | os.PathLike[str] | None = "./", *, dummy_input: Any = None,
                 target: str = "params", seed: int = 0, max_rejections: int = 50) -> None:
        super().__init__(model, config_list, evaluator, start_temperature, stop_temperature, cool_down_rate,
                         perturbation_magnitude, base_algo, log_dir=experiment_data_dir, dummy_input=dummy_input,
                         target=target, seed=seed, max_rejections=max_rejections, optimize_mode=optimize_mode)

    def compress(self, return_config_list: bool = False) -> Any:  # type: ignore[override]
        """Run the search; the best masked model, or its config list."""
        super().compress()
        _, model, _, score, config_list = self.get_best_result()
        if self.log_dir is not None:
            (self.log_dir / "search_result.json").write_text(
                json.dumps({"performance": score, "config_list": config_list}, indent=2))
        return config_list if return_config_list else model


class AMCPruner(_AMC):
    """NNI v1's AMCPruner (`flops_ratio` = fraction of FLOPs KEPT), mapped onto the v2 engine.

    `flops_ratio` -> total_sparsity = 1 - flops_ratio of the MACs; `lbound`/`rbound` (bounds of the kept
    fraction per layer) -> per-layer sparsity in [1 - rbound, 1 - lbound]; `channel_round` -> kept channel
    counts rounded up to a multiple; `train_episode`, `warmup` and the DDPG names as in NNI; evaluator is
    called as `evaluator(val_loader, model)`. The v1 action acted on input channels with a least-squares
    refit of 1x1 convs; this one prunes output channels (through the dependency graph) by `l1` and does not
    refit. `model_type`, `dataset`, `reward`, `n_calibration_batches`, `n_points_per_layer`, `debug` and
    `epsilon` are accepted and ignored. Output goes to `output_dir`; `compress()` returns None as NNI's.
    """

    def __init__(self, model: torch.nn.Module, config_list: list[dict[str, Any]],
                 evaluator: Callable[[Iterable[Any], torch.nn.Module], float], val_loader: Iterable[Any],
                 suffix: str | None = None, model_type: str = "mobilenet", dataset: str = "cifar10",
                 flops_ratio: float = 0.5, lbound: float = 0.2, rbound: float = 1.0, reward: str = "acc_reward",
                 n_calibration_batches: int = 60, n_points_per_layer: int = 10, channel_round: int = 8,
                 hidden1: int = 300, hidden2: int = 300, lr_c: float = 1e-3, lr_a: float = 1e-4, warmup: int = 100,
                 discount: float = 1.0, bsize: int = 64, rmsize: int = 100, window_length: int = 1,
                 tau: float = 0.01, init_delta: float = 0.5, delta_decay: float = 0.99,
                 max_episode_length: float = 1e9, output_dir: str | os.PathLike[str] = "./logs", debug: bool = False,
                 train_episode: int = 800, epsilon: int = 50000, seed: int | None = None, *,
                 dummy_input: Any = None) -> None:
        if not 0 < flops_ratio < 1:
            raise InputError(f"flops_ratio={flops_ratio}: the fraction of FLOPs to keep, in (0, 1)")
        if not 0 <= lbound <= rbound <= 1:
            raise InputError(f"lbound={lbound}, rbound={rbound}: bounds of the kept fraction per layer, "
                             "0 <= lbound <= rbound <= 1")
        self.val_loader = val_loader
        if dummy_input is None:
            batch = next(iter(val_loader))
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            dummy_input = x[:1] if isinstance(x, torch.Tensor) else x
        entries = [{**e, "total_sparsity": 1 - flops_ratio} for e in config_list if not e.get("exclude")]
        entries += [e for e in config_list if e.get("exclude")]
        for e in entries:
            e.pop("sparsity", None)
            if not e.get("exclude") and lbound > 0:
                e.setdefault("max_sparsity_per_layer", 1 - lbound)
        ddpg = {"hidden1": hidden1, "hidden2": hidden2, "lr_c": lr_c, "lr_a": lr_a, "warmup": warmup,
                "discount": discount, "bsize": bsize, "rmsize": rmsize, "window_length": window_length, "tau": tau,
                "init_delta": init_delta, "delta_decay": delta_decay, "max_episode_length": max_episode_length,
                "epsilon": epsilon}
        run = f"{model_type}_{dataset}_r{flops_ratio}_search" + (f"-{suffix}" if suffix else "")
        super().__init__(train_episode, model, entries, dummy_input, evaluator, "l1", os.path.join(output_dir, run),
                         ddpg_params=ddpg, target="flops", seed=0 if seed is None else seed, round_to=channel_round,
                         min_sparsity=1 - rbound)

    def _evaluator_call(self) -> EvaluatorCall:
        return EvaluatorCall(self.evaluator, (self.val_loader, ModelArg()))

    def compress(self) -> None:
        """Run the search; the best result is in `get_best_result()` and `output_dir`."""
        super().compress()
        _, _, masks, score, config_list = self.get_best_result()
        assert self.log_dir is not None
        torch.save(masks.to_nni(), self.log_dir / "best_mask.pth")
        torch.save(self.result.model.state_dict(), self.log_dir / "best_model.pth")  # a GraphModule does not pickle
        (self.log_dir / "search_result.json").write_text(
            json.dumps({"performance": score, "config_list": config_list}, indent=2))
