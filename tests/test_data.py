"""Data pipeline: datasets, transforms, RandAugment strings, samplers, Mixup/CutMix, build_loaders.

References: torchvision's ImageFolder (file order and labels), timm's eval transform, RandAugment parser,
RepeatAugSampler and mixup_target, scikit-learn's digits.
"""
from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from flexbone.config import load_recipe
from flexbone.data import (
    CorruptImageError, ImageFolderDataset, MixupCutmix, RandAugmentNoisy, RandAugmentSpec, RepeatedAugSampler,
    ShardedEvalSampler, SkippedSample, SyntheticDataset, build_eval_transform, build_loaders, build_mixup,
    build_train_transform, cifar_dataset, digits_dataset, eval_resize_size, mix_targets, parse_rand_augment,
)
from flexbone.data.batch_transforms import BatchTrainTransform, resized_crop_batch, sample_resized_crops
from flexbone.errors import ConfigError


# ------------------------------------------------------------------------------------- tiny fixtures
def _image(seed: int, size=(20, 14)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def image_folder(tmp_path):
    """root/{train,val}/{cat,dog,emu}/ with PNG/JPEG files, a nested folder, a text file and broken images."""
    root = tmp_path / "imgs"
    seed = 0
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("dog", "cat", "emu"):  # created unsorted on purpose
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                seed += 1
                _image(seed).save(d / f"{i}.{'png' if i % 2 else 'JPG'}")
        (root / split / "cat" / "notes.txt").write_text("not an image")
    nested = root / "train" / "emu" / "more"
    nested.mkdir()
    _image(99).save(nested / "deep.png")
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    good = root / "val" / "cat" / "0.JPG"
    (root / "val" / "cat" / "truncated.png").write_bytes(_png_bytes(_image(7))[:60])
    assert good.is_file()
    return root


def _png_bytes(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _folder_recipe(root, *extra):
    return load_recipe(None, ["data.dataset=imagefolder", f"data.path={root}", "data.img_size=16",
                              "data.batch_size=4", "data.workers=0", *extra])


# ------------------------------------------------------------------------------------------ datasets
def test_image_folder_matches_torchvision_order_and_labels(image_folder):
    from torchvision.datasets import ImageFolder

    ours = ImageFolderDataset(image_folder / "train")
    ref = ImageFolder(str(image_folder / "train"))
    assert ours.classes == ref.classes == ["cat", "dog", "emu"]
    assert ours.samples == ref.samples  # same files, same order, same labels (broken.jpg included: by extension)
    assert not any(p.endswith(".txt") for p, _ in ours.samples)
    image, label = ours[0]
    assert image.mode == "RGB" and label == 0


def test_image_folder_returns_a_skip_marker_for_corrupt_files(image_folder):
    ds = ImageFolderDataset(image_folder / "train")
    broken = [i for i, (p, _) in enumerate(ds.samples) if p.endswith("broken.jpg")]
    out = ds[broken[0]]
    assert isinstance(out, SkippedSample) and out.path.endswith("broken.jpg") and out.reason


def test_val_split_uses_the_train_classes_and_rejects_unknown_ones(image_folder):
    train = ImageFolderDataset(image_folder / "train")
    (image_folder / "val" / "emu").rename(image_folder / "val" / "zzz_emu")
    with pytest.raises(ConfigError, match="zzz_emu"):
        ImageFolderDataset(image_folder / "val", class_names=train.classes)
    (image_folder / "val" / "zzz_emu").rename(image_folder / "val" / "emu")
    (image_folder / "val" / "dog").rename(image_folder / "dog_elsewhere")  # a class missing in val is fine
    val = ImageFolderDataset(image_folder / "val", class_names=train.classes)
    assert {label for _, label in val.samples} == {0, 2}


def test_loader_skips_and_counts_corrupt_images(image_folder):
    recipe = _folder_recipe(image_folder)
    train, val, num_classes, names = build_loaders(recipe)
    assert (num_classes, names) == (3, ["cat", "dog", "emu"])
    seen = sum(len(labels) for _, labels in val)
    assert seen == 6  # 6 good val images; the truncated one is skipped
    assert val.skipped == 1 and val.total_skipped == 1
    assert val.skipped_files[0].endswith("truncated.png")
    per_pass = []
    for _ in range(4):  # broken.jpg is in some epochs' kept batches (11 images, 2 batches of 4)
        seen = sum(len(labels) for _, labels in train)
        per_pass.append(train.skipped)
        assert seen + train.skipped == 8
    assert train.total_skipped == sum(per_pass) and set(per_pass) <= {0, 1}


def test_loader_with_worker_process_counts_skips(image_folder):
    recipe = _folder_recipe(image_folder, "data.workers=1")
    _, val, _, _ = build_loaders(recipe)
    assert sum(len(labels) for _, labels in val) == 6 and val.skipped == 1


def test_strict_mode_raises_naming_the_file(image_folder):
    _, val, _, _ = build_loaders(_folder_recipe(image_folder, "data.strict=true"))
    with pytest.raises(CorruptImageError, match="truncated.png"):
        for _ in val:
            pass


def test_missing_folders_are_clear_errors(tmp_path, image_folder):
    with pytest.raises(ConfigError, match="needs data.path"):
        build_loaders(load_recipe(None, ["data.dataset=imagefolder"]))
    with pytest.raises(ConfigError, match="no 'validation' folder"):
        build_loaders(_folder_recipe(image_folder, "data.val_split=validation"))
    with pytest.raises(ConfigError, match="cifar10 files missing"):
        build_loaders(load_recipe(None, ["data.dataset=cifar10", f"data.path={tmp_path}"]))


# --------------------------------------------------------------------------------------------- CIFAR
def _write_cifar10(folder, protocol, per_batch=2, key=str):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({key("data"): data, key("labels"): labels, key("batch_label"): key(name)}, f, protocol=protocol)
        written.append((data, labels))
    names = [f"class{i}" for i in range(10)]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({key("label_names"): [key(n) for n in names], key("num_vis"): 3072}, f, protocol=protocol)
    return written, names


@pytest.mark.parametrize("protocol, key", [(2, lambda s: s.encode()), (5, str)])
def test_cifar10_batch_files_are_read_without_running_code(tmp_path, protocol, key):
    written, names = _write_cifar10(tmp_path / "cifar-10-batches-py", protocol, key=key)
    train = cifar_dataset(tmp_path, "cifar10", train=True)  # the parent folder works too
    test = cifar_dataset(tmp_path / "cifar-10-batches-py", "cifar10", train=False)
    assert len(train) == 10 and len(test) == 2 and train.classes == names
    data, labels = written[1]
    image, label = train[2]  # first image of data_batch_2
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert torch.equal(image.reshape(-1), torch.from_numpy(data[0]))  # R plane, then G, then B
    assert label == labels[0]


def test_cifar100_layout(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    for name in ("train", "test"):
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "fine_labels": [5, 99], "coarse_labels": [1, 2]}, f)
    ds = cifar_dataset(tmp_path, "cifar100", train=True)
    assert [ds[i][1] for i in range(2)] == [5, 99] and len(ds.classes) == 100


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_marker",))


def test_a_tampered_cifar_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar10(folder, 2)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": _Evil(), "labels": [0]}, f)
    with pytest.raises(ConfigError, match="refusing to load"):
        cifar_dataset(tmp_path, "cifar10", train=False)
    assert not (tmp_path / "pwned_marker").exists()


# -------------------------------------------------------------------------------------------- digits
def test_digits_split_is_stratified_fixed_and_matches_sklearn():
    from sklearn.datasets import load_digits

    ref = load_digits()
    train, test = digits_dataset(True), digits_dataset(False)
    assert len(train) + len(test) == 1797
    # the scans are scikit-learn's, 0..16 scaled to 0..255, grey in all three channels
    all_images = torch.cat([train.images, test.images])
    all_labels = torch.cat([train.targets, test.targets])
    assert torch.equal(all_images[:, 0], all_images[:, 2])
    ref_images = torch.from_numpy(np.round(ref.images * 255 / 16)).to(torch.uint8)
    ref_sorted = sorted(zip(ref_images.reshape(1797, -1).tolist(), ref.target.tolist()))
    assert sorted(zip(all_images[:, 0].reshape(1797, -1).tolist(), all_labels.tolist())) == ref_sorted
    # stratified: every class gives 20% (rounded) of its scans to the test set
    for c in range(10):
        n_c = int((ref.target == c).sum())
        assert int((test.targets == c).sum()) == round(0.2 * n_c)
    # fixed by the split seed, changed by another seed
    assert torch.equal(digits_dataset(False).images, test.images)
    assert not torch.equal(digits_dataset(False, split_seed=1).images, test.images)


def test_synthetic_dataset_is_deterministic():
    ds = SyntheticDataset(10, 4, 12)
    assert torch.equal(ds[3][0], ds[3][0]) and not torch.equal(ds[3][0], ds[4][0])
    assert [ds[i][1] for i in range(6)] == [0, 1, 2, 3, 0, 1]


# -------------------------------------------------------------------------------------- RandAugment
@pytest.mark.parametrize("text, expected", [
    ("rand-m7-mstd0.5-inc1", RandAugmentSpec(7, 2, 0.5, 10, 0.5, True)),
    ("rand-m9-n3-mstd0.5", RandAugmentSpec(9, 3, 0.5, 10, 0.5, False)),
    ("rand-m6-mstd0.5-inc1", RandAugmentSpec(6, 2, 0.5, 10, 0.5, True)),
    ("rand-n1-p1.0-mmax8-m5", RandAugmentSpec(5, 1, 0.0, 8, 1.0, False)),
    ("rand-mstd101", RandAugmentSpec(10, 2, math.inf, 10, 0.5, False)),
])
def test_rand_augment_strings_parse_like_timm(text, expected):
    from timm.data.auto_augment import rand_augment_transform

    spec = parse_rand_augment(text)
    assert spec == expected
    ref = rand_augment_transform(text, {})  # timm's parser: layers, magnitude, std, probability
    op = ref.ops[0]
    assert ref.num_layers == spec.num_ops and op.magnitude == spec.magnitude and op.prob == spec.prob
    assert op.magnitude_std == spec.magnitude_std
    assert (op.magnitude_max or 10) == spec.magnitude_max


@pytest.mark.parametrize("text", ["rnd-m9", "rand-m9-x1", "rand-m11", "rand-n2.5", "rand-mmax20", "rand-p2"])
def test_bad_rand_augment_strings_are_config_errors(text):
    with pytest.raises(ConfigError):
        parse_rand_augment(text)


def test_rand_augment_magnitude_noise_is_normal_and_clipped():
    torch.manual_seed(0)
    noisy = RandAugmentNoisy(parse_rand_augment("rand-m7-mstd0.5"))
    m = torch.tensor([noisy._sample_magnitude() for _ in range(4000)])
    assert abs(m.mean().item() - 7) < 0.05 and abs(m.std().item() - 0.5) < 0.03
    clipped = RandAugmentNoisy(parse_rand_augment("rand-m9.8-mstd1"))
    m = torch.tensor([clipped._sample_magnitude() for _ in range(2000)])
    assert m.max().item() == 10.0 and (m == 10).float().mean() > 0.3  # N(9.8, 1) clipped at 10
    uniform = RandAugmentNoisy(parse_rand_augment("rand-m6-mstd200"))
    m = torch.tensor([uniform._sample_magnitude() for _ in range(4000)])
    assert m.min() >= 0 and m.max() <= 6 and abs(m.mean().item() - 3) < 0.15
    fixed = RandAugmentNoisy(parse_rand_augment("rand-m7"))
    assert {fixed._sample_magnitude() for _ in range(20)} == {7.0}


def test_rand_augment_maps_magnitude_like_timm_and_applies_with_probability():
    from torchvision.transforms.v2 import functional as F

    img = torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8)
    ra = RandAugmentNoisy(parse_rand_augment("rand-m7-n1-p1.0"), interpolation="nearest", fill=0)
    ra._AUGMENTATION_SPACE = {"Rotate": RandAugmentNoisy._AUGMENTATION_SPACE["Rotate"]}
    # timm: rotate by 30 * m / 10 degrees, random sign
    expected = [F.rotate(img, 21.0, fill=0), F.rotate(img, -21.0, fill=0)]
    for _ in range(4):
        out = ra(img)
        assert any(torch.equal(out, e) for e in expected)
    never = RandAugmentNoisy(parse_rand_augment("rand-m9-n3-p0"))
    assert torch.equal(never(img), img)
    always = RandAugmentNoisy(parse_rand_augment("rand-m9-n3-p1.0"))
    changed = sum(not torch.equal(always(img), img) for _ in range(10))
    assert changed >= 8
    pil_out = always(Image.fromarray(img.permute(1, 2, 0).numpy()))
    assert isinstance(pil_out, Image.Image) and pil_out.size == (24, 24)


