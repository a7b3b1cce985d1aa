"""Datasets: image folders, CIFAR-10/100 files on disk, scikit-learn's digits, and synthetic images.

Each dataset returns ``(image, label)`` with ``image`` a PIL image (folders) or a ``(3, H, W)`` uint8
tensor (the in-memory sets), passed through ``transform`` if one is given. Nothing is ever downloaded.

An image file that cannot be read does not raise: :class:`ImageFolderDataset` returns a
:class:`SkippedSample` naming the file instead, and the loader (``flexbone.data.loader``) drops it from the
batch and counts it, or raises :class:`CorruptImageError` when ``data.strict`` is on.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, FlexboneError
from .decode import ImageDecodeError, decode_image

# torchvision's list (datasets.folder.IMG_EXTENSIONS), matched case-insensitively
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class CorruptImageError(FlexboneError):
    """An image file that cannot be decoded (raised only with ``data.strict``)."""


@dataclass(frozen=True)
class SkippedSample:
    """Returned by a dataset in place of a sample it could not read."""

    path: str
    reason: str


# ---------------------------------------------------------------------------------------- folders
def find_classes(root: str | os.PathLike) -> list[str]:
    """Sorted names of the sub-folders of ``root`` (one per class), as torchvision's ImageFolder."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ConfigError(f"no class folders in {root}: expected {root}/<class name>/<images>")
    return classes


class ImageFolderDataset(Dataset):
    """Images in ``root/<class>/**/<file>``, labels by sorted class-folder name (torchvision's order).

    Args:
        root: the split folder (e.g. ``imagenet/train``).
        transform: applied to the RGB PIL image.
        class_names: the class list to use (the training split's, so that validation labels agree);
            a folder whose name is not in it is an error. ``None``: the folders found in ``root``.
    """

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None,
                 class_names: list[str] | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"image folder {self.root} does not exist")
        found = find_classes(self.root)
        if class_names is None:
            class_names = found
        unknown = sorted(set(found) - set(class_names))
        if unknown:
            raise ConfigError(f"{self.root} has class folders that the training split lacks: {', '.join(unknown[:10])}")
        self.classes = list(class_names)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.transform = transform
        self.samples: list[tuple[str, int]] = []
        for name in found:
            for dirpath, _, filenames in sorted(os.walk(self.root / name, followlinks=True)):
                for fname in sorted(filenames):
                    if fname.lower().endswith(IMG_EXTENSIONS) and not fname.startswith("."):
                        self.samples.append((os.path.join(dirpath, fname), self.class_to_idx[name]))
        if not self.samples:
            raise ConfigError(f"no images ({', '.join(IMG_EXTENSIONS)}) found under {self.root}")
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int] | SkippedSample:
        path, label = self.samples[index]
        try:
            image = decode_image(path)  # 8-bit RGB for every mode (16-bit, alpha, EXIF...); decodes fully
        except ImageDecodeError as e:
            return SkippedSample(path, e.reason)
        if self.transform is not None:
            image = self.transform(image)
        return image, label


