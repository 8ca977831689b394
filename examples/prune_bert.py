"""Prune the attention heads and FFN channels of a BERT-style encoder and print the report.

    PYTHONPATH=. python examples/prune_bert.py

The model is built from a small config with random weights (no download). Hugging Face models do not
go through torch.fx.symbolic_trace, so fxprune traces them with torch.export; the report says which.
"""

from __future__ import annotations

import torch
from transformers import BertConfig, BertModel

import fxprune


def main() -> None:
    """Build a tiny BERT, prune half of its heads and FFN channels, check it at another shape, print the report."""
    torch.manual_seed(0)
    config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                        vocab_size=100, attn_implementation="eager")
    model = BertModel(config).eval()
    input_ids = torch.randint(0, 100, (2, 16))
    result = fxprune.compile(model, {"pruner": "l1", "sparsity": 0.5, "attention": "heads"}, input_ids)
    print(result.report)

    other = torch.randint(0, 100, (4, 24))  # another batch size and sequence length
    with torch.no_grad():
        dense_shape = result.masked_model(other).last_hidden_state.shape
        pruned_shape = result.model(other).last_hidden_state.shape
    print(f"\nat batch 4, length 24: masked {tuple(dense_shape)}, pruned {tuple(pruned_shape)}")
    attn = result.model.get_submodule("encoder.layer.0.attention.self")
    print(f"layer 0 query: {attn.query.weight.shape[0]} channels (heads of 16)")


if __name__ == "__main__":
    main()