# ---------------------------------------------------------------------------------------- transforms
def test_eval_transform_equals_timm(image_folder):
    from timm.data import create_transform

    recipe = load_recipe("rsb_a3", ["data.test_img_size=32"])
    ours = build_eval_transform(recipe.data)
    ref = create_transform(32, is_training=False, crop_pct=0.95, interpolation="bicubic",
                           mean=recipe.data.mean, std=recipe.data.std)
    img = _image(3, size=(50, 37))
    assert eval_resize_size(32, 0.95) == 33 and eval_resize_size(224, 0.95) == 235
    torch.testing.assert_close(ours(img), ref(img), atol=1e-6, rtol=0)


def test_train_transform_outputs_for_pil_and_tensor_inputs():
    recipe = load_recipe("rsb_a1", ["data.img_size=24", "aug.re_prob=0.5"])
    tf = build_train_transform(recipe.data, recipe.aug)
    for img in (_image(1, size=(40, 30)), torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8)):
        out = tf(img)
        assert type(out) is torch.Tensor and out.shape == (3, 24, 24) and out.dtype == torch.float32
    a, b = tf(_image(1, size=(40, 30))), tf(_image(1, size=(40, 30)))
    assert not torch.equal(a, b)  # random crops differ


# --------------------------------------------------------------------------- whole-batch augmentation
def test_batch_crop_resize_equals_torchvision_per_image():
    from torchvision.transforms.v2 import functional as F

    torch.manual_seed(3)
    images = torch.rand(6, 3, 10, 12) * 255
    boxes = sample_resized_crops(6, 10, 12, scale=(0.2, 1.0), ratio=(0.5, 2.0))
    out = resized_crop_batch(images, boxes, 16)  # every crop is upsampled to 16x16
    for k, (top, left, h, w) in enumerate(boxes.int().tolist()):
        ref = F.resized_crop(images[k], top, left, h, w, [16, 16], antialias=False)
        torch.testing.assert_close(out[k], ref, atol=1e-3, rtol=0)


