"""AutoCompress (Liu et al. 2020): rounds on the lottery schedule; in each, simulated annealing chooses the
per-layer sparsities, ADMM prunes with them, the channels are removed and the model is fine-tuned.

    admm_params = {"trainer": trainer, "traced_optimizer": traced_optimizer, "criterion": criterion,
                   "iterations": 10, "training_epochs": 1}
    sa_params = {"evaluator": evaluator}
    pruner = AutoCompressPruner(model, [{"sparsity": 0.8, "op_types": ["Conv2d"]}], 10, admm_params, sa_params,
                                finetuner=finetuner, dummy_input=x)
    pruner.compress()
    _, model, masks, _, _ = pruner.get_best_result()

Round i of N (i = 1..N: no warm-up round, no rewind):

1. the round's target is the lottery schedule's `1 - (1 - s)^(i/N)` (`fxprune.schedules.lottery`) of the
   ORIGINAL model's resource (`sa_params["target"]`: "params", the default, or "flops"); SA gets it as a
   `total_sparsity` relative to the round's input model, `1 - (1 - s_i) R_0 / R`, so a round that removes a
   little more than asked (whole channels) is absorbed by the next one and the last lands on `s`;
2. `SimulatedAnnealingPruner` searches the per-unit sparsities on the round's input model (`sa_params` are
   its keyword arguments; its history goes to `<run>/round_<i>/SA/`);
3. ADMM (`fxprune.pruners.training.admm`, coarse-grained: whole channels by their L1 norm) trains the
   model towards SA's best per-unit sparsities (`admm_params`: NNI's ADMMPruner arguments) and prunes
   with them: the same channel counts, so the round's budget holds;
4. the finetuner (if any) trains the masked model, the channels are removed (speedup, masked == pruned
   verified) and the evaluator (if any) scores the round. The result is the last round (NNI's "latest").

On purpose unlike NNI v2: the channels are removed between rounds whatever `speedup` says (as NNI v1
does), so every round searches the smaller model; `speedup=False` only changes what `get_best_result()`
returns: the last round's masked model and its masks (relative to that round's input model) instead of
the pruned model with masks `{}`. ADMM is coarse-grained only: SA searches channel sparsities (l1, l2,
fpgm), and single-weight ADMM (NNI's `level`) would not change the resource the budget counts.

Written to `log_dir/<timestamp>/` (the v1 form: `experiment_data_dir/`): `rounds.json` (after every
round), `round_<i>/SA/search_history.{json,csv,png}`, `round_<i>.fxp` (the round's pruned model, saved
with `fxprune.save`; only the last one unless `keep_intermediate_result`).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, FxPruneError, InputError
from ..masks import Masks
from ..progress import progress as _progress
from ..schedules import lottery
from ..serialize import save
from ..session import CompileResult, prepare
from .iterative import Round, capture_inputs
from .search import SimulatedAnnealingPruner, budget_of
from .training import ADMMPruner, TrainLoop, admm

__all__ = ["AutoCompressPruner"]

_log = logging.getLogger(__name__)

#: sa_params keys AutoCompress sets itself
_SA_RESERVED = {"self", "model", "config_list", "log_dir", "speedup", "keep_intermediate_result"}
#: admm_params keys: NNI's ADMMPruner arguments after config_list (both call forms), and rho
_ADMM_LOOP = {"trainer", "traced_optimizer", "optimizer", "criterion", "evaluator"}
_ADMM_OPTIONS = {"iterations", "training_epochs", "granularity", "rho"}
_BUDGET_KEYS = ("sparsity", "total_sparsity", "sparsity_per_layer")


def _sa_keys() -> set[str]:
    return set(inspect.signature(SimulatedAnnealingPruner.__init__).parameters) - _SA_RESERVED


class AutoCompressPruner:
    """NNI v2's AutoCompressPruner (2.6-2.8 signature): `compress()` runs every round and returns None; the
    result is `get_best_result()`, NNI's 5-tuple of the last round.

    Args:
        model: the dense model (not modified).
        config_list: NNI config_list; its `sparsity`/`total_sparsity` is the final budget (the fraction of
            `sa_params["target"]`, parameters by default, removed from the whole model).
        total_iteration: N, the rounds.
        admm_params: `trainer`, `traced_optimizer`, `criterion` (or `evaluator`, NNI 2.9's TorchEvaluator),
            `iterations`, `training_epochs`, optional `granularity` ("coarse-grained" only) and `rho`.
        sa_params: `SimulatedAnnealingPruner` keywords: `evaluator` (required), temperatures,
            `pruning_algorithm` (l1, l2, fpgm; default l1), `finetuner` (per candidate), `target`, `seed`,
            `executor`, ...
        log_dir: the run goes to `log_dir/<timestamp>/`.
        keep_intermediate_result: keep every round's `round_<i>.fxp` (default: the last one only).
        finetuner: `finetuner(model)`, once per round after ADMM, on the masked model.
        speedup: return the pruned model (True) or the last round's masked model and masks (False).
        dummy_input: example inputs (default: the first sample the SA evaluator feeds the model).
        evaluator: `evaluator(model) -> float`, once per round after fine-tuning (the round's score).
        progress: the progress line on stderr (None: when stderr is a terminal).
    """

    name = "AutoCompress"

    def __init__(self, model: torch.nn.Module, config_list: list[dict[str, Any]], total_iteration: int,
                 admm_params: dict[str, Any], sa_params: dict[str, Any], log_dir: str | os.PathLike[str] = ".",
                 keep_intermediate_result: bool = False, finetuner: Callable[[torch.nn.Module], Any] | None = None,
                 speedup: bool = False, dummy_input: Any = None,
                 evaluator: Callable[[torch.nn.Module], float] | None = None, *, progress: bool | None = None) -> None:
        if isinstance(total_iteration, bool) or not isinstance(total_iteration, int) or total_iteration < 1:
            raise InputError(f"total_iteration={total_iteration!r}: AutoCompress needs at least one round; pass an "
                             "integer >= 1, e.g. 3")
        for fn, name in ((finetuner, "finetuner"), (evaluator, "evaluator")):
            if fn is not None and not callable(fn):
                raise InputError(f"{name} must be a function of the model ({name}(model)), got {type(fn).__name__}")
        self.model, self.config_list = model, list(config_list)
        self.budget = budget_of(self.config_list)
        self.total_iteration = total_iteration
        self.sa_params = self._check_sa(sa_params)
        self.target = self.sa_params.get("target", "params")
        self.finetuner, self.evaluator, self.dummy_input, self.speedup = finetuner, evaluator, dummy_input, speedup
        self.log_dir, self.keep_intermediate_result, self.progress = log_dir, keep_intermediate_result, progress
        self.loop, self.admm_options = self._admm_setup(admm_params)
        self.rounds: list[dict[str, Any]] = []
        self.run_dir: Path | None = None
        self.result: CompileResult | None = None
        self._last: tuple[Round, list[dict[str, Any]]] | None = None

    # -- arguments -----------------------------------------------------------------------------------
    def _check_sa(self, sa_params: Any) -> dict[str, Any]:
        if not isinstance(sa_params, dict):
            raise InputError(f"sa_params must be a dict of SimulatedAnnealingPruner arguments (at least "
                             f"{{'evaluator': evaluator}}), got {type(sa_params).__name__}")
        unknown = set(sa_params) - _sa_keys()
        if unknown:
            raise InputError(f"sa_params has unknown key(s) {sorted(unknown)}; known: {sorted(_sa_keys())} "
                             "(model, config_list, log_dir and speedup are set by AutoCompress)")
        if not callable(sa_params.get("evaluator")):
            raise InputError("sa_params['evaluator'] must be evaluator(model) -> float (higher is better): simulated "
                             "annealing compares the candidates of every round by it")
        if sa_params.get("target") == "latency":
            raise ConfigError("sa_params['target']='latency': AutoCompress counts each round's resource from the "
                              "pruned model's report (parameters or MACs), and ADMM re-prunes between rounds, so a "
                              "latency budget would not be checked end to end here; use target 'flops', or "
                              "SimulatedAnnealingPruner / NetAdaptPruner / AMCPruner with target='latency'")
        params = {"pruning_algorithm": "l1", **sa_params}
        # every SA argument is checked now (no evaluation happens in the constructor), not in round 1
        SimulatedAnnealingPruner(self.model, self.config_list, **{**params, "log_dir": None})
        return params

    def _admm_setup(self, admm_params: Any) -> tuple[TrainLoop, dict[str, Any]]:
        """The user's training loop (bound as ADMMPruner binds it) and ADMM's iterations, epochs and rho."""
        if not isinstance(admm_params, dict):
            raise InputError("admm_params must be a dict of ADMMPruner arguments, e.g. {'trainer': trainer, "
                             "'traced_optimizer': optimizer, 'criterion': criterion, 'iterations': 10, "
                             f"'training_epochs': 1}}; got {type(admm_params).__name__}")
        unknown = set(admm_params) - _ADMM_LOOP - _ADMM_OPTIONS
        if unknown:
            raise InputError(f"admm_params has unknown key(s) {sorted(unknown)}; known: "
                             f"{sorted(_ADMM_LOOP | _ADMM_OPTIONS)}")
        missing = [k for k in ("iterations", "training_epochs") if k not in admm_params]
        if missing:
            raise InputError(f"admm_params misses {', '.join(missing)} (ADMM rounds and epochs per round, e.g. "
                             "'iterations': 10, 'training_epochs': 1)")
        granularity = admm_params.get("granularity", "coarse-grained")
        if granularity != "coarse-grained":
            raise ConfigError(f"admm_params granularity={granularity!r}: AutoCompress here searches channel "
                              "sparsities (l1, l2, fpgm), so ADMM must prune channels: use 'coarse-grained' "
                              "(the default); for single weights use ADMMPruner alone")
        rho = admm_params.get("rho", next((e["rho"] for e in self.config_list if "rho" in e), 1e-4))
        binder = ADMMPruner(self.model, self.config_list, **{k: v for k, v in admm_params.items() if k in _ADMM_LOOP})
        if self.dummy_input is None:
            self.dummy_input = binder.example_inputs  # NNI 2.9's evaluator carries one
        options = {"iterations": admm_params["iterations"], "training_epochs": admm_params["training_epochs"],
                   "granularity": granularity, "rho": rho}
        return binder.loop, options

    def _round_config(self, relative: float) -> list[dict[str, Any]]:
        """The user's config_list with the round's budget (rho is ADMM's; SA does not take it)."""
        out = []
        for e in self.config_list:
            e = {k: v for k, v in e.items() if k != "rho"}
            if not e.get("exclude"):
                e = {**{k: v for k, v in e.items() if k not in _BUDGET_KEYS}, "total_sparsity": relative}
            out.append(e)
        return out

    def _run_directory(self) -> Path | None:
        return Path(self.log_dir) / datetime.now().strftime("%Y-%m-%d-%H-%M-%S-%f")

    def _inputs(self) -> Any:
        if self.dummy_input is not None:
            return self.dummy_input
        if self.sa_params.get("dummy_input") is not None:
            return self.sa_params["dummy_input"]
        return capture_inputs(self.model, self.sa_params["evaluator"], "sa_params evaluator")

    # -- the rounds ----------------------------------------------------------------------------------
    def compress(self) -> None:
        """Run every round (NNI: returns None; the result is in `get_best_result()` and `log_dir`)."""
        inputs = self._inputs()
        self.rounds, self.result, self._last = [], None, None
        self.run_dir = self._run_directory()
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        current: torch.nn.Module = self.model
        dense = resource = None
        with _progress(self.total_iteration, self.name, enabled=self.progress) as bar:
            bar.set(budget=f"{1 - self.budget:.3g}")
            for i in range(1, self.total_iteration + 1):
                start = time.perf_counter()
                target = lottery(i, self.total_iteration, self.budget)
                relative = target if dense is None else 1 - (1 - target) * dense / resource
                if relative <= 1e-9:
                    _log.warning("AutoCompress round %d: earlier rounds already removed %.4f of the %s; skipped", i,
                                 1 - resource / dense, self.target)
                    continue
                result, config, sa = self._round(i, current, relative, inputs)
                report = result.report
                if dense is None:
                    dense = float(report.params_before if self.target == "params" else report.macs_before)
                resource = float(report.params_after if self.target == "params" else report.macs_after)
                score = None
                if self.evaluator is not None:
                    score = float(self._user(i, "evaluator", self.evaluator, result.model))
                r = Round(i, target, config, report.params_after, report.macs_after, report.nonzero_params_after,
                          score, time.perf_counter() - start, report.max_abs_diff)
                self._save(result, r)
                self.rounds.append({**asdict(r), "relative_sparsity": relative, "resource_ratio": resource / dense,
                                    "sa_candidates": len(sa.history), "sa_best_score": sa.summary()["best_score"]})
                self.result, self._last, current = result, (r, config), result.model
                self._write(dense)
                bar.update(round=i, kept=resource / dense, score=score if score is not None else "-")
        if self.result is None:
            raise FxPruneError("AutoCompress ran no round")

    def _round(self, i: int, model: torch.nn.Module, relative: float, inputs: Any
               ) -> tuple[CompileResult, list[dict[str, Any]], SimulatedAnnealingPruner]:
        """SA on `model` at the round's relative budget, ADMM with SA's best per-unit sparsities, fine-tune, finish."""
        sa_dir = None if self.run_dir is None else self.run_dir / f"round_{i}" / "SA"
        seed = self.sa_params.get("seed", 0) + i - 1
        sa = SimulatedAnnealingPruner(model, self._round_config(relative),
                                      **{**self.sa_params, "dummy_input": inputs, "seed": seed, "log_dir": sa_dir})
        self._user(i, "simulated annealing", lambda _: sa.compress(), model)
        config = sa.get_best_result()[4]
        excluded = [e for e in self.config_list if e.get("exclude")]
        try:
            session = prepare(model, {"pruner": "admm", "rules": config + excluded}, inputs)
            admm(session, self.loop, **self.admm_options)
        except FxPruneError as e:
            raise FxPruneError(f"AutoCompress round {i} (ADMM): {e}") from e
        if self.finetuner is not None:
            self._user(i, "finetuner", self.finetuner, session.model)
        return session.finish(), config, sa

    def _user(self, i: int, who: str, fn: Callable[[torch.nn.Module], Any], model: torch.nn.Module) -> Any:
        try:
            return fn(model)
        except FxPruneError:
            raise
        except Exception as e:
            where = f"{self.run_dir}/rounds.json" if self.run_dir is not None and self.rounds else None
            done = f"the {len(self.rounds)} round(s) done are recorded in {where}" if where else "no round was done"
            raise FxPruneError(f"AutoCompress round {i}: the {who} raised {type(e).__name__}: {e}; {done}; your model "
                               f"is unchanged. Fix the {who} (it is called on the round's model).") from e

    def _save(self, result: CompileResult, r: Round) -> None:
        if self.run_dir is None:
            return
        path = self.run_dir / f"round_{r.id}.fxp"
        save(result.model, path)
        r.file = str(path)
        if not self.keep_intermediate_result:
            for old in self.rounds:
                if old.get("file") and os.path.exists(old["file"]):
                    os.remove(old["file"])
                    old["file"] = None

    def _write(self, dense: float) -> None:
        if self.run_dir is None:
            return
        payload = {"pruner": type(self).__name__, "total_iteration": self.total_iteration, "budget": self.budget,
                   "target": self.target, "resource_before": dense, "speedup": self.speedup, "rounds": self.rounds}
        tmp = self.run_dir / "rounds.json.tmp"
        tmp.write_text(json.dumps(payload, indent=2, default=float))
        os.replace(tmp, self.run_dir / "rounds.json")

    # -- results -------------------------------------------------------------------------------------
    def get_best_result(self) -> tuple[int, torch.nn.Module, Masks | dict[str, Any], float | None,
                                       list[dict[str, Any]]] | None:
        """(task_id, model, masks, score, config_list) of the last round, or None before `compress()`.

        With speedup=True `model` is pruned and masks `{}`; otherwise the last round's masked model and its
        `Masks`. `config_list` is SA's per-unit sparsities of the last round, relative to its input model.
        """
        if self.result is None or self._last is None:
            return None
        r, config = self._last
        if self.speedup:
            return r.id, self.result.model, {}, r.score, config
        return r.id, self.result.masked_model, self.result.masks, r.score, config
