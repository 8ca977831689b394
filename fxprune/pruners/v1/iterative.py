"""NNI v1's iterative pruners (v1 seed, NNI 1.7-2.2): the model you train is the model pruned.

    pruner = AGPPruner(model, config_list, optimizer, pruning_algorithm="level")
    pruner.compress()                      # returns `model`; masks follow the optimizer's steps
    for epoch in range(10):
        train(model, optimizer); pruner.update_epoch(epoch)

    pruner = LotteryTicketPruner(model, config_list, optimizer)
    pruner.compress()
    for _ in pruner.get_prune_iterations():
        pruner.prune_iteration_start()     # prune a little more, rewind weights/optimizer/scheduler
        ...train...

As in NNI v1, these mask YOUR model in place (a `WeightMask` parametrization on each masked parameter, the
parameter object itself unchanged, so your optimizer keeps working). A structured algorithm (l1, l2, fpgm)
masks every parameter of a removed channel's group (the conv's filter, its BatchNorm, the next layer's
input slice), so the masked model computes exactly what the pruned one will: `pruner.speedup()` returns it,
verified. Scoring runs on a traced copy (`fxprune.prepare`) whose weights are refreshed from your model
before each update; example inputs come from `dummy_input=` or your model's first forward call.

AGP's data-driven algorithms take their statistics from your training, as NNI v1's maskers did:
`taylorfo` sums (w * dL/dw)^2 over every backward pass of your loop since the previous mask update (a
post-accumulate-grad hook on each parameter); `apoz` and `mean_activation` replay the inputs of the last
`statistics_batch_num` forward calls of your model on the traced copy at the update (your weights and
training flags then), and read the activation that really follows each layer; `slim` ranks the selected
BatchNorm layers' |gamma| (NNI v1 crashed on it with a KeyError on 'sparsity', #3900). An update whose
statistics are not there yet (no batch or backward pass since the last one) waits for the next optimizer step.
"""

from __future__ import annotations

import copy
import numbers
from collections import deque
from typing import Any

import torch
import torch.nn.utils.parametrize as parametrize

from ...catalog import ALGORITHMS
from ...errors import ConfigError, FxPruneError, InputError
from ...importance import CRITERIA, Stats
from ...masks import Masks
from ...passes.mask import MASK_PREFIX, WeightMask
from ...passes.probe import taylor_hook
from ...passes.trace import set_training
from ...schedules import agp_epoch
from ...session import CompileResult, Session, prepare
from ..iterative import NNI_ALGORITHMS, inner_config, rewind, round_rules, sizes, snapshot

__all__ = ["AGPPruner", "LotteryTicketPruner"]

_V1_AGP_ALGORITHMS = tuple(a for a in NNI_ALGORITHMS if a != "admm")
_SELECT_KEYS = ("op_types", "op_names", "op_partial_names", "exclude")


def _int(value: Any, where: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"{where} must be an integer >= {low}, got {value!r}")
    return int(value)