def test_sampled_crops_follow_random_resized_crop_rules():
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(4)
    boxes = sample_resized_crops(2000, 80, 100, scale=(0.3, 0.6), ratio=(0.75, 1.5))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 80).all() and (left + w <= 100).all()
    area = h * w / 8000
    assert area.min() > 0.28 and area.max() < 0.62  # scale range, up to rounding of h and w
    assert (w / h).min() > 0.7 and (w / h).max() < 1.6
    assert left.max() > 50 and top.max() > 30  # positions spread over the image
    # no valid try (an impossible aspect ratio): torchvision's centre-crop fallback, deterministic
    for ratio in ((4.0, 5.0), (0.1, 0.2)):
        ref = RandomResizedCrop.get_params(torch.zeros(3, 30, 40), scale=(0.99, 1.0), ratio=ratio)
        fallback = sample_resized_crops(5, 30, 40, scale=(0.99, 1.0), ratio=ratio)
        assert all(tuple(int(v) for v in box) == tuple(ref) for box in fallback)


def test_batch_transform_normalises_like_the_per_image_pipeline():
    recipe = load_recipe("quickstart", ["aug.no_crop=true", "aug.hflip=1.0"])
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    out = BatchTrainTransform(recipe.data, recipe.aug)(images)
    per_image = build_train_transform(recipe.data, recipe.aug)
    for k in range(4):
        torch.testing.assert_close(out[k], per_image(images[k]), atol=1e-5, rtol=0)  # both flip (p=1)