# ------------------------------------------------------------------------------------ in-memory sets
class TensorImageDataset(Dataset):
    """Images held in memory as a ``(N, 3, H, W)`` uint8 tensor, with integer labels."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor | list[int], classes: list[str],
                 transform: Callable | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a (N, C, H, W) uint8 tensor, got {tuple(images.shape)} {images.dtype}")
        self.images = images
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``(images (1797, 8, 8) float 0..16, labels (1797,))``.

    Read straight from the CSV that ships inside scikit-learn, which skips importing scikit-learn (seconds
    of the quickstart's start-up on a small CPU); falls back to ``sklearn.datasets.load_digits``.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is not None and csv.is_file():
        table = np.loadtxt(csv, delimiter=",")  # 65 columns: 64 pixels row by row, then the label
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train_indices, test_indices)``: each class gives ``round(n_c * test_fraction)`` random
    samples to the test set (so class proportions match), drawn with ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        test.append(rng.permutation(members)[: int(round(len(members) * test_fraction))])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def digits_dataset(train: bool, test_fraction: float = 0.2, split_seed: int = 0,
                   transform: Callable | None = None) -> TensorImageDataset:
    """scikit-learn's handwritten digits (1,797 real 8x8 scans, 16 grey levels) as 3-channel uint8 images.

    The train/test split is stratified by class and fixed by ``split_seed`` (:func:`stratified_split`), so
    every run and every process sees the same split. Pixels 0..16 are scaled to 0..255 and repeated over
    three channels, so that the usual RGB models and transforms apply unchanged.
    """
    images, labels = _load_digits()
    train_idx, test_idx = stratified_split(labels, test_fraction, split_seed)
    idx = train_idx if train else test_idx
    grey = torch.from_numpy(images[idx]).float() * (255.0 / 16.0)  # (N, 8, 8), 0..255
    images = grey.round().to(torch.uint8).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()  # (N, 3, 8, 8)
    return TensorImageDataset(images, labels[idx].tolist(), [str(c) for c in range(10)], transform)


class SyntheticDataset(Dataset):
    """Random uint8 images (for throughput benchmarks): sample ``i`` is the same every time, label ``i % K``."""

    def __init__(self, size: int, num_classes: int, img_size: int, seed: int = 0, transform: Callable | None = None):
        self.size, self.num_classes, self.img_size, self.seed = size, num_classes, img_size, seed
        self.classes = [str(i) for i in range(num_classes)]
        self.transform = transform

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[Any, int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        image = torch.randint(0, 256, (3, self.img_size, self.img_size), dtype=torch.uint8, generator=g)
        if self.transform is not None:
            image = self.transform(image)
        return image, index % self.num_classes


# ------------------------------------------------------------------------------------------- CIFAR
def _numpy_reconstructors() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR batch file may reference: numpy array/dtype reconstruction, bytes decoding."""
    import codecs

    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for mod in ("numpy.core", "numpy._core"):  # files written under either numpy major version
        allowed[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        if hasattr(numeric, "_frombuffer"):
            allowed[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, strings, numbers and numpy arrays, and nothing else.

    The CIFAR "python version" files are pickles; a plain ``pickle.load`` would run whatever callable a
    tampered file names. Here every global outside a fixed list of numpy reconstructors is refused.
    """

    _allowed = _numpy_reconstructors()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch file holds only "
                                         "arrays, lists and strings") from None


def load_cifar_batch(path: str | os.PathLike) -> dict[str, Any]:
    """Read one CIFAR python batch file safely (see :class:`_ArrayOnlyUnpickler`); keys as str."""
    try:
        with open(path, "rb") as f:
            # the official files are Python 2 pickles: latin1 maps their byte strings 1:1 (numpy's advice)
            obj = _ArrayOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise ConfigError(f"cannot read CIFAR batch file {path}: {e}") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"CIFAR batch file {path} does not hold a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


# variant -> (sub-folder of the official archive, train files, test file, meta file, label key, names key)
CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta",
                "labels", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", "fine_labels", "fine_label_names"),
}


def cifar_dataset(root: str | os.PathLike, variant: str, train: bool,
                  transform: Callable | None = None) -> TensorImageDataset:
    """CIFAR-10 or CIFAR-100 from the official python-version files already on disk (never downloaded).

    ``root`` is the folder holding the batch files, or its parent (``cifar-10-batches-py`` /
    ``cifar-100-python`` inside it).
    """
    if variant not in CIFAR_LAYOUT:
        raise ConfigError(f"unknown CIFAR variant {variant!r}; choose {', '.join(CIFAR_LAYOUT)}")
    sub, train_files, test_file, meta_file, label_key, names_key = CIFAR_LAYOUT[variant]
    root = Path(root)
    folder = root / sub if (root / sub).is_dir() else root
    files = train_files if train else [test_file]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise ConfigError(f"{variant} files missing in {folder}: {', '.join(missing)}. flexbone does not download "
                          f"data; unpack the official 'python version' archive there.")
    images, labels = [], []
    for name in files:
        batch = load_cifar_batch(folder / name)
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            labels.extend(int(v) for v in batch[label_key])
        except KeyError as e:
            raise ConfigError(f"CIFAR batch file {folder / name} has no {e.args[0]!r} entry") from None
        images.append(data.reshape(-1, 3, 32, 32))  # rows are R(1024) G(1024) B(1024), row-major 32x32
    data = np.concatenate(images)
    if len(labels) != len(data):
        raise ConfigError(f"{variant} files in {folder}: {len(data)} images but {len(labels)} labels")
    num_classes = 10 if variant == "cifar10" else 100
    classes = [str(i) for i in range(num_classes)]
    if (folder / meta_file).is_file():
        names = load_cifar_batch(folder / meta_file).get(names_key)
        if names is not None and len(names) == num_classes:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    if labels and not 0 <= min(labels) <= max(labels) < num_classes:
        raise ConfigError(f"{variant} labels in {folder} are outside 0..{num_classes - 1}")
    return TensorImageDataset(torch.from_numpy(data.copy()), labels, classes, transform)
