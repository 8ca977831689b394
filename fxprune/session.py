"""A pruning session: the unit every algorithm works in.

    session = fxprune.prepare(model, config, example_inputs)   # trace once; masks buffers for every group
    stats = session.collect(data, loss=loss_fn, batches=20)     # probe pass, when a criterion needs data
    session.apply(session.compute_masks("l1", stats))           # rewrite the mask buffers in place
    ...                                                         # fine-tune session.model, apply again
    result = session.finish()                                   # speedup, verify, report: once

`prepare` traces a copy of the model (the user's model is never modified), builds the dependency
graph, selects the layers the config's rules name, measures the dense baseline for the report, and
inserts a mask node with an all-ones buffer at every place where the channels of a selectable group
are consumed. `session.model` is that masked model: an ordinary trainable GraphModule. `apply`
writes new masks into the buffers without tracing again; by default masks only shrink what is kept
(a channel removed once stays removed). `finish` removes the channels physically and checks that the
small model computes what the masked one does.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn.utils.parametrize as parametrize

from .budget import budget_masks
from .config import Config, parse_config
from .errors import FxPruneError, InputError, UnsupportedError, node_context
from .graph import BuildOptions, DependencyGraph, Slot, op_name, spelling
from .importance import CRITERIA, Stats, WeightSums
from .latency import EndToEnd, cost_model, latency_budget_masks
from .layers import Layer, select_layers
from .masks import Masks, Scorer, compute_masks, magnitude_masks, promote_zero_channels
from .passes.mask import WeightMask, insert_masks, update_masks
from .passes.probe import insert_probes, remove_probes
from .passes.speedup import detach_shared, new_shapes, speedup_pass
from .passes.trace import check_inputs, set_training, trace
from .passes.verify import verify
from .report import Baseline, Report, build_report
from .rules.layers import HIDDEN_REASON
from .training import call_model, split_batch
from .writeback import apply_to

__all__ = ["Session", "prepare", "analyze", "CompileResult"]


@dataclass
class CompileResult:
    """What `compile` (and `Session.finish`) returns.

    Attributes:
        model: the physically pruned GraphModule (same train/eval flags as the input model).
        masked_model: the traced model with mask nodes: trainable, same shapes as the input.
        masks: per group, which channels are kept.
        report: channels, params and MACs before/after, frozen groups, timings.
        example_inputs: the inputs the model was traced and verified with.
    """

    model: torch.fx.GraphModule
    masked_model: torch.fx.GraphModule
    masks: Masks
    report: Report
    example_inputs: tuple[Any, ...]

    def export_onnx(self, path: str, **kwargs: Any) -> Any:
        """Export the pruned model to ONNX and check it in onnxruntime (see `fxprune.export_onnx`)."""
        from .passes.export import export_onnx

        return export_onnx(self.model, self.example_inputs, path, **kwargs)

    def apply_to(self, model: torch.nn.Module) -> torch.nn.Module:
        """Shrink `model` (the one this was compiled from) in place to `self.model`, all or nothing, and check
        its own forward against `self.model` (see `fxprune.writeback.apply_to`). Returns `model`."""
        return apply_to(model, self)


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def analyze(model: torch.nn.Module, example_inputs: Any, config: Any = None, timings: dict[str, float] | None = None,
            *, codegen: bool = True) -> tuple[torch.fx.GraphModule, DependencyGraph]:
    """Trace a copy of `model` and build its channel-dependency graph (front end and options from `config`;
    the time of each step into `timings`; `codegen` as in `fxprune.passes.trace.trace`)."""
    cfg = parse_config(config) if config is not None else None
    timings = {} if timings is None else timings
    with _timed(timings, "trace"):
        gm = trace(model, example_inputs, cfg.frontend if cfg else "auto", codegen=codegen)
    with _timed(timings, "analyze"):
        options = BuildOptions(split=cfg.attention or "heads", prune_hidden=cfg.prune_hidden) if cfg else None
        dg = DependencyGraph.build(gm, options)
    if dg.unsupported:
        warnings.warn(dg.unsupported_message(), stacklevel=3)
    return gm, dg


_ATTENTION_OPS = ("softmax", "_softmax", "scaled_dot_product_attention", "MultiheadAttention")


def _check_requests(dg: DependencyGraph, cfg: Config) -> None:
    """What the config asks for explicitly (hidden size, heads) must be prunable: else say where and why."""
    if cfg.prune_hidden:
        hidden = [g for g in dg.groups if "hidden" in g.roles]
        if not any(g.prunable.any() for g in hidden):
            reasons = sorted({r for g in hidden for r in g.reasons})[:4] or ["no LayerNorm/RMSNorm/embedding found"]
            raise UnsupportedError(
                "prune_hidden=True, but the hidden size cannot be pruned here: " + "; ".join(reasons) +
                ".\nPrunable: FFN channels and attention heads (drop prune_hidden); the hidden size needs a "
                "model whose outputs do not carry it (e.g. a task head instead of the base model).")
    if cfg.attention is not None and not any(g.prunable.any() for g in dg.groups if cfg.attention in g.roles):
        attn = [n for n in dg.gm.graph.nodes if n.op in ("call_module", "call_function", "call_method")
                and op_name(spelling(n, dg.gm)) in _ATTENTION_OPS]
        where = node_context(attn[0]) if attn else "any node (no softmax or attention op in the graph)"
        raise UnsupportedError(
            f"attention={cfg.attention!r}, but no attention {cfg.attention} are prunable: fxprune does not "
            f"understand the attention at {where}\n(its q/k/v views or its op have no rule that splits "
            "channels into heads). Prunable: the other layers' output channels (FFN); not prunable: the "
            "heads there. Drop 'attention' to prune the rest, or write the attention with view/reshape into "
            "heads or F.scaled_dot_product_attention.")


def _hidden_estimate(dg: DependencyGraph, layers: list[Layer], report: Report) -> str:
    """How much more prune_hidden=True would remove, estimated without a second trace: the groups kept for the
    hidden-size reason alone lose the sparsity of the layers that read or write them, on top of what those layers
    kept; params of norms and embeddings in them lose the largest sparsity asked for. An estimate: prune_hidden
    also changes how the norms and means over it couple, and the sparsity applies per group."""
    # a norm's input (the residual stream, role "hidden") and its output are two groups, both kept for this reason
    candidates = {g.id for g in dg.groups if not g.prunable.any() and g.has_param.any() and g.reasons
                  and all(r.startswith(HIDDEN_REASON) for r in g.reasons)}
    rated = [layer for layer in layers if layer.rule is not None]
    if not candidates or not rated or not report.macs_before:
        return ""
    top = max(layer.rule.target for layer in rated)
    stats = {s.name: s for s in report.layers}
    macs = params = 0.0
    seen: set[str] = set()
    for layer in rated:
        key = layer.slot.tensor
        if layer.name in stats and any(dg.group_of.get(Slot(key, d)) in candidates for d in range(len(dg.shapes[key]))):
            macs += stats[layer.name].macs_after * layer.rule.target
            params += stats[layer.name].params_after * layer.rule.target
            seen.update(f"@{layer.name}.{n}" for n, _ in dg.gm.get_submodule(layer.name).named_parameters())
    for gid in candidates:
        for slot in dg.groups[gid].param_slots():
            if slot.tensor not in seen:
                seen.add(slot.tensor)
                params += math.prod(dg.shapes[slot.tensor]) * top
    return (f"hidden size kept: prune_hidden=True would also remove about {100 * macs / report.macs_before:.0f}% of "
            f"MACs ({100 * params / max(report.params_before, 1):.0f}% of params), estimated")


def _notes(dg: DependencyGraph, masks: Masks, cfg: Config, layers: list[Layer] | None = None,
           report: Report | None = None) -> list[str]:
    """What the report must say about semantics and about the transformer dims it kept or pruned."""
    notes = []
    hidden = [g for g in dg.groups if "hidden" in g.roles]
    if any(g.id in masks.keep and not masks.keep[g.id].all() for g in hidden):
        notes.append("hidden size pruned: norms and means over it use the kept channels only; the pruned model "
                     "equals the masked model (verified), not the dense model with those channels zeroed")
    elif hidden and not cfg.prune_hidden:
        notes.append("hidden size kept: set prune_hidden=True to prune it")
        estimate = _hidden_estimate(dg, layers or [], report) if report is not None else ""
        if estimate:
            notes.append(estimate)
    role = cfg.attention or "heads"
    heads = [g for g in dg.groups if role in g.roles and g.id in masks.keep]
    if heads:
        notes.append(f"attention {role}: {sum(int((~masks.keep[g.id]).sum()) for g in heads)} units removed in "
                     f"{len(heads)} group(s)")
    return notes


def _why_kept(dg: DependencyGraph, layer: Layer) -> str:
    """Why a selected layer lost no channel: excluded, frozen (and by what), or a sparsity that rounds to 0."""
    if layer.excluded:
        return "excluded by an 'exclude' rule"
    group = dg.groups[dg.group_of[layer.slot]]
    if not group.prunable.any():
        return "kept whole: " + ("; ".join(group.reasons[:2]) or "no parameter owns its channels")
    sparsity = layer.rule.target if layer.rule is not None else 0.0
    n = int(group.prunable.sum())
    if sparsity * n < 1:
        return f"sparsity {sparsity:g} of its {n} prunable channel(s) rounds to zero"
    return "every tensor of its group would lose more than the sparsity allows (a concat input or split window)"


class Session:
    """One pruning run over one traced model. Build it with `fxprune.prepare`.

    Attributes:
        model: the masked, trainable GraphModule (the user's model is untouched).
        graph: the channel-dependency graph of `model`.
        config: the validated config.
        layers: the layers the config's rules select or exclude.
        masks: the masks applied so far.
        example_inputs: the inputs the model was traced and will be verified with.
        timings: seconds per step (trace, analyze, ..., speedup, verify, report).
    """

    def __init__(self, model: torch.fx.GraphModule, graph: DependencyGraph, config: Config, layers: list[Layer],
                 example_inputs: tuple[Any, ...], baseline: Baseline, timings: dict[str, float]) -> None:
        self.model, self.graph, self.config, self.layers = model, graph, config, layers
        self.example_inputs, self.timings = example_inputs, timings
        self._end_to_end: EndToEnd | None = None  # the dense export a latency budget measures against (once)
        self.masks = Masks(graph)
        self._baseline = baseline
        self._finished = False

    @classmethod
    def start(cls, gm: torch.fx.GraphModule, dg: DependencyGraph, cfg: Config, layers: list[Layer],
              inputs: tuple[Any, ...], maskable: set[int], timings: dict[str, float]) -> Session:
        """A session on a model already traced and analysed (`analyze`): measure the dense baseline and insert
        masks for the prunable groups among `maskable`. `prepare` is analyze + select_layers + this."""
        with _timed(timings, "mask pass"):
            baseline = Baseline.measure(gm, dg)
            insert_masks(gm, Masks(dg), {gid for gid in maskable if dg.groups[gid].prunable.any()})
        return cls(gm, dg, cfg, layers, inputs, baseline, timings)

    # -- scoring ---------------------------------------------------------------------------------
    def compute_masks(self, criterion: str | None = None, stats: Stats | None = None, config: Any = None,
                      *, shrink_only: bool = True) -> Masks:
        """Masks from a criterion (default: the config's algorithm's) under the config's rules.

        Args:
            criterion: a name in `fxprune.importance.CRITERIA`, or "magnitude" for single weights (Level).
            stats: what `collect`/`probe` gathered, for criteria that need activations or gradients.
            config: other rules for this step (a config, dict or NNI config_list on the same model), e.g. a
                round's sparsity; default: the session's config.
            shrink_only: channels removed by the masks applied so far stay removed and count towards the
                sparsity.

        Raises:
            FxPruneError: the criterion needs statistics that `stats` does not hold.
        """
        cfg = self.config if config is None else _step_config(self.config, config)
        layers = self.layers if config is None else select_layers(self.graph, cfg)
        criterion = criterion or cfg.algorithm.criterion
        if criterion == "magnitude":
            masks = magnitude_masks(self.graph, cfg, layers)
            if shrink_only:
                for name, keep in self.masks.weights.items():
                    masks.weights[name] = masks.weights.get(name, keep) & keep
            return masks
        score = self.scorer(criterion, stats)
        previous = self.masks if shrink_only else None
        if cfg.budget is not None and "latency" in cfg.budget:  # table + end-to-end calibration (fxprune.latency)
            e2e = None
            if cfg.options.get("latency_calibration", True):
                if self._end_to_end is None:
                    self._end_to_end = EndToEnd(self.model, self.graph, self.example_inputs)
                e2e = self._end_to_end
            return latency_budget_masks(self.graph, cfg, layers, score, previous, e2e)
        if cfg.budget is not None:  # channels by importance per unit of a resource (fxprune.budget)
            return budget_masks(self.graph, cfg, layers, score, cost_model(next(iter(cfg.budget)), self.graph),
                                previous)
        return compute_masks(self.graph, cfg, layers, score, previous)

    def scorer(self, criterion: str, stats: Stats | None = None) -> Scorer:
        """The criterion bound to this session's graph and statistics: `score(group, slots)`, as
        `fxprune.masks.compute_masks` takes it. It reads each weight once (L1, L2): score with it while the
        weights do not change, and ask for a new one after training.

        Raises:
            FxPruneError: an unknown criterion, or one that needs statistics `stats` does not hold.
        """
        if criterion not in CRITERIA:
            raise FxPruneError(f"unknown criterion {criterion!r}; known: magnitude, {', '.join(CRITERIA)}")
        crit = CRITERIA[criterion]
        if crit.needs - {"weights"} and stats is None:
            raise FxPruneError(f"criterion {criterion!r} needs {', '.join(sorted(crit.needs))}: collect them first "
                               "with session.collect(data, loss=..., batches=N) or session.probe(...)")
        # Activations are observed at the activation after each selected layer, not in its weight slot: in
        # NNI's normal mode too, a layer is scored by what was probed in its group (its own activation).
        own = "activations" not in crit.needs

        sums = WeightSums(max((math.prod(self.graph.shapes[s.tensor]) for g in self.graph.groups if g.prunable.any()
                               for s in g.param_slots()), default=0))  # the largest weight it may score

        def score(group: Any, slots: Any) -> torch.Tensor:
            with sums:
                return crit.fn(self.graph, group, stats, slots if own else None)

        return score

    # -- applying --------------------------------------------------------------------------------
    def apply(self, masks: Masks, *, shrink_only: bool = True) -> None:
        """Write `masks` into the masked model's buffers, in place (no re-trace).

        Args:
            masks: masks computed on this session's graph.
            shrink_only: keep removed what earlier masks removed (default); False lets channels come back
                (Movement's fine-pruning).

        Raises:
            InputError: the masks belong to another session or model.
        """
        if masks.graph is not self.graph:
            raise InputError("session.apply: these masks were computed on another model's dependency graph "
                             "(another session or compile); compute them with this session's compute_masks")
        if self._finished:
            raise InputError("session.apply after finish(): start a new session with fxprune.prepare")
        if shrink_only:
            for gid, keep in self.masks.keep.items():
                masks.keep[gid] = masks.keep.get(gid, keep) & keep
            for name, keep in self.masks.weights.items():
                masks.weights[name] = masks.weights.get(name, keep) & keep
        try:
            update_masks(self.model, masks)
        except ValueError as e:
            raise InputError(f"session.apply: {e}; they were not selected by the session's config rules") from e
        for qualname, keep in masks.weights.items():
            owner, _, attr = qualname.rpartition(".")
            module = self.model.get_submodule(owner)
            if parametrize.is_parametrized(module, attr) and isinstance(module.parametrizations[attr][0], WeightMask):
                module.parametrizations[attr][0].mask.copy_(keep)
            else:
                parametrize.register_parametrization(module, attr, WeightMask(keep))
        for qualname in set(self.masks.weights) - set(masks.weights):  # dropped weight masks keep everything
            owner, _, attr = qualname.rpartition(".")
            self.model.get_submodule(owner).parametrizations[attr][0].mask.fill_(True)
        self.masks = masks

    # -- data ------------------------------------------------------------------------------------
    def probe_points(self, needs: frozenset[str]) -> tuple[list[Slot], list[str]]:
        """Where the statistics are taken: the activation that really follows each selected layer (the
        output of the first activation function after it, through norms and dropout; the layer's own output
        when none follows), and the weights of every selected group for gradients."""
        acts: list[Slot] = []
        grads: list[str] = []
        for layer in self.layers:
            if layer.excluded:
                continue
            gid = self.graph.group_of[layer.slot]
            if not self.graph.groups[gid].prunable.any():  # statistics of a group kept whole score nothing
                continue
            if "activations" in needs:
                slot = _activation_slot(self.graph, layer, gid)
                if slot is not None and slot not in acts:
                    acts.append(slot)
            if "gradients" in needs:
                for s in self.graph.groups[gid].param_slots():
                    q = s.tensor[1:]
                    try:
                        p = self.model.get_parameter(q)
                    except AttributeError:
                        continue
                    if p.requires_grad and q not in grads:
                        grads.append(q)
        return acts, grads

    def timed(self, step: str) -> contextlib.AbstractContextManager[None]:
        """Add the time spent inside the `with` block to the report's timings under `step`."""
        return _timed(self.timings, step)

    @contextmanager
    def probe(self, needs: Iterable[str] = ("activations",), batches: int | None = None) -> Iterator[Stats]:
        """Observe `session.model` while your own code runs it (a training loop, an evaluation).

        Args:
            needs: "activations" and/or "gradients".
            batches: count only the first N forward (and backward) passes; None: all.

        Yields:
            The Stats being filled. Probes are removed on exit, also on an exception.
        """
        needs = frozenset(needs)
        unknown = needs - {"activations", "gradients"}
        if unknown:
            raise InputError(f"session.probe: unknown statistics {sorted(unknown)}; use 'activations', 'gradients'")
        stats = Stats()
        acts, grads = self.probe_points(needs)
        handles = insert_probes(self.model, acts, grads, stats, batches)
        try:
            yield stats
        finally:
            remove_probes(self.model, handles)

    def collect(self, data: Iterable[Any], needs: Iterable[str] = ("activations",), loss: Any = None,
                batches: int | None = None) -> Stats:
        """Run `session.model` over `data` and return the statistics (no optimizer: no weight changes).

        Args:
            data: an iterable of batches: tensors, (inputs, target) pairs, or dicts of keyword inputs.
            needs: "activations" and/or "gradients".
            loss: `loss(output, target) -> scalar`, required for gradients.
            batches: how many batches to use (default: all of one pass over `data`).

        Raises:
            InputError: no batch, a loss that is missing, not a scalar, or not finite (names the batch).
        """
        needs = frozenset(needs)
        if "gradients" in needs and loss is None:
            raise InputError("collecting gradients needs a loss: pass loss=torch.nn.functional.cross_entropy "
                             "(called as loss(output, target))")
        if batches is not None and batches < 1:
            raise InputError(f"batches={batches}: collect over at least one batch")
        with self.probe(needs, batches) as stats:
            n = 0
            for i, batch in enumerate(data):
                if batches is not None and i >= batches:
                    break
                inputs, target = split_batch(batch)
                if not isinstance(inputs[0], dict) and len(inputs) != len(self.example_inputs):
                    raise InputError(
                        f"collect: batch {i} gives {len(inputs)} model input(s), but the model was traced with "
                        f"{len(self.example_inputs)}: batches are `x`, `(x, y)` or a dict of keyword inputs; for a "
                        "model with several inputs pass dicts, or run your own loop inside session.probe(...)")
                with torch.set_grad_enabled("gradients" in needs):
                    out = call_model(self.model, inputs)
                    if "gradients" in needs:
                        value = loss(out, target)
                        if not isinstance(value, torch.Tensor) or value.numel() != 1:
                            raise InputError(f"loss returned {type(value).__name__} of shape "
                                             f"{getattr(value, 'shape', None)} on batch {i}: it must be a scalar")
                        if not torch.isfinite(value):
                            raise InputError(f"loss is {value.item()} on batch {i}: statistics would be NaN; check "
                                             "the batch and the model's weights")
                        self.model.zero_grad(set_to_none=True)  # (w * dL/dw)^2 of THIS batch, not a running sum
                        value.backward()
                n += 1
        self.model.zero_grad(set_to_none=True)
        if n == 0:
            raise InputError("collect: `data` gave no batch; pass an iterable of batches")
        return stats

    # -- finishing -------------------------------------------------------------------------------
    def finish(self, verify_outputs: bool | None = None) -> CompileResult:
        """Remove the masked channels physically, check pruned == masked, and report. Once per session.

        Returns:
            CompileResult; `masked_model` is `session.model`.
        """
        if self._finished:
            raise InputError("session.finish() was already called: start a new session with fxprune.prepare")
        cfg, masks, timings = self.config, self.masks, self.timings
        masks = promote_zero_channels(masks, lambda m: self.apply(m, shrink_only=False), self.model,
                                      self.example_inputs)
        if not masks.structured and not any((~k).any() for k in masks.weights.values()):
            reasons = "\n".join(f"  {layer.name}: {_why_kept(self.graph, layer)}" for layer in self.layers[:20])
            warnings.warn("fxprune removed nothing. Why each selected layer kept its channels:\n" + reasons,
                          stacklevel=2)
        with _timed(timings, "speedup"):
            pruned = speedup_pass(self.model, masks)
        diff = 0.0
        if cfg.verify if verify_outputs is None else verify_outputs:
            with _timed(timings, "verify"):
                diff = verify(self.model, pruned, masks, self.example_inputs, cfg.rtol, cfg.atol)
        with _timed(timings, "report"):
            report = build_report(self._baseline, pruned, self.graph, masks, new_shapes(masks), pruner=cfg.pruner,
                                  frontend=self.model.meta["frontend"])
        report.timings, report.max_abs_diff = timings, diff
        report.notes = _notes(self.graph, masks, cfg, self.layers, report) + masks.notes
        detach_shared(pruned, self.model)
        flags = self.model.meta.get("train_flags", {}) if self.model.meta["frontend"] == "fx" else {}
        set_training(pruned, flags)
        set_training(self.model, flags)
        self._finished = True
        return CompileResult(pruned, self.model, masks, report, self.example_inputs)


_ACTIVATIONS = {"relu", "relu_", "relu6", "leaky_relu", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardtanh",
                "elu", "selu", "celu", "mish", "softplus", "ReLU", "ReLU6", "LeakyReLU", "GELU", "SiLU", "Sigmoid",
                "Tanh", "Hardswish", "Hardtanh", "ELU", "SELU", "CELU", "Mish", "Softplus"}
_PASS_THROUGH = {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "batch_norm", "_native_batch_norm_legit_no_training",
                 "Dropout", "Dropout1d", "Dropout2d", "dropout", "Identity", "InstanceNorm2d", "GroupNorm"}


def _activation_slot(dg: DependencyGraph, layer: Layer, gid: int) -> Slot | None:
    """The channel slot of the activation after a layer (see `Session.probe_points`)."""
    nodes = {n.name: n for n in dg.gm.graph.nodes}
    node = nodes[layer.nodes[-1]]
    chosen = node
    for _ in range(4):
        users = list(node.users)
        while len(users) == 1 and users[0].meta.get("fxprune_mask"):  # look through mask multiplies
            users = list(users[0].users)
        if len(users) != 1 or users[0].op not in ("call_module", "call_function", "call_method"):
            break
        node = users[0]
        name = op_name(spelling(node, dg.gm))
        if name in _ACTIVATIONS:
            chosen = node
            break
        if name not in _PASS_THROUGH:
            break
    shape = dg.shapes.get(chosen.name)
    if shape is None:
        return None
    for d in range(len(shape)):
        if dg.group_of.get(Slot(chosen.name, d)) == gid:
            return Slot(chosen.name, d)
    return None


_STEP_KEYS = ("pruner", "global_ranking", "round_to", "mode", "prune_hidden", "attention", "budget", "budget_worth")


def _step_config(session_cfg: Config, config: Any) -> Config:
    """A step's own rules (an NNI config_list, a dict with rules or sparsity, or a Config) on top of the
    session's other settings."""
    if isinstance(config, Config):
        return parse_config(config)
    step = {"rules": list(config)} if isinstance(config, (list, tuple)) else dict(config)
    return parse_config({**{k: getattr(session_cfg, k) for k in _STEP_KEYS}, **step})


def prepare(model: torch.nn.Module, config: Any, example_inputs: Any) -> Session:
    """Start a pruning session: trace a copy of `model` once and insert a mask for every selectable group.

    Args:
        model: any nn.Module the front ends can trace; it is not modified.
        config: a dict, a `fxprune.Config`, or NNI's config_list (validated before any work).
        example_inputs: a tensor or tuple of tensors for one forward call.

    Returns:
        A Session whose `model` is the masked, trainable GraphModule (all masks open).

    Example:
        >>> s = fxprune.prepare(model, {"pruner": "l1", "sparsity": 0.5}, torch.randn(1, 3, 32, 32))
        >>> s.apply(s.compute_masks())
        >>> result = s.finish()
    """
    cfg = parse_config(config)
    inputs = check_inputs(model, example_inputs)
    timings: dict[str, float] = {}
    gm, dg = analyze(model, inputs, cfg, timings, codegen=False)  # the mask pass generates the code
    _check_requests(dg, cfg)
    layers = select_layers(dg, cfg)
    maskable = {dg.group_of[layer.slot] for layer in layers if not layer.excluded}
    return Session.start(gm, dg, cfg, layers, inputs, maskable, timings)