# ------------------------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("world", [1, 2, 4])
def test_repeated_aug_sampler_equals_timm(world):
    from timm.data.distributed_sampler import RepeatAugSampler

    data = range(1000)
    for epoch in (0, 3):
        for rank in range(world):
            ours = RepeatedAugSampler(data, world, rank, num_repeats=3, seed=0)
            ref = RepeatAugSampler(data, world, rank, num_repeats=3)
            ours.set_epoch(epoch)
            ref.set_epoch(epoch)
            assert list(ours) == list(ref) and len(ours) == len(ref)


def test_repeated_aug_sampler_properties():
    data, r, world = range(600), 3, 3
    samplers = [RepeatedAugSampler(data, world, k, num_repeats=r, seed=5, selected_round=0) for k in range(world)]
    lists = [list(s) for s in samplers]
    assert len({len(x) for x in lists}) == 1 and len(lists[0]) == len(samplers[0]) == 200
    # the r copies of an image go to r different processes, at the same step
    assert lists[0] == lists[1] == lists[2]
    # an epoch's stream: each image repeated r times in a row before dealing
    merged = [i for step in zip(*lists) for i in step]
    assert all(len(set(merged[j:j + r])) == 1 for j in range(0, len(merged), r))
    # deterministic per (seed, epoch), different across epochs
    again = RepeatedAugSampler(data, world, 0, num_repeats=r, seed=5, selected_round=0)
    assert list(again) == lists[0]
    again.set_epoch(1)
    assert list(again) != lists[0]
    # a single process sees each image r times in a row
    single = list(RepeatedAugSampler(range(30), 1, 0, num_repeats=3, selected_round=0))
    assert all(single[j] == single[j + 1] == single[j + 2] for j in range(0, len(single) - 2, 3))


