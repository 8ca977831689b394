"""Search pruners: how much to prune in each layer is searched, with the user's evaluator in the loop.

    pruner = SimulatedAnnealingPruner(model, [{"total_sparsity": 0.5, "op_types": ["Conv2d"]}],
                                      pruning_algorithm="l1", evaluator=evaluator, finetuner=finetuner)
    pruner.compress()
    _, model, masks, score, config_list = pruner.get_best_result()

Every search works on ONE pruning session (traced once). Its variables are the *units*: the channel
groups of the selected layers (layers coupled by the dependency graph, e.g. through a residual add,
form one unit and share one sparsity). A candidate is one sparsity per unit, i.e. an NNI config_list
`[{"sparsity": s, "op_names": [layers of the unit]}, ...]`; its masks come from the base criterion
(`l1`, `l2`, `fpgm`) and its cost is counted from the masks (no speedup): `target="params"` counts the
parameters of the whole model, `target="flops"`/`"macs"` its MACs for the example input, `target="latency"`
its onnxruntime latency on this machine from the per-layer table (`fxprune.latency`, the one
`config["budget"]["latency"]` uses). With `target="latency"` the search chooses by the table, and its best
candidate is then measured end to end (pruned, exported, run paired with the dense model) and corrected
until the measured ratio is within 3% of the budget (`fxprune.latency.calibrate`; the kept fractions scaled
geometrically, the pruner's finetuner run on the corrected candidate); `summary()["latency"]` and the history
file record every step, the table's estimate next to the measured ratios. A model that does not export to
ONNX, or has a layer the table cannot measure, is refused before the search. The budget
is the config's `total_sparsity` (or `sparsity`): the fraction of that resource to remove from the
whole model (NNI counts the weights of the selected layers only; fxprune counts what the pruned model
really loses, input channels of the next layer included). `max_sparsity_per_layer` caps a unit.

Each candidate is evaluated on the session's masked model: masks applied, the user's finetuner (if
any) run on a copy of the weights, the evaluator called, the weights restored. The best candidate is
finished (speedup + verify) on the same session for `get_best_result()`.

`executor=` (a `concurrent.futures.Executor`; None, the default, evaluates here one after the other)
runs candidate evaluations in workers: each worker prepares its own session from your model and config
(so the model, evaluator and finetuner must pickle for a process pool), loads the candidate's weights and
masks, fine-tunes and scores. Independent candidates are submitted together: NetAdapt's per-unit
proposals of an iteration, Sensitivity's units at each analysis step; SA's and AMC's candidates depend on
the previous one, so they go one at a time. Results equal the serial run's when the evaluator and
finetuner give the same result on every call (a loader that reshuffles per pass does not).

Every candidate is recorded in a search history, written to `log_dir` (`experiment_data_dir` in the
v1 forms) as `search_history.json`, `search_history.csv` and `search_history.png` (score against
resource kept, coloured by order, the chosen candidate starred, the budget dashed), also when the search
stops on an exception. The progress line shows the candidate count, its score, the best score so far
within the budget, and the resource it keeps against the budget (`kept=0.49 budget=0.5`).

Simulated annealing (`SimulatedAnnealingPruner`) differs from NNI on purpose in one place: NNI accepts a
worse candidate with probability exp(-dE / T) where dE is the raw score difference (accuracy in [0, 1])
and T runs from 100 down to 20, so p ~ 1 and nearly every candidate is accepted. Here dE is the score
drop in basis points (1/10,000) of the dense model's score: T = 100 accepts a 1 % relative drop with
probability 1/e, T = 20 a 0.2 % drop.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import numbers
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..catalog import ALGORITHMS
from ..errors import ConfigError, FxPruneError, InputError
from ..graph import Slot, tensor_shapes
from ..latency import EndToEnd, calibrate, cost_model
from ..masks import Masks
from ..passes.speedup import new_shapes
from ..progress import progress
from ..report import count_macs
from ..session import CompileResult, Session, prepare

__all__ = ["SearchSpace", "SearchPruner", "SimulatedAnnealingPruner", "NetAdaptPruner", "SensitivityPruner",
           "score_of", "budget_of", "evaluate_job", "EvaluatorCall", "ModelArg"]

_log = logging.getLogger(__name__)

_TARGETS = {"params": "params", "flops": "macs", "macs": "macs", "latency": "latency"}
_CHANNEL_ALGOS = ("l1", "l2", "fpgm")
_LATENCY_ARG = "target='latency'"


def score_of(value: Any, who: str = "evaluator") -> float:
    """The evaluator's result as a finite float (a number, a one-element tensor, or NNI 2.9's {'default': x}).

    Raises:
        FxPruneError: NaN, infinite, or not a number (names `who` and the fix).
    """
    if isinstance(value, dict) and "default" in value:
        value = value["default"]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FxPruneError(f"{who} returned {type(value).__name__} {value!r}: it must return one number, higher is "
                           "better (e.g. the accuracy as a float)")
    if not math.isfinite(value):
        raise FxPruneError(f"{who} returned {value}: the search compares scores, so it must be finite; check that "
                           "the evaluation data is not empty and the model does not diverge")
    return float(value)


def _first_sample(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a[:1] if isinstance(a, torch.Tensor) and a.dim() > 0 else a for a in args)


def capture_and_score(model: torch.nn.Module, call: Callable[[torch.nn.Module], Any],
                      who: str = "evaluator") -> tuple[float, tuple[Any, ...] | None]:
    """Score a deep copy of the dense model with `call` and record its first input (one sample of it).

    The search needs the dense score anyway (it normalises SA's energy and AMC's reward); the input it
    sees is what the model is traced with when the user gave no `dummy_input` (NNI's v1 forms take none).
    """
    dense = copy.deepcopy(model)
    seen: list[tuple[Any, ...]] = []

    def hook(_module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if not seen:
            seen.append(_first_sample(args))

    handle = dense.register_forward_pre_hook(hook)
    try:
        score = score_of(call(dense), who)
    finally:
        handle.remove()
    return score, (seen[0] if seen else None)


@dataclass
class _Unit:
    """One searched variable: a channel group of the selected layers."""

    gid: int
    names: list[str]
    n: int  # channels of the group
    prunable: np.ndarray  # indices of prunable channels
    size: int  # weight elements of the member layers (SA's "larger layers prune more" prior)
    cap: float  # max sparsity (max_sparsity_per_layer)

    @property
    def name(self) -> str:
        return self.names[0]

    def removed(self, sparsity: float, round_to: int = 1) -> int:
        """Channels removed at `sparsity` (as `fxprune.masks` counts them: floor, keep one, round the kept)."""
        r = min(int(math.floor(sparsity * self.n + 1e-9)), len(self.prunable), self.n - 1)
        if round_to > 1:
            kept = min(self.n, int(math.ceil((self.n - r) / round_to) * round_to))
            r = self.n - kept
        return max(r, 0)


class SearchSpace:
    """The units of one session, the resource of a candidate, and its masks.

    Args:
        model: the user's model (not modified).
        config_list: NNI config_list; its `total_sparsity`/`sparsity` is the budget.
        example_inputs: inputs to trace with.
        algorithm: base criterion, `l1`, `l2` or `fpgm`.
        target: "params", "flops"/"macs" or "latency" (`fxprune.latency`: the per-layer table counts candidates,
            `end_to_end` measures the dense model exported once and the final candidate against it).
        round_to: keep channel counts a multiple of N (AMC v1's `channel_round`).
        min_sparsity: a lower bound per unit (AMC v1's `rbound`).
    """

    def __init__(self, model: torch.nn.Module, config_list: Sequence[dict[str, Any]], example_inputs: Any,
                 algorithm: str = "l1", target: str = "params", round_to: int = 1, min_sparsity: float = 0.0) -> None:
        _check_algorithm(algorithm, target)
        self.target, self.algorithm, self.round_to = _TARGETS[target], algorithm, round_to
        self.budget = budget_of(config_list)
        #: what a worker needs to prepare the same session (the model, not the GraphModule: it pickles)
        self.source = model
        self.prepare_config = {"pruner": algorithm, "rules": list(config_list), "round_to": round_to}
        self.session: Session = prepare(model, self.prepare_config, example_inputs)
        dg = self.session.graph
        self.end_to_end: EndToEnd | None = None
        if self.target == "latency":  # refused here, before any search, when it cannot be measured or exported
            self.end_to_end = EndToEnd(self.session.model, dg, self.session.example_inputs, argument=_LATENCY_ARG)
            self._latency = cost_model("latency", dg, argument=_LATENCY_ARG)
        self._shapes = {**{k: v for n in dg.gm.graph.nodes for k, v in tensor_shapes(n).items()},
                        **{k: v for k, v in dg.shapes.items() if k.startswith("@")}}
        self._params = {name: tuple(p.shape) for name, p in dg.gm.named_parameters()}
        self.units = self._units(config_list)
        if not self.units:
            raise ConfigError("the config_list selects no prunable layer: every selected layer is excluded or kept "
                              "whole by the dependency graph; select other op_types/op_names")
        self.min_sparsity = min_sparsity
        self.dense = self.resource(np.zeros(len(self.units)))
        self.limit = (1 - self.budget) * self.dense
        self.caps = np.array([u.cap for u in self.units])
        floor = self.resource(self.caps)
        if floor > self.limit * (1 + 1e-9):
            raise ConfigError(
                f"total_sparsity={self.budget:g} cannot be met: with every searched layer at its maximum sparsity "
                f"the model keeps {floor / self.dense:.1%} of its {self.target} (frozen groups and unselected layers "
                f"need that much); lower total_sparsity to at most {1 - floor / self.dense:.3f}, raise "
                "max_sparsity_per_layer, or select more layers")
        self.base_state = copy.deepcopy(self.session.model.state_dict())

    def _units(self, config_list: Sequence[dict[str, Any]]) -> list[_Unit]:
        dg, units = self.session.graph, {}
        caps = _caps(config_list)
        for layer in self.session.layers:
            if layer.excluded:
                continue
            gid = dg.group_of[layer.slot]
            group = dg.groups[gid]
            if not group.prunable.any():
                continue
            size = int(np.prod(self._params.get(layer.weight, (0,))))
            cap = min(caps.get(a, caps.get("", 1.0)) for a in layer.aliases)
            if gid in units:
                units[gid].names.append(layer.name)
                units[gid].size += size
                units[gid].cap = min(units[gid].cap, cap)
            else:
                units[gid] = _Unit(gid, [layer.name], group.n_units, np.flatnonzero(group.prunable), size, cap)
        return list(units.values())

    # -- resource ----------------------------------------------------------------------------------
    def count(self, masks: Masks) -> float:
        """The resource (params, MACs or the latency table's seconds) of the model these masks leave, counted
        without speedup."""
        if self.target == "latency":
            return self._latency.total(masks.keep)
        shapes = new_shapes(masks)
        if self.target == "params":
            return float(sum(int(np.prod(shapes.get("@" + n, s))) for n, s in self._params.items()))
        return float(sum(count_macs(self.session.graph.gm, {**self._shapes, **shapes}).values()))

    def quantise(self, sparsities: np.ndarray) -> np.ndarray:
        """Sparsities rounded to whole channels (what the masks will remove), clipped to [min, cap]."""
        s = np.clip(sparsities, self.min_sparsity, self.caps) if len(sparsities) else sparsities
        return np.array([u.removed(x, self.round_to) / u.n for u, x in zip(self.units, s)])

    def resource(self, sparsities: np.ndarray) -> float:
        """The resource of a candidate, from channel counts alone (which channels go does not matter)."""
        masks = Masks(self.session.graph)
        for u, s in zip(self.units, sparsities):
            r = u.removed(float(min(max(s, self.min_sparsity), u.cap)), self.round_to)
            if r:
                keep = np.ones(u.n, dtype=bool)
                keep[u.prunable[:r]] = False
                masks.keep[u.gid] = keep
        return self.count(masks)

    def ratio(self, sparsities: np.ndarray) -> float:
        """Fraction of the dense resource a candidate keeps."""
        return self.resource(sparsities) / self.dense

    def fits(self, sparsities: np.ndarray) -> bool:
        return self.resource(sparsities) <= self.limit * (1 + 1e-9)

    def scale_to_budget(self, direction: np.ndarray, limit: float | None = None) -> np.ndarray | None:
        """The smallest multiple of `direction` (clipped per unit to its cap) that meets the budget, or None."""
        limit = self.limit if limit is None else limit
        direction = np.maximum(direction, 0)
        if not direction.any():
            return np.zeros_like(direction) if self.resource(direction) <= limit else None
        hi = float(np.max(np.where(direction > 0, self.caps / np.maximum(direction, 1e-12), 0)))
        if self.resource(np.minimum(hi * direction, self.caps)) > limit * (1 + 1e-9):
            return None
        if self.resource(np.zeros_like(direction)) <= limit:
            return np.zeros_like(direction)
        a = self.smallest(lambda m: np.minimum(m * direction, self.caps), hi, limit)
        return self.quantise(np.minimum(a * direction, self.caps))

    def smallest(self, at: Callable[[float], np.ndarray], hi: float, limit: float, steps: int = 40) -> float:
        """The smallest a in [0, hi] whose candidate `at(a)` meets `limit`, by bisection (the resource falls as
        a grows; `at(hi)` must meet it)."""
        lo = 0.0
        for _ in range(steps):
            mid = (lo + hi) / 2
            if self.resource(at(mid)) <= limit:
                hi = mid
            else:
                lo = mid
        return hi

    # -- masks -------------------------------------------------------------------------------------
    def config_list(self, sparsities: np.ndarray) -> list[dict[str, Any]]:
        """The NNI config_list of a candidate: one entry per unit that loses channels."""
        q = self.quantise(np.asarray(sparsities, dtype=float))
        return [{"sparsity": float(s), "op_names": list(u.names)} for u, s in zip(self.units, q) if s > 0]

    def masks(self, sparsities: np.ndarray, shrink_only: bool = False) -> Masks:
        """Masks of a candidate by the base criterion (shrink_only: channels removed so far stay removed)."""
        cfg = self.config_list(sparsities)
        if not cfg:
            return copy.copy(self.session.masks) if shrink_only else Masks(self.session.graph)
        return self.session.compute_masks(ALGORITHMS[self.algorithm].criterion, config=cfg, shrink_only=shrink_only)

    def cut(self, sparsities: np.ndarray, i: int, limit: float, upto: float | None = None) -> np.ndarray | None:
        """`sparsities` with unit i raised by the fewest channels (up to `upto`, default its cap) that bring
        the resource to `limit`; None when even `upto` does not."""
        unit = self.units[i]
        lo = unit.removed(max(float(sparsities[i]), self.min_sparsity), self.round_to)
        hi = unit.removed(unit.cap if upto is None else upto, self.round_to)

        def at(r: int) -> np.ndarray:
            t = np.array(sparsities, dtype=float)
            t[i] = r / unit.n
            return t

        if self.resource(at(lo)) <= limit:
            return at(lo)
        if hi <= lo or self.resource(at(hi)) > limit:
            return None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.resource(at(mid)) <= limit:
                hi = mid
            else:
                lo = mid
        return at(hi)

    def sparsity_dict(self, sparsities: np.ndarray) -> dict[str, float]:
        return {u.name: round(float(s), 6) for u, s in zip(self.units, self.quantise(np.asarray(sparsities)))}


def _scale_kept(space: SearchSpace, sparsities: np.ndarray, limit: float) -> np.ndarray | None:
    """Sparsities 1 - (1 - s)^a with the smallest a >= 0 that meets `limit` (None: not even at the caps).

    The kept fractions are scaled geometrically, so a unit the search left whole stays whole and one it cut
    hard is cut further more slowly than a linear scaling of the sparsities would (that drives it to its cap)."""
    kept = np.clip(1 - sparsities, 1e-6, 1)

    def at(a: float) -> np.ndarray:
        return space.quantise(np.minimum(1 - kept ** a, space.caps))

    if space.resource(at(0.0)) <= limit:
        return at(0.0)
    hi = 1.0
    while space.resource(at(hi)) > limit:
        hi *= 2
        if hi > 1e3:
            return None
    return at(space.smallest(at, hi, limit, steps=30))


def _check_algorithm(algorithm: str, target: str) -> None:
    """The base criterion must score channels from weights; the budget a resource counted here."""
    if algorithm not in _CHANNEL_ALGOS:
        hint = ("it prunes single weights, which change neither shapes nor MACs"
                if algorithm in ALGORITHMS and ALGORITHMS[algorithm].unit == "weights"
                else "it is not a weight-scored channel criterion")
        raise ConfigError(f"pruning_algorithm={algorithm!r}: {hint}; the searches prune channels: use one of "
                          f"{', '.join(_CHANNEL_ALGOS)}")
    if target not in _TARGETS:
        raise ConfigError(f"target={target!r}: use 'params', 'flops' (= 'macs') or 'latency' (measured onnxruntime "
                          "latency on this machine)")


def budget_of(config_list: Sequence[dict[str, Any]]) -> float:
    """The one budget of a search's config_list: its `total_sparsity` (or `sparsity`), in (0, 1).

    Raises:
        ConfigError: no budget, several different ones, or one outside (0, 1).
    """
    if not isinstance(config_list, (list, tuple)) or not config_list:
        raise ConfigError("config_list must be a non-empty list like [{'total_sparsity': 0.5, 'op_types': ['Conv2d']}]")
    values = {e.get("total_sparsity", e.get("sparsity", e.get("sparsity_per_layer"))) for e in config_list
              if isinstance(e, dict) and not e.get("exclude")}
    values.discard(None)
    if len(values) != 1:
        raise ConfigError(f"config_list gives the budgets {sorted(values)}: a search takes one budget; give every "
                          "entry the same total_sparsity (the fraction of the resource to remove)")
    value = values.pop()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ConfigError(f"config_list total_sparsity={value!r}: give the fraction to remove, in (0, 1)")
    return float(value)


def _caps(config_list: Sequence[dict[str, Any]]) -> dict[str, float]:
    """max_sparsity_per_layer by layer name ('' = every layer); default 1.0 (a unit still keeps one channel)."""
    caps: dict[str, float] = {}
    for e in config_list:
        cap = e.get("max_sparsity_per_layer") if isinstance(e, dict) else None
        if isinstance(cap, dict):
            caps.update({k: float(v) for k, v in cap.items()})
        elif cap is not None:
            caps[""] = min(caps.get("", 1.0), float(cap))
    return caps


class ModelArg:
    """Marks where the model goes in an evaluator's arguments (survives pickling: compared by type)."""


@dataclass
class EvaluatorCall:
    """The user's evaluator bound to its extra arguments; picklable when the evaluator is."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self, model: torch.nn.Module) -> Any:
        if not self.args and not self.kwargs:
            return self.fn(model)
        return self.fn(*(model if isinstance(a, ModelArg) else a for a in self.args), **self.kwargs)


@dataclass
class _Eval:
    """One candidate to evaluate: its sparsities, masks (None: by the base criterion), starting weights
    (None: the dense ones), finetuner (None: the pruner's), and what the history records with it."""

    sparsities: np.ndarray
    phase: str
    masks: Masks | None = None
    state: dict[str, torch.Tensor] | None = None
    finetune: Callable[..., Any] | None = None
    keep_weights: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Job:
    """A candidate evaluation as plain data for an executor's worker, which prepares its own session."""

    token: str
    model: torch.nn.Module
    config: dict[str, Any]
    inputs: tuple[Any, ...]
    state: dict[str, torch.Tensor]
    keep: dict[tuple[str, int], np.ndarray]  # a slot of each group -> the group's keep vector
    weights: dict[str, torch.Tensor]
    evaluate: EvaluatorCall
    finetune: Callable[..., Any] | None
    sign: float
    keep_weights: bool


class _TraceGuard:
    """torch.fx tracing patches `nn.Module.__call__` for every thread of the process: while a worker thread
    traces, no other may run a model (and the reverse). Forwards share; a trace waits for them and excludes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._tracing = False

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._tracing)
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    @contextmanager
    def tracing(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._tracing and not self._running)
            self._tracing = True
        try:
            yield
        finally:
            with self._cond:
                self._tracing = False
                self._cond.notify_all()


_worker_sessions: dict[tuple[str, int], Session] = {}
_guard = _TraceGuard()


def _worker_session(job: _Job) -> Session:
    """The job's session in this worker (process or thread), prepared once per search."""
    key = (job.token, threading.get_ident())
    session = _worker_sessions.get(key)
    if session is None:
        with _guard.tracing():
            for k in [k for k in _worker_sessions if k[0] != job.token]:  # a new search: drop the old ones
                del _worker_sessions[k]
            session = _worker_sessions[key] = prepare(job.model, job.config, job.inputs)
    return session


def evaluate_job(job: _Job) -> tuple[float, dict[str, torch.Tensor] | None]:
    """Evaluate one candidate in an executor's worker: masks applied on the worker's own session, the
    finetuner (if any) run, the evaluator called. Returns (signed score, weights after fine-tuning or None)."""
    session = _worker_session(job)
    masks = Masks(session.graph, weights=dict(job.weights))
    for slot, keep in job.keep.items():
        masks.keep[session.graph.group_of[Slot(*slot)]] = keep
    with _guard.running():
        session.model.load_state_dict(job.state)
        session.apply(masks, shrink_only=False)
        if job.finetune is not None:
            job.finetune(session.model)
        score = job.sign * score_of(job.evaluate(session.model))
        keep = job.keep_weights or job.finetune is not None
        return score, copy.deepcopy(session.model.state_dict()) if keep else None


@dataclass
class _Candidate:
    id: int
    phase: str
    sparsities: dict[str, float]
    resource_ratio: float
    score: float | None
    accepted: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class SearchPruner:
    """What every search shares: the space, evaluation of a candidate, the history, `get_best_result()`.

    Subclasses implement `_search()`, calling `self._evaluate(sparsities, phase)` for each candidate.
    """

    name = "search"

    def __init__(self, model: torch.nn.Module, config_list: Sequence[dict[str, Any]],
                 evaluator: Callable[..., Any] | None, *, finetuner: Callable[..., Any] | None = None,
                 dummy_input: Any = None, pruning_algorithm: str = "l1", target: str = "params",
                 log_dir: str | os.PathLike[str] | None = ".", speedup: bool = False, optimize_mode: str = "maximize",
                 seed: int = 0, round_to: int = 1, min_sparsity: float = 0.0, executor: Executor | None = None) -> None:
        if evaluator is None or not callable(evaluator):
            raise InputError(f"{type(self).__name__} needs evaluator=f(model) -> float (higher is better): the search "
                             "compares candidates by it")
        if optimize_mode not in ("maximize", "minimize"):
            raise InputError(f"optimize_mode={optimize_mode!r}: use 'maximize' or 'minimize'")
        self.model, self.config_list, self.evaluator, self.finetuner = model, list(config_list), evaluator, finetuner
        self.dummy_input, self.algorithm, self.target, self.speedup = dummy_input, pruning_algorithm, target, speedup
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.sign = 1.0 if optimize_mode == "maximize" else -1.0
        self.seed, self.rng = seed, np.random.default_rng(seed)
        self._round_to, self._min_sparsity = round_to, min_sparsity
        if executor is not None and not callable(getattr(executor, "submit", None)):
            raise InputError(f"executor={type(executor).__name__}: give a concurrent.futures.Executor (e.g. "
                             "ProcessPoolExecutor(2)) or None to evaluate the candidates one after the other here")
        self.executor = executor
        self._budget = budget_of(self.config_list)  # checked now, before any evaluation
        _check_algorithm(pruning_algorithm, target)
        self.space: SearchSpace | None = None
        self.history: list[_Candidate] = []
        self.dense_score: float | None = None
        self._best: tuple[_Candidate, np.ndarray, Masks, dict[str, torch.Tensor] | None] | None = None
        self._result: CompileResult | None = None

    # -- calling the user's functions -------------------------------------------------------------
    def _evaluator_call(self) -> EvaluatorCall:
        """How the evaluator is called on a model (a picklable object, for executors)."""
        return EvaluatorCall(self.evaluator)

    def _call_evaluator(self, model: torch.nn.Module) -> Any:
        return self._evaluator_call()(model)

    def _call_finetuner(self, model: torch.nn.Module) -> None:
        self.finetuner(model)  # type: ignore[misc]

    def _score(self, model: torch.nn.Module) -> float:
        return self.sign * score_of(self._call_evaluator(model))

    # -- the run -----------------------------------------------------------------------------------
    def _setup(self) -> SearchSpace:
        score, seen = capture_and_score(self.model, self._call_evaluator)
        self.dense_score = self.sign * score
        inputs = self.dummy_input if self.dummy_input is not None else seen
        if inputs is None:
            raise InputError(f"{type(self).__name__}: the evaluator never called the model, so the example input is "
                             "unknown: pass dummy_input=torch.randn(1, ...) (the shape your model takes)")
        self.space = SearchSpace(self.model, self.config_list, inputs, self.algorithm, self.target, self._round_to,
                                 self._min_sparsity)
        return self.space

    def compress(self) -> None:
        """Run the search (the best candidate is kept for `get_best_result()`); the history goes to log_dir."""
        self.history, self._best, self._result, self._latency_steps = [], None, None, []
        self._token = uuid.uuid4().hex
        space = self._setup()
        try:
            with progress(None, self.name) as bar:
                self._bar = bar
                bar.set(score="-", best="-", kept="-", budget=round(1 - self._budget, 4))
                self._search(space)
                if space.end_to_end is not None and self._best is not None:
                    self._land_latency(space)
        finally:
            self._write_history()
        if self._best is None:
            raise FxPruneError(f"{type(self).__name__}: the search evaluated no candidate that meets the budget")

    def _search(self, space: SearchSpace) -> None:
        raise NotImplementedError

    def _land_latency(self, space: SearchSpace) -> None:
        """target='latency': the search chose by the table; measure its best end to end against the dense model
        and, while it misses the budget, scale its sparsities (`scale_to_budget`: same direction, another table
        limit) by `fxprune.latency.calibrate`. The chosen step is evaluated and becomes the best; every step is
        in `summary()["latency"]`."""
        assert space.end_to_end is not None and self._best is not None
        cand, sparsities, masks, weights = self._best
        state = weights if weights is not None else space.base_state
        session = space.session

        def solve(t: float) -> tuple[tuple[np.ndarray, Masks], float]:
            scaled = _scale_kept(space, np.asarray(sparsities, float), t * space.dense)
            if scaled is None:
                raise ConfigError(f"{_LATENCY_ARG}: the searched layers cannot go below {t:.3f} of the table")
            session.model.load_state_dict(state)
            session.apply(masks, shrink_only=False)  # more pruning keeps what the search removed
            more = bool(np.all(scaled >= space.quantise(np.asarray(sparsities, float)) - 1e-12))
            new = space.masks(scaled, shrink_only=more)
            session.model.load_state_dict(space.base_state)
            return (scaled, new), space.count(new) / space.dense

        target = 1 - self._budget
        (chosen, new), steps, best = calibrate(target, solve, lambda c: space.end_to_end.measure(c[1]),
                                               first=(target, (sparsities, masks), cand.resource_ratio))
        self._latency_steps, self._latency_chosen = [s.as_dict() for s in steps], best
        measured = {f"measured_{k}": v for k, v in steps[best].measured.as_dict().items() if k.endswith("ratio")}
        if best == 0:
            cand.extra.update(measured)
            return
        # the pruner's finetuner (NetAdapt's short-term one; none for SA without one) recovers what the step cut
        _, new_cand, weights = self._evaluate(chosen, "latency calibration", masks=new, state=state,
                                              keep_weights=True, **measured)
        new_cand.accepted = True
        self._best = (new_cand, chosen, new, weights)

    def _evaluate(self, sparsities: np.ndarray, phase: str, masks: Masks | None = None,
                  state: dict[str, torch.Tensor] | None = None, finetune: Callable[..., Any] | None = None,
                  keep_weights: bool = False, **extra: Any) -> tuple[float, _Candidate, dict[str, torch.Tensor] | None]:
        """Evaluate one candidate (see `_evaluate_many`) and record it."""
        e = _Eval(sparsities, phase, masks, state, finetune, keep_weights, extra)
        return self._record(e, next(self._outcomes([e])))

    def _evaluate_many(self, evals: list[_Eval]) -> list[tuple[float, _Candidate, dict[str, torch.Tensor] | None]]:
        """Evaluate independent candidates, through the executor when there is one (in parallel), and record
        them in order; a failure leaves the ones before it recorded."""
        return [self._record(e, out) for e, out in zip(evals, self._outcomes(evals))]

    def _outcomes(self, evals: list[_Eval]) -> Iterator[tuple[float, dict[str, torch.Tensor] | None]]:
        """(signed score, weights) of each candidate, in order: here, one after the other, or all submitted to
        the executor first (what is not collected is cancelled)."""
        space = self.space
        assert space is not None
        if self.executor is None:
            for e in evals:
                yield self._run_here(e)
            return
        futures = [self.executor.submit(evaluate_job, self._job(e)) for e in evals]
        try:
            for f in futures:
                yield f.result()
        finally:
            for f in futures:
                f.cancel()

    def _run_here(self, e: _Eval) -> tuple[float, dict[str, torch.Tensor] | None]:
        """Apply a candidate's masks on the session, fine-tune (on a copy of the weights), score, restore."""
        space = self.space
        assert space is not None
        session = space.session
        e.masks = space.masks(e.sparsities) if e.masks is None else e.masks
        session.model.load_state_dict(space.base_state if e.state is None else e.state)
        session.apply(e.masks, shrink_only=False)
        finetune = self.finetuner if e.finetune is None else e.finetune
        if finetune is not None:
            finetune(session.model)
        score = self._score(session.model)
        weights = copy.deepcopy(session.model.state_dict()) if e.keep_weights or finetune is not None else None
        session.model.load_state_dict(space.base_state)
        return score, weights

    def _job(self, e: _Eval) -> _Job:
        space = self.space
        assert space is not None
        e.masks = space.masks(e.sparsities) if e.masks is None else e.masks
        dg = space.session.graph
        keep = {tuple(dg.groups[gid].slots[0]): k for gid, k in e.masks.keep.items()}
        return _Job(self._token, space.source, space.prepare_config, space.session.example_inputs,
                    space.base_state if e.state is None else e.state, keep, dict(e.masks.weights),
                    self._evaluator_call(), self.finetuner if e.finetune is None else e.finetune, self.sign,
                    e.keep_weights)

    def _record(self, e: _Eval, outcome: tuple[float, dict[str, torch.Tensor] | None]
                ) -> tuple[float, _Candidate, dict[str, torch.Tensor] | None]:
        """Add an evaluated candidate to the history; keep it if it is the best within the budget so far."""
        space = self.space
        assert space is not None and e.masks is not None
        score, weights = outcome
        resource = space.count(e.masks)
        cand = _Candidate(len(self.history), e.phase, space.sparsity_dict(e.sparsities), resource / space.dense,
                          self.sign * score, extra=e.extra)
        self.history.append(cand)
        if resource <= space.limit * (1 + 1e-9) and (self._best is None or score > self.sign * (
                self._best[0].score or 0.0)):
            self._best = (cand, np.asarray(e.sparsities, dtype=float).copy(), e.masks, weights)
        best = self._best[0].score if self._best else None
        self._bar.update(score=self.sign * score, best=best if best is not None else "-",
                         kept=round(cand.resource_ratio, 4))
        return score, cand, weights

    # -- results -----------------------------------------------------------------------------------
    def _finish(self) -> CompileResult:
        if self._result is None:
            if self._best is None:
                raise FxPruneError(f"{type(self).__name__}.get_best_result(): call compress() first")
            space = self.space
            assert space is not None
            _, _, masks, weights = self._best
            if weights is not None:
                space.session.model.load_state_dict(weights)
            space.session.apply(masks, shrink_only=False)
            self._result = space.session.finish()
        return self._result

    def get_best_result(self) -> tuple[int, torch.nn.Module, Masks, float, list[dict[str, Any]]]:
        """NNI's 5-tuple `(task_id, model, masks, score, config_list)` of the best candidate.

        `model` is the masked model (speedup=False, NNI's default) or the physically pruned one; its
        weights are the fine-tuned ones when a finetuner ran. `config_list` gives each unit's sparsity.
        """
        result = self._finish()
        cand, sparsities, _, _ = self._best  # type: ignore[misc]
        assert self.space is not None
        model = result.model if self.speedup else result.masked_model
        return cand.id, model, result.masks, float(cand.score), self.space.config_list(sparsities)

    @property
    def result(self) -> CompileResult:
        """The best candidate, finished: pruned model, masks, report (`CompileResult`)."""
        return self._finish()

    # -- history -----------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Numbers of the search as a whole (subclasses add theirs, e.g. SA's acceptance rate)."""
        best = self._best[0] if self._best else None
        out = {"pruner": type(self).__name__, "budget": self._budget, "target": self.target,
               "dense_score": None if self.dense_score is None else self.sign * self.dense_score,
               "candidates": len(self.history), "best_id": best.id if best else None,
               "best_score": best.score if best else None, "seed": self.seed}
        if getattr(self, "_latency_steps", None):  # the table's estimate next to the end-to-end measurement
            out["latency"] = {"kept_budget": 1 - self._budget, "steps": self._latency_steps,
                              "chosen_step": self._latency_chosen}
        return out

    def _write_history(self) -> None:
        if self.log_dir is None:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        rows = [{"id": c.id, "phase": c.phase, "score": c.score, "resource_ratio": c.resource_ratio,
                 "accepted": c.accepted, **c.extra, "sparsities": c.sparsities} for c in self.history]
        best = self._best
        payload = {**self.summary(), "history": rows,
                   "best": None if best is None else {"id": best[0].id, "score": best[0].score,
                                                      "config_list": self.space.config_list(best[1])}}
        (self.log_dir / "search_history.json").write_text(json.dumps(payload, indent=2, default=float))
        names = [u.name for u in self.space.units] if self.space else []
        extras = sorted({k for c in self.history for k in c.extra})
        with open(self.log_dir / "search_history.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "phase", "score", "resource_ratio", "accepted", *extras, *names])
            for c in self.history:
                w.writerow([c.id, c.phase, c.score, f"{c.resource_ratio:.6f}", c.accepted,
                            *(c.extra.get(k) for k in extras), *(c.sparsities.get(n) for n in names)])
        self._plot()

    def _plot(self) -> None:
        from ..figures import PlotUnavailable, plot_scatter

        points = [(c.resource_ratio, c.score) for c in self.history if c.score is not None]
        if not points:
            return
        best = self._best[0] if self._best else None
        dense = None if self.dense_score is None else ("dense", self.sign * self.dense_score)
        try:
            plot_scatter(points, f"{self.target} kept (fraction of the dense model)", "score",
                         self.log_dir / "search_history.png", title=f"{type(self).__name__}: every candidate",
                         chosen=None if best is None else (best.resource_ratio, best.score),
                         limit=1 - self._budget, reference=dense)
        except PlotUnavailable as exc:
            _log.info("no search_history.png: %s", exc)


# -- simulated annealing ------------------------------------------------------------------------------


class SimulatedAnnealingPruner(SearchPruner):
    """NNI's SimulatedAnnealingPruner (v2 signatures; old API `finetuner=`, `dummy_input=` and the v2.9
    keyword form): a guided annealing search over per-layer sparsities.

    Init: NNI's guided prior (sorted random sparsities, the largest to the largest unit) with a rising
    lower bound, scaled to the budget. Each step perturbs the current sparsities by U(-m, m) with
    m = T / T0 * perturbation_magnitude, scales back to the budget, evaluates (finetuner first, if
    given); a better candidate is always accepted, a worse one with p = exp(-dE / T), dE = the score drop
    in basis points of the dense score; T *= cool_down_rate on each acceptance, until T < stop_temperature
    (or `max_rejections` worse candidates in a row are rejected).

    Extra keywords: `target` ('params' | 'flops' | 'latency'), `seed` (every random draw), `max_rejections`.
    """

    name = "simulated annealing"

    def __init__(self, model: torch.nn.Module, config_list: list[dict[str, Any]],
                 evaluator: Callable[[torch.nn.Module], float] | None = None, start_temperature: float = 100,
                 stop_temperature: float = 20, cool_down_rate: float = 0.9, perturbation_magnitude: float = 0.35,
                 pruning_algorithm: str = "l1", pruning_params: dict[str, Any] | None = None,
                 log_dir: str | os.PathLike[str] | None = ".", keep_intermediate_result: bool = False,
                 finetuner: Callable[[torch.nn.Module], None] | None = None, speedup: bool = False,
                 dummy_input: Any = None, *, target: str = "params", seed: int = 0, max_rejections: int = 50,
                 optimize_mode: str = "maximize", executor: Executor | None = None) -> None:
        if not 0 < cool_down_rate < 1:
            raise InputError(f"cool_down_rate={cool_down_rate}: it must be in (0, 1), e.g. 0.9 (T *= rate per "
                             "accepted candidate)")
        if not start_temperature > stop_temperature > 0:
            raise InputError(f"start_temperature={start_temperature}, stop_temperature={stop_temperature}: the "
                             "search cools from start down to stop; give start_temperature > stop_temperature > 0")
        if not 0 < perturbation_magnitude <= 1:
            raise InputError(f"perturbation_magnitude={perturbation_magnitude}: give a sparsity step in (0, 1]")
        if max_rejections < 1:
            raise InputError(f"max_rejections={max_rejections}: give at least 1")
        super().__init__(model, config_list, evaluator, finetuner=finetuner, dummy_input=dummy_input,
                         pruning_algorithm=pruning_algorithm, target=target, log_dir=log_dir, speedup=speedup,
                         optimize_mode=optimize_mode, seed=seed, executor=executor)
        self.start_temperature, self.stop_temperature = float(start_temperature), float(stop_temperature)
        self.cool_down_rate, self.perturbation_magnitude = float(cool_down_rate), float(perturbation_magnitude)
        self.max_rejections = max_rejections

    def _guided(self, space: SearchSpace, values: np.ndarray) -> np.ndarray:
        """Sorted values to units sorted by size (largest unit <- largest sparsity), scaled to the budget."""
        order = np.argsort([u.size for u in space.units], kind="stable")
        out = np.zeros(len(values))
        out[order] = np.sort(values)
        return out

    def _init(self, space: SearchSpace) -> np.ndarray:
        low = 0.0
        for _ in range(200):
            low += 0.05 * (1 - low)
            cand = space.scale_to_budget(self._guided(space, self.rng.uniform(low, 1, len(space.units))))
            if cand is not None:
                return cand
        raise FxPruneError("simulated annealing: no initial candidate meets the budget; lower total_sparsity")

    def _perturb(self, space: SearchSpace, current: np.ndarray, temperature: float) -> np.ndarray:
        mag = temperature / self.start_temperature * self.perturbation_magnitude
        for _ in range(200):
            cand = space.scale_to_budget(np.maximum(current + self.rng.uniform(-mag, mag, len(current)), 0))
            if cand is not None:
                return cand
        return current.copy()

    def _search(self, space: SearchSpace) -> None:
        temperature = self.start_temperature
        current = self._init(space)
        current_score, cand, _ = self._evaluate(current, "init", temperature=temperature)
        cand.accepted = True
        rejections = 0
        while temperature >= self.stop_temperature and rejections < self.max_rejections:
            proposal = self._perturb(space, current, temperature)
            score, cand, _ = self._evaluate(proposal, "perturb", temperature=temperature)
            delta = 1e4 * (current_score - score) / max(abs(self.dense_score or 0.0), 1e-12)
            p = 1.0 if delta <= 0 else math.exp(-delta / temperature)
            cand.extra["p_accept"] = p
            cand.accepted = bool(delta <= 0 or self.rng.uniform() < p)
            if cand.accepted:
                current, current_score, rejections = proposal, score, 0
                temperature *= self.cool_down_rate
            else:
                rejections += 1
        if rejections >= self.max_rejections:
            _log.warning("simulated annealing stopped after %d rejections in a row at T=%.3g", rejections, temperature)

    def summary(self) -> dict[str, Any]:
        steps = [c for c in self.history if c.phase == "perturb"]
        rate = sum(bool(c.accepted) for c in steps) / len(steps) if steps else None
        return {**super().summary(), "acceptance_rate": rate, "start_temperature": self.start_temperature,
                "stop_temperature": self.stop_temperature, "cool_down_rate": self.cool_down_rate}


# -- NetAdapt -------------------------------------------------------------------------------------------


class NetAdaptPruner(SearchPruner):
    """NNI's v1 NetAdaptPruner: greedy, one unit per iteration, until the budget is met.

    Each iteration asks, for every unit, for the fewest extra channels that save the next step of the
    budget (`sparsity_per_iteration` of the dense resource, counted through the dependency graph: the
    next layers' input channels go too), short-term fine-tunes each proposal from the current weights,
    and keeps the best proposal with its fine-tuned weights. When no unit alone can save a whole step,
    the step shrinks to the most any unit can save; when none can save anything the search ends (it
    always ends: every iteration removes at least one channel).
    """

    name = "NetAdapt"

    def __init__(self, model: torch.nn.Module, config_list: list[dict[str, Any]],
                 short_term_fine_tuner: Callable[[torch.nn.Module], None] | None = None,
                 evaluator: Callable[[torch.nn.Module], float] | None = None, optimize_mode: str = "maximize",
                 base_algo: str = "l1", sparsity_per_iteration: float = 0.05,
                 experiment_data_dir: str | os.PathLike[str] | None = "./", *, dummy_input: Any = None,
                 target: str = "params", seed: int = 0, speedup: bool = False,
                 executor: Executor | None = None) -> None:
        if not 0 < sparsity_per_iteration < 1:
            raise InputError(f"sparsity_per_iteration={sparsity_per_iteration}: give the step in (0, 1), e.g. 0.05")
        super().__init__(model, config_list, evaluator, finetuner=short_term_fine_tuner, dummy_input=dummy_input,
                         pruning_algorithm=base_algo, target=target, log_dir=experiment_data_dir, speedup=speedup,
                         optimize_mode=optimize_mode, seed=seed, executor=executor)
        self.sparsity_per_iteration = float(sparsity_per_iteration)

    def compress(self) -> torch.nn.Module:  # type: ignore[override]
        """Run the search; returns the masked model with the chosen masks (NNI v1 returns the wrapped model)."""
        super().compress()
        return self.get_best_result()[1]

    def _search(self, space: SearchSpace) -> None:
        current = np.zeros(len(space.units))
        state = space.base_state
        step = self.sparsity_per_iteration * space.dense
        resource = space.dense
        iteration = 0
        while resource > space.limit * (1 + 1e-9):
            limit = max(resource - step, space.limit)
            proposals = [(i, p) for i in range(len(space.units))
                         if (p := space.cut(current, i, limit)) is not None]
            if not proposals:  # no unit alone saves a whole step: take the most any unit can save
                best_saving = [(resource - space.resource(np.where(np.arange(len(current)) == i,
                                                                   space.units[i].cap, current)), i)
                               for i in range(len(current))]
                saving, _ = max(best_saving)
                if saving <= 0:
                    _log.warning("NetAdapt: no unit can lose another channel; stopping above the budget")
                    break
                limit = resource - saving
                proposals = [(i, p) for i in range(len(space.units))
                             if (p := space.cut(current, i, limit)) is not None]
            self._best = None  # only the last iteration's candidates meet the final budget
            base_masks = self._masks_from(space, current, state)
            chosen = None
            evals = [_Eval(proposal, f"iteration {iteration}", self._masks_from(space, proposal, state, base_masks),
                           state, keep_weights=True, extra={"unit": space.units[i].name, "iteration": iteration})
                     for i, proposal in proposals]
            for e, (score, cand, weights) in zip(evals, self._evaluate_many(evals)):  # independent: fanned out
                if chosen is None or score > chosen[0]:
                    chosen = (score, e.sparsities, weights, cand, e.masks)
            assert chosen is not None
            score, current, state, cand, masks = chosen
            cand.accepted = True
            self._chosen = (cand, current, masks, state)
            resource = space.count(masks)
            iteration += 1
        if getattr(self, "_chosen", None) is not None:
            self._best = self._chosen

    def _masks_from(self, space: SearchSpace, sparsities: np.ndarray, state: dict[str, torch.Tensor],
                    previous: Masks | None = None) -> Masks:
        """Masks scored on the current (fine-tuned) weights; channels removed earlier stay removed."""
        session = space.session
        session.model.load_state_dict(state)
        session.apply(previous if previous is not None else Masks(session.graph), shrink_only=False)
        return space.masks(sparsities, shrink_only=previous is not None)


# -- Sensitivity ----------------------------------------------------------------------------------------


class SensitivityPruner(SearchPruner):
    """NNI's v1 SensitivityPruner: per-unit accuracy curves, allocation from the curves, rounds.

    Each round: for every selected unit (the config's op_types/op_names are honoured), prune it alone at
    sparsities 0.1, 0.2, ... (of what it has left) and evaluate, stopping once the score drops more than
    `acc_drop_threshold` below the round's starting score; the unit's safe ratio is the largest tested
    sparsity within the threshold. The round removes `sparsity_per_iter` of the dense resource (the last
    round: down to the budget) with per-unit sparsities proportional to the safe ratios (scaled to meet
    the step, capped at 0.95), then fine-tunes (if a finetuner is given) and starts the next round.

    `compress(eval_args=[model], finetune_args=[model])`: NNI calls `evaluator(*eval_args)`; fxprune
    substitutes the pruned model for your model in those arguments. Returns the masked model; the masks
    are `pruner.masks` and the config list `pruner.config_list_result` (also written to checkpoint_dir).
    """

    name = "sensitivity"

    def __init__(self, model: torch.nn.Module, config_list: list[dict[str, Any]],
                 evaluator: Callable[..., float] | None = None, finetuner: Callable[..., None] | None = None,
                 base_algo: str = "l1", sparsity_proportion_calc: Callable[..., Any] | None = None,
                 sparsity_per_iter: float = 0.1, acc_drop_threshold: float = 0.05,
                 checkpoint_dir: str | os.PathLike[str] | None = None, *, dummy_input: Any = None,
                 target: str = "params", speedup: bool = False, executor: Executor | None = None) -> None:
        if not 0 < sparsity_per_iter < 1:
            raise InputError(f"sparsity_per_iter={sparsity_per_iter}: give the per-round step in (0, 1), e.g. 0.1")
        if acc_drop_threshold < 0:
            raise InputError(f"acc_drop_threshold={acc_drop_threshold}: give the allowed score drop, >= 0")
        super().__init__(model, config_list, evaluator, finetuner=None, dummy_input=dummy_input,
                         pruning_algorithm=base_algo, target=target, log_dir=checkpoint_dir, speedup=speedup,
                         executor=executor)
        self._round_finetuner = finetuner
        self.sparsity_proportion_calc = sparsity_proportion_calc
        self.sparsity_per_iter, self.acc_drop_threshold = float(sparsity_per_iter), float(acc_drop_threshold)
        self.sensitivities: list[dict[str, dict[float, float]]] = []
        self._args: tuple[list[Any], dict[str, Any], list[Any], dict[str, Any]] = ([], {}, [], {})

    def _swap(self, args: list[Any], model: torch.nn.Module) -> list[Any]:
        return [model if a is self.model else a for a in args]

    def _evaluator_call(self) -> EvaluatorCall:
        args, kwargs = self._args[0], self._args[1]
        return EvaluatorCall(self.evaluator, tuple(ModelArg() if a is self.model else a for a in args), dict(kwargs))

    def _finetune(self, model: torch.nn.Module) -> None:
        args, kwargs = self._args[2], self._args[3]
        ft = self._round_finetuner
        assert ft is not None
        ft(*self._swap(args, model), **kwargs) if args or kwargs else ft(model)

    def compress(self, eval_args: list[Any] | None = None, eval_kwargs: dict[str, Any] | None = None,  # type: ignore[override]
                 finetune_args: list[Any] | None = None, finetune_kwargs: dict[str, Any] | None = None,
                 resume_sensitivity: Any = None) -> torch.nn.Module:
        """Run the rounds; returns the masked model (the pruned one with speedup=True)."""
        self._args = (list(eval_args or []), dict(eval_kwargs or {}), list(finetune_args or []),
                      dict(finetune_kwargs or {}))
        super().compress()
        result = self._finish()
        self.masks = result.masks
        self.config_list_result = self.get_best_result()[4]
        if self.log_dir is not None:
            torch.save(result.masks.to_nni(), self.log_dir / "masks.pth")
            (self.log_dir / "config_list.json").write_text(json.dumps(self.config_list_result, indent=2))
        return result.model if self.speedup else result.masked_model

    def _search(self, space: SearchSpace) -> None:
        session = space.session
        current = np.zeros(len(space.units))
        state = space.base_state
        masks = Masks(session.graph)
        resource = space.dense
        round_ = 0
        while resource > space.limit * (1 + 1e-9):
            session.model.load_state_dict(state)
            session.apply(masks, shrink_only=False)
            start = self._score(session.model)
            curves, safe = self._analyse(space, current, state, masks, start, round_)
            self.sensitivities.append(curves)
            if self.sparsity_proportion_calc is not None:
                safe = np.asarray(self.sparsity_proportion_calc(curves, self.acc_drop_threshold, current), float)
            if not safe.any():
                _log.warning("sensitivity round %d: every unit drops more than acc_drop_threshold at 0.1; "
                             "allocating uniformly", round_)
                safe = np.ones(len(space.units))
            limit = max(resource - self.sparsity_per_iter * space.dense, space.limit)
            # Proportional to the safe ratios, of what each unit has left; at most 0.95 of it per round.
            direction = np.minimum(safe, 0.95)
            extra = self._scale(space, current, direction, limit)
            if extra is None:
                extra = self._scale(space, current, np.ones(len(space.units)), limit)
            if extra is None:
                _log.warning("sensitivity: the units cannot lose more; stopping above the budget")
                break
            current = extra
            masks = self._masks_from(space, current, state, masks)
            session.model.load_state_dict(state)
            session.apply(masks, shrink_only=False)
            if self._round_finetuner is not None:
                self._finetune(session.model)
            state = copy.deepcopy(session.model.state_dict())
            self._best = None
            score, cand, _ = self._evaluate(current, f"round {round_}", masks=masks, state=state,
                                            finetune=_no_finetune, keep_weights=True, round=round_)
            cand.accepted = True
            resource = space.count(masks)
            round_ += 1

    def _analyse(self, space: SearchSpace, current: np.ndarray, state: dict[str, torch.Tensor], masks: Masks,
                 start: float, round_: int) -> tuple[dict[str, dict[float, float]], np.ndarray]:
        """Each unit's curve: pruned alone at 0.1, 0.2, ... of what it has left until the score drops more than
        the threshold. The units are independent: each step evaluates every unit still going (in parallel
        with an executor); the history records them unit after unit, as a serial analysis would."""
        steps = np.arange(1, 10) / 10
        outcomes: dict[tuple[int, int], tuple[_Eval, tuple[float, dict[str, torch.Tensor] | None]]] = {}
        going = list(range(len(space.units)))
        safe = np.zeros(len(space.units))
        try:
            for k, s in enumerate(steps):
                wave = []
                for i in going:
                    trial = current.copy()
                    trial[i] = current[i] + (1 - current[i]) * s
                    if trial[i] <= space.units[i].cap:
                        e = _Eval(trial, f"analysis {round_}", self._masks_from(space, trial, state, masks), state,
                                  _no_finetune, extra={"unit": space.units[i].name, "round": round_})
                        wave.append((i, e))
                for (i, e), out in zip(wave, self._outcomes([e for _, e in wave])):
                    outcomes[i, k] = (e, out)
                going = []
                for i, _ in wave:
                    if start - outcomes[i, k][1][0] <= self.acc_drop_threshold:
                        safe[i] = s
                        going.append(i)
        finally:
            curves: dict[str, dict[float, float]] = {}
            for i, unit in enumerate(space.units):
                curves[unit.name] = {}
                for k, s in enumerate(steps):
                    if (i, k) not in outcomes:
                        break
                    score, _, _ = self._record(*outcomes[i, k])
                    curves[unit.name][float(s)] = self.sign * score
        return curves, safe

    @staticmethod
    def _scale(space: SearchSpace, current: np.ndarray, direction: np.ndarray, limit: float) -> np.ndarray | None:
        """current + (1 - current) * a * direction with the smallest a that meets `limit` (None: cannot)."""
        def at(a: float) -> np.ndarray:
            return np.minimum(current + (1 - current) * np.minimum(a * direction, 0.95), space.caps)

        hi = 1 / max(float(direction.max()), 1e-12)
        if space.resource(at(hi)) > limit * (1 + 1e-9):
            return None
        return space.quantise(at(space.smallest(at, hi, limit)))

    _masks_from = NetAdaptPruner._masks_from


def _no_finetune(model: torch.nn.Module) -> None:
    """Sensitivity analysis evaluates without fine-tuning (NNI's does too)."""