def _fraction(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ConfigError(f"{where} must be a number in [0, 1) (the fraction removed), got {value!r}")
    return float(value)


def _selection(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in _SELECT_KEYS if k in entry}


class _V1Pruner:
    """Masks on the user's model, scored on a traced copy. Subclasses decide when and how much."""

    def __init__(self, model: torch.nn.Module, rules: list[dict[str, Any]], algorithm: str,
                 dummy_input: Any = None) -> None:
        if not isinstance(model, torch.nn.Module):
            raise InputError(f"{type(self).__name__}: model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.config, _ = inner_config({"pruner": algorithm, "rules": rules}, None)
        self._inputs: tuple[Any, ...] | None = None if dummy_input is None else (
            tuple(dummy_input) if isinstance(dummy_input, (tuple, list)) else (dummy_input,))
        self._hook: Any = None
        self._statistic_hooks: list[Any] | None = None  # handles on your model, once a criterion needs statistics
        self._session: Session | None = None
        self._n0: dict[str, int] = {}
        self.masks: Masks | None = None

    # -- inputs and the scoring copy -----------------------------------------------------------
    def _watch_inputs(self) -> None:
        if self._inputs is None and self._hook is None:
            def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
                self._inputs = tuple(a[:1].detach() if isinstance(a, torch.Tensor) and a.dim() else a for a in args)
                self._hook.remove()
                self._hook = None

            self._hook = self.model.register_forward_pre_hook(hook)

    def _scoring_session(self) -> Session:
        if self._session is None:
            if self._inputs is None:
                raise InputError(f"{type(self).__name__} needs example inputs to find the layers' channel groups: "
                                 "pass dummy_input=torch.randn(1, ...) or run one forward pass (a training step) "
                                 "before the first pruning step")
            self._session = prepare(self.model, self.config, self._inputs)  # before any mask is on the model
            self._n0 = sizes(self._session)
        return self._session

    @torch.no_grad()
    def _sync(self, session: Session) -> None:
        """The copy's weights and buffers := the user's current ones (masked weights are zeros: they score lowest)."""
        tensors = list(session.model.named_parameters())
        tensors += [(n, b) for n, b in session.model.named_buffers() if not n.startswith(MASK_PREFIX)]
        for name, p in tensors:
            owner, _, attr = name.rpartition(".")
            try:
                value = getattr(self.model.get_submodule(owner), attr)
            except AttributeError as e:
                raise FxPruneError(f"{type(self).__name__}: tensor {name!r} of the traced copy is not in your "
                                   "model any more; do not replace modules after compress()") from e
            p.copy_(value)

    # -- masks -----------------------------------------------------------------------------------
    def _statistics(self, session: Session) -> Stats | None:
        """What the algorithm's criterion needs beyond the weights, from the user's training (None: weights only)."""
        return None

    def _update(self, targets: list[float]) -> None:
        """Masks for these per-rule sparsities (masked weights stay masked), written onto the user's model."""
        session = self._scoring_session()
        self._sync(session)
        masks = session.compute_masks(config=round_rules(session, targets, self._n0, relative=False),
                                      stats=self._statistics(session))
        session.masks = masks  # the copy never runs: these only make the next step shrink from here
        self.masks = masks
        for layer, params in masks.to_nni().items():
            module = self.model.get_submodule(layer)
            for attr, mask in params.items():
                keep = mask.to(torch.bool)
                if parametrize.is_parametrized(module, attr):
                    module.parametrizations[attr][0].mask.copy_(keep)
                else:
                    parametrize.register_parametrization(module, attr, WeightMask(keep))

    def get_masks(self) -> dict[str, dict[str, torch.Tensor]]:
        """NNI's mask format: {layer: {param: 0/1 float mask}} of what is masked now."""
        return {} if self.masks is None else self.masks.to_nni()

    def speedup(self) -> CompileResult:
        """The model with the masked channels removed, verified against your masked model (call once, at the end)."""
        session = self._scoring_session()
        self._sync(session)
        if self.masks is not None:
            session.masks = Masks(session.graph)
            session.apply(self.masks)
        return session.finish()

    def strip(self) -> torch.nn.Module:
        """Remove the mask parametrizations (and any statistics hooks) from your model, leaving the masked values
        (zeros) in the weights."""
        for handle in self._statistic_hooks or []:
            handle.remove()
        for module in self.model.modules():
            for attr in list(getattr(module, "parametrizations", {})):
                if isinstance(module.parametrizations[attr][0], WeightMask):
                    parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
        return self.model


class AGPPruner(_V1Pruner):
    """NNI v1 AGP: the sparsity grows with the epochs the user reports (`update_epoch`), masks recomputed at the
    next `optimizer.step()`.

    Config keys per entry: `final_sparsity` (required), `initial_sparsity` (0), `start_epoch` (0),
    `end_epoch` (1), `frequency` (1), plus `op_types`/`op_names`. `statistics_batch_num`: the forward calls
    whose activations `apoz` / `mean_activation` score (the last ones before each update).
    """

    def __init__(self, model: torch.nn.Module, config_list: list[dict[str, Any]], optimizer: torch.optim.Optimizer,
                 pruning_algorithm: str = "level", *, dummy_input: Any = None, statistics_batch_num: int = 1) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise InputError("AGPPruner (v1) needs the optimizer you train with (its step() triggers the mask "
                             f"updates), got {type(optimizer).__name__}")
        if pruning_algorithm not in _V1_AGP_ALGORITHMS:
            raise ConfigError(f"pruning_algorithm={pruning_algorithm!r} is not one of {', '.join(_V1_AGP_ALGORITHMS)}")
        criterion = ALGORITHMS[pruning_algorithm].criterion
        self._needs = CRITERIA[criterion].needs - {"weights"} if criterion in CRITERIA else frozenset()
        self._recent: deque[tuple[Any, ...]] = deque(maxlen=_int(statistics_batch_num, "statistics_batch_num", 1))
        self._gradients, self._backward = Stats(), [0]
        self.schedule = [self._entry(e, i) for i, e in enumerate(config_list)]
        rules = [{"sparsity": s["final_sparsity"], **_selection(e)} if not e.get("exclude") else _selection(e)
                 for s, e in zip(self.schedule, config_list)]
        super().__init__(model, rules, pruning_algorithm, dummy_input)
        self.optimizer = optimizer
        self.now_epoch = 0
        self._dirty = True
        self._current: list[float] | None = None

    @staticmethod
    def _entry(entry: Any, i: int) -> dict[str, Any]:
        where = f"config_list[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a dict, got {entry!r}")
        known = {"initial_sparsity", "final_sparsity", "start_epoch", "end_epoch", "frequency", *_SELECT_KEYS}
        unknown = [k for k in entry if k not in known]
        if unknown:
            hint = " (v1 AGP uses 'final_sparsity')" if "sparsity" in unknown else ""
            raise ConfigError(f"{where}: unknown key(s) {unknown}{hint}; known: {', '.join(sorted(known))}")
        if entry.get("exclude"):
            return {}
        if "final_sparsity" not in entry:
            raise ConfigError(f"{where} has no 'final_sparsity': add e.g. 'final_sparsity': 0.8")
        s = {"final_sparsity": _fraction(entry["final_sparsity"], f"{where}.final_sparsity"),
             "initial_sparsity": _fraction(entry.get("initial_sparsity", 0.0), f"{where}.initial_sparsity"),
             "start_epoch": _int(entry.get("start_epoch", 0), f"{where}.start_epoch", 0),
             "end_epoch": _int(entry.get("end_epoch", 1), f"{where}.end_epoch", 0),
             "frequency": _int(entry.get("frequency", 1), f"{where}.frequency", 1)}
        if s["end_epoch"] < s["start_epoch"]:
            raise ConfigError(f"{where}: end_epoch {s['end_epoch']} < start_epoch {s['start_epoch']}; pruning must "
                              "end after it starts")
        if s["initial_sparsity"] > s["final_sparsity"]:
            raise ConfigError(f"{where}: initial_sparsity {s['initial_sparsity']} > final_sparsity "
                              f"{s['final_sparsity']}: the sparsity only grows")
        return s

    def compress(self) -> torch.nn.Module:
        """Hook the optimizer's step (masks follow it) and return your model (NNI v1)."""
        self._watch_inputs()
        self._watch_statistics()
        if not getattr(self.optimizer.step, "_fxprune_agp", False):
            step = self.optimizer.step

            def patched(*args: Any, **kwargs: Any) -> Any:
                out = step(*args, **kwargs)
                self._on_step()
                return out

            patched._fxprune_agp = True  # type: ignore[attr-defined]
            self.optimizer.step = patched  # type: ignore[method-assign]
        if self._inputs is not None:
            self._on_step()
        return self.model

    def targets(self, epoch: int) -> list[float] | None:
        """Per config entry, the sparsity at `epoch` (None: this epoch keeps the previous masks)."""
        out = []
        for s in self.schedule:
            if not s:
                continue
            t = agp_epoch(epoch, s["initial_sparsity"], s["final_sparsity"], s["start_epoch"], s["end_epoch"],
                          s["frequency"])
            if t is None:
                return None
            out.append(t)
        return out

    def _watch_statistics(self) -> None:
        """Hooks on your model for the criterion's statistics (once): its inputs, or its weight gradients."""
        if self._statistic_hooks is not None:
            return
        self._statistic_hooks = []
        model = self.model
        if "activations" in self._needs:
            def remember(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
                if module is model:  # the traced copy carries this hook: its own runs are not your batches
                    self._recent.append(tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args))

            self._statistic_hooks.append(model.register_forward_pre_hook(remember))
        if "gradients" in self._needs:
            self._statistic_hooks += [p.register_post_accumulate_grad_hook(taylor_hook(name, self._gradients, None,
                                                                                       self._backward))
                                      for name, p in model.named_parameters() if p.requires_grad]

    def _statistics(self, session: Session) -> Stats | None:
        if "gradients" in self._needs:
            return self._gradients
        if "activations" in self._needs:
            flags = {name: m.training for name, m in self.model.named_modules()}
            before = set_training(session.model, flags)  # BatchNorm in your mode, as your forward calls ran
            try:
                with session.probe(("activations",)) as stats, torch.no_grad():
                    for args in self._recent:
                        session.model(*args)
            finally:
                set_training(session.model, before)
            return stats
        return None

    def _has_statistics(self) -> bool:
        if "gradients" in self._needs:
            return self._gradients.backward > 0
        return "activations" not in self._needs or bool(self._recent)

    def _on_step(self) -> None:
        if not self._dirty or self._inputs is None:
            return
        targets = self.targets(self.now_epoch)
        if targets is None or targets == self._current:
            self._dirty = False
            return
        if not self._has_statistics():  # no batch of your training since the last update: wait for one
            return
        self._dirty = False
        self._current = targets
        self._update(targets)
        self._recent.clear()  # the next update scores what your training does from here
        self._gradients.weight_taylor.clear()
        self._gradients.backward = self._backward[0] = 0

    def update_epoch(self, epoch: int) -> None:
        """Tell the pruner the epoch number; the masks are recomputed at the next optimizer step.

        Raises:
            InputError: `epoch` is not a non-negative integer.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise InputError(f"update_epoch(epoch={epoch!r}): epoch must be a non-negative integer (the epoch "
                             "number of your training loop)")
        self.now_epoch = int(epoch)
        self._dirty = True


class LotteryTicketPruner(_V1Pruner):
    """NNI v1 Lottery Ticket: `prune_iteration_start()` at each round prunes `1 - (1 - s)^(r/n)` of each layer's
    weights (level; masked ones stay masked) and rewinds the weights, the optimizer and the LR scheduler to their
    state at construction. Config keys: `prune_iterations` (the same in every entry), `sparsity`."""

    def __init__(self, model: torch.nn.Module, config_list: list[dict[str, Any]],
                 optimizer: torch.optim.Optimizer | None = None, lr_scheduler: Any = None, reset_weights: bool = True,
                 *, dummy_input: Any = None) -> None:
        iterations, rules = set(), []
        for i, entry in enumerate(config_list):
            where = f"config_list[{i}]"
            if not isinstance(entry, dict):
                raise ConfigError(f"{where} must be a dict, got {entry!r}")
            unknown = [k for k in entry if k not in {"prune_iterations", "sparsity", *_SELECT_KEYS}]
            if unknown:
                raise ConfigError(f"{where}: unknown key(s) {unknown}; known: prune_iterations, sparsity, "
                                  + ", ".join(_SELECT_KEYS))
            if entry.get("exclude"):
                rules.append(_selection(entry))
                continue
            if "prune_iterations" not in entry:
                raise ConfigError(f"{where} has no 'prune_iterations': add e.g. 'prune_iterations': 5")
            iterations.add(_int(entry["prune_iterations"], f"{where}.prune_iterations", 1))
            rules.append({"sparsity": entry.get("sparsity"), **_selection(entry)})
        if len(iterations) > 1:
            raise ConfigError(f"prune_iterations differs between entries ({sorted(iterations)}): give every entry "
                              "the same number")
        if reset_weights and optimizer is None:
            raise InputError("LotteryTicketPruner (v1) with reset_weights=True needs the optimizer, to reset its state "
                             "each round: pass it as the third argument")
        super().__init__(model, rules, "level", dummy_input)
        self.prune_iterations = iterations.pop() if iterations else 1
        self.optimizer, self.lr_scheduler, self.reset_weights = optimizer, lr_scheduler, reset_weights
        self._finals = [r.target for r in self.config.rules if not r.exclude]
        self._weights = snapshot(model)
        self._optimizer_state = None if optimizer is None else copy.deepcopy(optimizer.state_dict())
        self._scheduler_state = None if lr_scheduler is None else copy.deepcopy(lr_scheduler.state_dict())
        self.round = -1

    def compress(self) -> torch.nn.Module:
        """Start watching for example inputs and return your model (all masks open)."""
        self._watch_inputs()
        return self.model

    def get_prune_iterations(self) -> range:
        """The rounds: 0 (dense) to prune_iterations."""
        return range(self.prune_iterations + 1)

    def prune_iteration_start(self) -> None:
        """Start the next round: prune it (from round 1 on), then rewind weights, optimizer and scheduler.

        Raises:
            InputError: called more times than `get_prune_iterations()` has rounds.
        """
        if self.round >= self.prune_iterations:
            raise InputError(f"prune_iteration_start() called {self.round + 2} times, but get_prune_iterations() has "
                             f"{self.prune_iterations + 1} rounds (0..{self.prune_iterations}); loop over "
                             "get_prune_iterations() once")
        self.round += 1
        if self.round == 0:
            return
        n = self.prune_iterations
        self._update([1 - (1 - s) ** (self.round / n) for s in self._finals])
        if self.reset_weights:
            rewind(self._weights)
            if self.optimizer is not None and self._optimizer_state is not None:
                self.optimizer.load_state_dict(copy.deepcopy(self._optimizer_state))
            if self.lr_scheduler is not None and self._scheduler_state is not None:
                self.lr_scheduler.load_state_dict(copy.deepcopy(self._scheduler_state))