def test_sharded_eval_sampler_covers_every_index_once():
    shards = [list(ShardedEvalSampler(range(11), 3, k)) for k in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(11))


# ------------------------------------------------------------------------------------- Mixup / CutMix
def test_mix_targets_equal_timm():
    from timm.data.mixup import mixup_target

    labels = torch.tensor([0, 3, 2, 2, 1])
    for lam, smoothing in ((0.3, 0.1), (1.0, 0.0), (0.77, 0.0)):
        torch.testing.assert_close(mix_targets(labels, 5, lam, smoothing), mixup_target(labels, 5, lam, smoothing))


def test_mixup_mixes_images_and_targets_with_the_same_lambda():
    torch.manual_seed(1)
    mix = MixupCutmix(4, mixup_alpha=0.4, cutmix_alpha=0.0)
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    out, t = mix(x, y)
    lam = mix.last_lam
    assert mix.last_mode == "mixup" and 0 <= lam <= 1
    torch.testing.assert_close(out, lam * x + (1 - lam) * x.flip(0))
    torch.testing.assert_close(t.sum(1), torch.ones(6))
    torch.testing.assert_close(t, mix_targets(y, 4, lam))


def test_cutmix_lambda_is_the_kept_area():
    torch.manual_seed(2)
    mix = MixupCutmix(10, mixup_alpha=0.0, cutmix_alpha=1.0)
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 16, 16).clone()  # image i is all i
    y = torch.tensor([0, 1, 2, 3])
    for _ in range(5):
        out, t = mix(x, y)
        kept = (out[0] == 0).float().mean().item()  # image 0's partner is image 3
        assert mix.last_mode == "cutmix" and kept == pytest.approx(mix.last_lam)
        assert t[0, 0].item() == pytest.approx(mix.last_lam) and t[0, 3].item() == pytest.approx(1 - mix.last_lam)
        torch.testing.assert_close(t.sum(1), torch.ones(4))


def test_mixup_switch_and_probability():
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    always_cutmix = MixupCutmix(4, 0.2, 1.0, switch_prob=1.0)
    never_cutmix = MixupCutmix(4, 0.2, 1.0, switch_prob=0.0)
    off = MixupCutmix(4, 0.2, 1.0, prob=0.0)
    for _ in range(5):
        always_cutmix(x, y)
        never_cutmix(x, y)
        out, t = off(x, y)
        assert always_cutmix.last_mode == "cutmix" and never_cutmix.last_mode == "mixup"
        assert torch.equal(out, x) and torch.equal(t, torch.eye(4))
    modes = set()
    both = MixupCutmix(4, 0.2, 1.0, switch_prob=0.5)
    for _ in range(30):
        both(x, y)
        modes.add(both.last_mode)
    assert modes == {"mixup", "cutmix"}
    assert build_mixup(load_recipe("quickstart").aug, 10) is None
    assert isinstance(build_mixup(load_recipe("rsb_a1").aug, 1000), MixupCutmix)


# ---------------------------------------------------------------------------------------- build_loaders
def test_quickstart_loaders():
    recipe = load_recipe("quickstart")
    train, val, num_classes, names = build_loaders(recipe)
    assert num_classes == 10 and names == [str(i) for i in range(10)]
    images, labels = next(iter(train))
    size = recipe.data.img_size
    assert images.shape == (recipe.data.batch_size, 3, size, size) and images.dtype == torch.float32
    assert labels.dtype == torch.long
    assert train.loader is None  # in memory: whole-batch augmentation, no per-image DataLoader
    assert abs(images.mean().item()) < 0.5 and 0.5 < images.std().item() < 1.5  # normalised by the digits' stats
    assert len(train) == len(train.dataset) // recipe.data.batch_size  # drop_last
    assert sum(len(lbl) for _, lbl in val) == len(val.dataset) == 1797 - len(train.dataset)


def test_train_order_is_deterministic_per_epoch():
    recipe = load_recipe("quickstart", ["aug.no_crop=true", "aug.hflip=0"])  # fixed transform: cached tensors

    def epoch_labels(loader, epoch=None):
        if epoch is not None:
            loader.set_epoch(epoch)
        return torch.cat([lbl for _, lbl in loader])

    a, _, _, _ = build_loaders(recipe)
    b, _, _, _ = build_loaders(recipe)
    e0, e1 = epoch_labels(a), epoch_labels(a)  # without set_epoch the epoch still advances
    assert not torch.equal(e0, e1)
    assert torch.equal(epoch_labels(b, 1), e1)  # a resumed run at epoch 1 sees epoch 1's order
    other_seed, _, _, _ = build_loaders(load_recipe("quickstart", ["aug.no_crop=true", "train.seed=1"]))
    assert not torch.equal(epoch_labels(other_seed, 0), e0)


def test_distributed_loaders_split_the_global_batch_and_the_data():
    recipe = load_recipe("quickstart", ["data.batch_size=64"])
    per_rank = [build_loaders(recipe, world_size=2, rank=k) for k in range(2)]
    train0, train1 = per_rank[0][0], per_rank[1][0]
    assert train0.batch_size == train1.batch_size == 32 and len(train0) == len(train1)
    idx0, idx1 = set(train0.sampler), set(train1.sampler)
    assert len(idx0 & idx1) <= 1  # DistributedSampler pads by at most one index for 2 ranks
    assert len(idx0 | idx1) == len(train0.dataset)
    eval_counts = [sum(len(lbl) for _, lbl in r[1]) for r in per_rank]
    assert sum(eval_counts) == len(per_rank[0][1].dataset)
    with pytest.raises(ConfigError, match="not divisible"):
        build_loaders(load_recipe("quickstart", ["data.batch_size=63"]), world_size=2, rank=0)


def test_repeated_aug_and_synthetic_loaders():
    recipe = load_recipe(None, ["data.dataset=synthetic", "data.img_size=16", "data.synthetic_train_size=300",
                                "data.synthetic_eval_size=10", "data.synthetic_num_classes=5", "data.batch_size=6",
                                "aug.repeated_aug=3", "data.workers=0"])
    train, val, num_classes, _ = build_loaders(recipe)
    assert isinstance(train.sampler, RepeatedAugSampler) and num_classes == 5
    images, labels = next(iter(train))
    assert images.shape == (6, 3, 16, 16)
    assert labels[0] == labels[1] == labels[2]  # one process: the 3 copies sit in the same batch
    assert not torch.equal(images[0], images[1])  # ... each with its own augmentation
    with pytest.raises(ConfigError, match="num_classes"):
        build_loaders(load_recipe(None, ["data.dataset=synthetic", "data.synthetic_num_classes=5",
                                         "model.num_classes=3"]))
