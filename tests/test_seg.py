"""Segmentation (flexbone.seg): heads over every family's pyramid, metrics against scikit-learn, data layouts
and their errors (files made here), joint transforms, and a tiny training run through the recipe system."""
import json
import warnings

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from sklearn.metrics import accuracy_score, confusion_matrix, jaccard_score

import flexbone
from flexbone.checkpoint import save_state_dict
from flexbone.errors import ConfigError
from flexbone.seg import (ConfusionMatrix, SegDataError, SegmentationModel, SegmentationPairs, apply_joint,
                          cityscapes_label_map, cityscapes_pairs, create_segmentation_model, evaluate_segmentation,
                          folder_pairs, train_transform)
from flexbone.seg.data import DigitsSegmentation, eval_transform

from _ddp import scenario


# ------------------------------------------------------------------------------------------ metrics
def test_confusion_matrix_metrics_equal_sklearn():
    g = torch.Generator().manual_seed(0)
    k = 5
    target = torch.randint(0, k, (3, 17, 19), generator=g)
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.6, target, torch.randint(0, k, target.shape, generator=g))
    target[:, :3] = 255  # ignored pixels
    target[target == 4] = 2  # class 4 never in the labels (but predicted): IoU 0, counts in the mean
    pred[pred == 3] = 1
    target[target == 3] = 1  # class 3 in neither: NaN, left out of the mean
    cm = ConfusionMatrix(k)
    cm.update(pred[:2], target[:2])
    cm.update(torch.nn.functional.one_hot(pred[2:], k).permute(0, 3, 1, 2).float(), target[2:])  # logits too
    keep = (target != 255).flatten().numpy()
    t, p = target.flatten().numpy()[keep], pred.flatten().numpy()[keep]
    assert np.array_equal(cm.matrix.numpy(), confusion_matrix(t, p, labels=list(range(k))))
    out = cm.compute()
    present = [0, 1, 2, 4]
    want_iou = jaccard_score(t, p, labels=present, average=None)
    assert np.allclose([out["iou"][c] for c in present], 100 * want_iou)
    assert np.isnan(out["iou"][3])
    assert out["miou"] == pytest.approx(100 * want_iou.mean())
    assert out["pixel_acc"] == pytest.approx(100 * accuracy_score(t, p))
    assert out["pixels"] == keep.sum()


# ------------------------------------------------------------------------------------------ models
def _ofa_subnet_pyramid():
    supernet = flexbone.create_model("ofa_mbv3_d234_e346_k357_w1.0")
    sub = supernet.extract(supernet.space.min())
    return sub.as_features((-4, -3, -2, -1))


# one small model of every family that has a 4-level pyramid, with each head kind somewhere
FAMILIES = [
    ("resnet18", "ffnet_b"), ("resnetrs50", "ffnet_c_mobile"), ("mobilenetv2_035", "fpn"),
    ("mobilenetv3_small_050", "ffnet_a"), ("pvt_v2_b0", "ffnet_b_mobile"), ("pvt_tiny", "fpn"), ("ese_vovnet19b_slim_dw", "fpn"),
    ("cb_resnet18", "ffnet_b"), ("ofa_subnet", "ffnet_c"),
]


@pytest.mark.parametrize("backbone,head", FAMILIES)
def test_head_over_every_family(backbone, head):
    torch.manual_seed(0)
    if backbone == "ofa_subnet":
        model = SegmentationModel(_ofa_subnet_pyramid(), head, num_classes=3)
    else:
        model = create_segmentation_model(f"seg_{head}_{backbone}", num_classes=3)
    assert model.feature_info.reduction()[0] == 4
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 3, 16, 16)  # logits at 1/4
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.head.parameters())


def test_backbone_weights_from_a_classification_checkpoint(tmp_path):
    cls = flexbone.create_model("resnet18", num_classes=10)
    path = tmp_path / "resnet18.safetensors"
    save_state_dict(cls.state_dict(), path)
    seg = create_segmentation_model("seg_ffnet_b_resnet18", num_classes=4, pretrained=path)
    fresh = create_segmentation_model("seg_ffnet_b_resnet18", num_classes=4)
    own = seg.backbone.state_dict()
    assert own and all(torch.equal(v, cls.state_dict()[k]) for k, v in own.items())
    assert not any(k.startswith("fc.") for k in own)
    # the head is initialised fresh, as FFNet does (its official initialiser: conv biases 1e-4)
    assert seg.head.seg.last_layer[0].bias.eq(1e-4).all()
    assert fresh.head.seg.last_layer[3].weight.shape == (4, 256, 3, 3)


def test_segmentation_names():
    assert isinstance(create_segmentation_model("ffnet40S_BBB_mobile", num_classes=2), flexbone.models.ffnet.FFNet)
    with pytest.raises(ConfigError, match="classification form"):
        create_segmentation_model("ffnet40S_BBX_mobile")
    with pytest.raises(flexbone.errors.UnknownModelError, match="seg_<head>_<backbone>"):
        create_segmentation_model("seg_unet_resnet18")


# ------------------------------------------------------------------------------------------ data
def _png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode).save(path)


def _folder(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        _png(tmp_path / "images/train" / f"{name}.png", rng.integers(0, 255, (12, 16, 3)))
    good = rng.integers(0, 3, (12, 16))
    good[0, 0] = 255
    pal = Image.fromarray(good.astype(np.uint8), "P")  # a palette PNG: indices are the classes
    pal.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    (tmp_path / "masks/train").mkdir(parents=True)
    pal.save(tmp_path / "masks/train/a.png")
    _png(tmp_path / "masks/train/b.png", rng.integers(0, 3, (10, 16)))  # wrong size
    return good


def test_folder_layout_pairs_errors_and_skips(tmp_path):
    good = _folder(tmp_path)
    with pytest.warns(UserWarning, match="1 image"):
        pairs, skipped = folder_pairs(tmp_path, "train")
    assert [p[0].rsplit("/", 1)[1] for p in pairs] == ["a.png", "b.png"] and skipped[0].endswith("c.png")
    with pytest.raises(SegDataError, match="c.png has no mask"):
        folder_pairs(tmp_path, "train", strict=True)
    ds = SegmentationPairs(pairs, num_classes=3)
    image, mask = ds[0]
    assert image.shape == (3, 12, 16) and image.dtype == torch.float32
    assert torch.equal(mask, torch.from_numpy(good).long())  # palette indices, 255 kept
    with pytest.warns(UserWarning, match="mask is 16x10 but its image is 16x12"):
        _, mask = ds[1]
    assert mask.eq(255).all()
    with pytest.raises(SegDataError, match="b.png: mask is 16x10"):
        SegmentationPairs(pairs, num_classes=3, strict=True)[1]
    with pytest.raises(ConfigError, match="images/val"):
        folder_pairs(tmp_path, "val")


def test_labels_out_of_range(tmp_path):
    _folder(tmp_path)
    pairs = [(str(tmp_path / "images/train/a.png"), str(tmp_path / "masks/train/a.png"))]
    with pytest.raises(SegDataError, match=r"labels \[2\] are outside 0..1"):
        SegmentationPairs(pairs, num_classes=2, strict=True)[0]
    with pytest.warns(UserWarning, match="outside"):
        _, mask = SegmentationPairs(pairs, num_classes=2)[0]
    raw = np.array(Image.open(tmp_path / "masks/train/a.png"))
    assert torch.equal(mask, torch.from_numpy(np.where(raw == 2, 255, raw)).long())


def test_cityscapes_layout_maps_label_ids_to_train_ids(tmp_path):
    ids = np.arange(-1, 34)  # every Cityscapes label id (-1: license plate, stored as 255 in the PNG)
    label_ids = np.resize(np.where(ids < 0, 255, ids), (5, 7)).astype(np.uint8)
    for split, city, stem in (("train", "aachen", "aachen_000000_000019"), ("val", "lindau", "lindau_000001_000019")):
        _png(tmp_path / f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png", np.zeros((5, 7, 3)))
        _png(tmp_path / f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png", label_ids)
    _png(tmp_path / "leftImg8bit/train/aachen/aachen_000001_000019_leftImg8bit.png", np.zeros((5, 7, 3)))  # no gt
    with pytest.warns(UserWarning, match="no mask"):
        pairs, skipped = cityscapes_pairs(tmp_path, "train")
    assert len(pairs) == 1 and len(skipped) == 1
    _, mask = SegmentationPairs(pairs, 19, label_map=cityscapes_label_map())[0]
    # torchvision's table of Cityscapes classes: train_id per label id (255 / -1: not evaluated)
    table = {c.id: (255 if c.train_id in (-1, 255) else c.train_id) for c in torchvision.datasets.Cityscapes.classes}
    want = np.vectorize(lambda v: table[-1 if v == 255 else v])(label_ids)
    assert torch.equal(mask, torch.from_numpy(want).long())
    assert sorted(set(want.flatten()) - {255}) == list(range(19))


def test_joint_transform_moves_mask_with_image_and_colour_only_touches_image():
    torch.manual_seed(0)
    mask = torch.randint(0, 5, (20, 30))
    image = (mask * 40).to(torch.uint8).expand(3, -1, -1).clone()  # the image encodes the mask
    tf = train_transform(24, scale=(1.0, 1.0), hflip=0.5, mean=(0, 0, 0), std=(1, 1, 1))
    for _ in range(5):
        img, m = apply_joint(tf, image, mask)
        assert img.shape == (3, 24, 24) and m.shape == (24, 24)
        inside = m != 255  # the crop pads the 20 rows to 24 with the ignore label
        assert inside.sum() == 20 * 24
        assert torch.equal((img[0] * 255 / 40).round().long()[inside], m[inside])
    jitter = train_transform(20, scale=(0.5, 2.0), color_jitter=0.5, hflip=0.0)
    img, m = apply_joint(jitter, image, mask)
    assert set(m.unique().tolist()) <= set(range(5)) | {255}  # nearest: no new labels


def test_digits_segmentation_is_fixed_and_labelled():
    a, b = DigitsSegmentation("val", 6, size=48), DigitsSegmentation("val", 6, size=48)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images[:3], DigitsSegmentation("train", 3, size=48).images)
    assert a.masks.max() <= 10 and (a.masks > 0).any() and (a.masks == 0).float().mean() > 0.5
    image, mask = a[0]
    assert image.shape == (3, 48, 48) and mask.shape == (48, 48)
    # digit pixels are brighter than background pixels (ink in the foreground colour)
    grey = a.images[0].float().mean(0)
    assert grey[a.masks[0] > 0].mean() > grey[a.masks[0] == 0].mean() + 50


# ------------------------------------------------------------------------------------------ training
def test_evaluate_upsamples_logits_and_counts_every_labelled_pixel():
    ds = DigitsSegmentation("val", 4, size=32, transform=eval_transform())
    loader = torch.utils.data.DataLoader(ds, batch_size=2)

    class Background(torch.nn.Module):  # logits at 1/4 that always say "background"
        def forward(self, x):
            logits = torch.zeros(x.shape[0], 11, 8, 8)
            logits[:, 0] = 1
            return logits

    out = evaluate_segmentation(Background(), loader, torch.device("cpu"), 11)
    assert out["pixels"] == 4 * 32 * 32
    assert out["pixel_acc"] == pytest.approx(100 * float((ds.masks == 0).float().mean()))
    assert out["iou"][0] == pytest.approx(out["pixel_acc"])  # all predicted background


# a few steps of seg_digits at 32 px with everything the engine adds: EMA, the poly schedule, checkpoints
TINY = ["--model.name", "seg_fpn_mobilenetv3_small_050", "--seg.digits_train_size", "16",
        "--seg.digits_val_size", "4", "--seg.digits_canvas", "32", "--data.img_size", "32", "--data.batch_size", "8",
        "--schedule.epochs", "2", "--schedule.name", "poly", "--train.ema_decay", "0.9", "--train.log_interval", "1",
        "--train.eval_every", "1"]


def _train_tiny(tmp_path, name="run", extra=(), **kwargs):
    from flexbone.config import load_recipe
    from flexbone.train.engine import run

    recipe = load_recipe("seg_digits", TINY + ["--train.output_dir", str(tmp_path), "--train.run_name", name,
                                               *extra])
    assert recipe.task == "segmentation"
    return run(recipe, progress=False, quiet=True, **kwargs)


def test_seg_digits_recipe_trains_through_the_engine(tmp_path):
    import csv

    result = _train_tiny(tmp_path)
    assert result.metric == "miou" and result.top1 is None
    assert 0 <= result.final["miou"] <= 100 and len(result.final["iou"]) == 11
    assert result.best == max(r["eval_miou"] for r in _rows(result.run_dir))  # checkpoint-best chosen on mIoU
    run_dir = tmp_path / "run"
    for f in ("checkpoint-last.pt", "checkpoint-best.pt", "model.safetensors", "model_ema.safetensors", "recipe.yaml"):
        assert (run_dir / f).is_file(), f
    with open(run_dir / "metrics.csv") as f:
        row = list(csv.DictReader(f))[-1]
    assert {"eval_miou", "eval_pixel_acc", "ema_miou", "eval_loss"} <= set(row)
    assert float(row["eval_miou"]) == pytest.approx(result.final["miou"])
    with pytest.raises(ConfigError, match="already holds"):
        _train_tiny(tmp_path)
    with pytest.raises(ConfigError, match="not one"):
        _train_tiny(tmp_path, "cls", ["--model.name", "resnet18"])


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_interrupted_and_resumed_segmentation_run_is_bit_identical(tmp_path, monkeypatch):
    from flexbone.train import engine
    from flexbone.train.checkpoint import LAST, load_training_state

    # random scale, crop (padded with the ignore label), colour jitter, shuffling, EMA: all must resume exactly
    extra = ["--seg.scale", "[0.5, 1.5]", "--seg.color_jitter", "0.3", "--train.max_steps_per_epoch", "2"]
    full = _train_tiny(tmp_path, "full", extra)
    original = engine.train_one_epoch

    def interrupted(model, loader, *args, epoch=0, **kwargs):  # killed after one step of the second epoch
        if epoch == 1:
            def dying_loader():
                for i, batch in enumerate(loader):
                    if i == 1:
                        raise KeyboardInterrupt
                    yield batch
            return original(model, dying_loader(), *args, epoch=epoch, **kwargs)
        return original(model, loader, *args, epoch=epoch, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _train_tiny(tmp_path, "cut", extra)
    assert load_training_state(tmp_path / "cut")["epoch"] == 1
    monkeypatch.setattr(engine, "train_one_epoch", original)
    torch.manual_seed(12345)  # the resuming process's generators have moved on
    resumed = _train_tiny(tmp_path, "cut", extra, resume=tmp_path / "cut")
    a, b = (torch.load(r.run_dir / LAST, weights_only=True) for r in (full, resumed))
    assert a["step"] == b["step"] == 4 and a["best_metric"] == "miou" and a["best_score"] == b["best_score"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]["module"]:
        assert torch.equal(a["ema"]["module"][key], b["ema"]["module"][key]), key
    for idx, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], b["optimizer"]["state"][idx]["exp_avg"])
    assert full.final["miou"] == resumed.final["miou"] and [r["epoch"] for r in _rows(resumed.run_dir)] == [0, 1]
    init = create_segmentation_model("seg_fpn_mobilenetv3_small_050", num_classes=11).state_dict()
    assert any(not torch.equal(v, a["model"][k]) for k, v in init.items() if v.is_floating_point())  # it trained


@pytest.mark.cli
def test_validate_and_predict_commands_on_a_segmentation_run(tmp_path, capsys):
    from flexbone.cli import main

    run = _train_tiny(tmp_path)
    ckpt = str(tmp_path / "run/model.safetensors")
    capsys.readouterr()
    assert main(["validate", "--checkpoint", ckpt, "--data", "seg_digits", "--json", "--workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["miou"] == pytest.approx(run.final["miou"]) and result["images"] == 4  # the run's own val set
    assert main(["validate", "--checkpoint", str(tmp_path / "run/checkpoint-last.pt"), "--data", "seg_digits",
                 "--json", "--workers", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["miou"] == pytest.approx(run.final["miou"])
    ds = DigitsSegmentation("val", 2, size=32)
    for i in range(2):
        Image.fromarray(ds.images[i].permute(1, 2, 0).numpy()).save(tmp_path / f"canvas{i}.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    out = tmp_path / "pred"
    code = main(["predict", "--checkpoint", ckpt, str(tmp_path / "canvas0.png"), str(tmp_path / "canvas1.png"),
                 str(tmp_path / "bad.png"), "--out", str(out)])
    assert code == 2  # one unreadable image, the others done
    mask = Image.open(out / "canvas0_mask.png")
    assert mask.mode == "P" and mask.size == (32, 32) and np.array(mask).max() <= 10
    assert Image.open(out / "canvas1_overlay.png").size == (32, 32)
    assert not list(out.glob("bad*")) and not list(out.glob(".*tmp"))


@pytest.mark.slow
def test_segmentation_models_export_to_onnx_and_match_in_onnxruntime(tmp_path):
    import onnxruntime as ort

    from flexbone.export import export_model, load_source

    # a registered FFNet through flexbone's export path (which checks the artifact in onnxruntime itself) ...
    export_model(load_source("ffnet40S_BCC_mobile", num_classes=5), tmp_path / "ffnet.onnx", "onnx", img_size=64,
                 log=lambda *a: None)
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    # ... and a head over a zoo pyramid, exported by torch and run in onnxruntime
    model = create_segmentation_model("seg_ffnet_c_mobile_mobilenetv2_035", num_classes=5).eval()
    torch.onnx.export(model, (x,), str(tmp_path / "seg.onnx"), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["logits"])
    got = ort.InferenceSession(str(tmp_path / "seg.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == (1, 5, 16, 16) and np.abs(got - want).max() < 1e-4
    session = ort.InferenceSession(str(tmp_path / "ffnet.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {session.get_inputs()[0].name: x.numpy()})[0].shape == (1, 5, 16, 16)


scenario("seg_confusion", kind="confusion")  # tests/ddp_train_worker.py: each rank's own batch, all-reduced


@pytest.mark.slow  # two processes (torchrun, gloo)
@pytest.mark.xdist_group("ddp")
def test_confusion_matrix_is_summed_over_processes(ddp_runs):
    out = ddp_runs("seg_confusion")
    want = np.zeros((3, 3), np.int64)
    for rank in range(2):  # each process's own batch (drawn as the worker draws it), counted here by scikit-learn
        g = torch.Generator().manual_seed(rank)
        pred, target = torch.randint(0, 3, (2, 5, 5), generator=g), torch.randint(0, 3, (2, 5, 5), generator=g)
        want += confusion_matrix(target.flatten().numpy(), pred.flatten().numpy(), labels=[0, 1, 2])
    for rank in range(2):
        assert np.array_equal(np.array(json.loads((out / f"rank{rank}.json").read_text())), want)


# ------------------------------------------------------------------------------------------ registry
def test_seg_names_are_registry_models():
    from flexbone.errors import UnknownModelError
    from flexbone.models import model_family

    assert not [n for n in flexbone.list_models() if n.startswith("seg_")]  # the zoo the registry-wide tests walk
    listed = flexbone.list_models("seg_*")
    assert listed == flexbone.list_models(family="seg") and len(listed) >= 7 * 5
    heads = {"ffnet_a", "ffnet_b", "ffnet_c", "ffnet_a_mobile", "ffnet_b_mobile", "ffnet_c_mobile", "fpn"}
    backbones = {n.removeprefix(f"seg_{h}_") for n in listed for h in heads
                 if n.startswith(f"seg_{h}_") and not n.startswith(f"seg_{h}_mobile_")}
    assert {h for h in heads if f"seg_{h}_resnet18" in listed} == heads
    assert {"resnet", "mobilenet", "pvt", "vovnet", "cbnet"} <= {model_family(b) for b in backbones}
    # each head builds by name (on the meta device: no weights) with logits at 1/4; the listed backbones give their
    # pyramid with features_only (tests/test_contract.py, every family) and a head over each family is trained
    # above (test_head_over_every_family)
    assert all(flexbone.is_model(n) for n in listed)
    with torch.device("meta"):
        for name in (f"seg_{h}_resnet18" for h in sorted(heads)):
            model = flexbone.create_model(name, num_classes=3)
            assert isinstance(model, SegmentationModel) and model.default_cfg["architecture"] == name
            assert model(torch.empty(1, 3, 64, 64)).shape == (1, 3, 16, 16), name
    # names beyond the listed ones resolve too; bad ones are unknown models with a hint
    assert flexbone.is_model("seg_fpn_mobilenetv2_035") and model_family("seg_fpn_mobilenetv2_035") == "seg"
    assert not flexbone.is_model("seg_fpn_resnet19") and not flexbone.is_model("seg_unet_resnet18")
    with pytest.raises(UnknownModelError, match="Did you mean: resnet18"):
        flexbone.create_model("seg_ffnet_b_resnet19")


# one epoch: the mIoU is not yet 0 after it (after two steps at the poly schedule's end it was, and 0 == 0 checked
# nothing); equal to the single-process value only with rank 0's BN statistics on both ranks (broadcast_buffers)
scenario("seg_train", ["--recipe", "seg_digits", *TINY, "--seg.digits_val_size", "5", "--schedule.epochs", "1",
                       "--train.max_steps_per_epoch", "1", "--no-progress", "--threads", "1"])


@pytest.mark.slow  # torchrun, two processes (gloo)
@pytest.mark.cli
@pytest.mark.xdist_group("ddp")
def test_two_process_segmentation_run_sums_the_confusion_matrix(ddp_runs, capsys):
    from flexbone.cli import main

    out = ddp_runs("seg_train")
    assert sorted(p.name for p in out.iterdir()) == ["ddp-rank0"]  # rank 1 wrote nothing
    logged = _rows(out / "ddp-rank0")[-1]
    # the run's mIoU (each process evaluated its shard of the 5 canvases, 3 + 2, matrices summed) is the mIoU of
    # the whole val set in one process
    capsys.readouterr()
    assert main(["validate", "--checkpoint", str(out / "ddp-rank0/model.safetensors"), "--data", "seg_digits",
                 "--json", "--workers", "0"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["images"] == 5
    assert logged["eval_miou"] > 0
    assert logged["eval_miou"] == pytest.approx(single["miou"], abs=1e-9)
    assert logged["eval_pixel_acc"] == pytest.approx(single["pixel_acc"], abs=1e-9)


def test_an_ffnet_trains_through_the_segmentation_recipe(tmp_path):
    # the recipe's model options (drop rates 0) reach FFNet as they reach every model
    result = _train_tiny(tmp_path, "ffnet", ["--model.name", "ffnet40S_BCC_mobile", "--schedule.epochs", "1",
                                              "--train.max_steps_per_epoch", "1", "--train.ema_decay", "0"])
    assert result.metric == "miou" and 0 <= result.final["miou"] <= 100
    with pytest.raises(ConfigError, match="no stochastic depth"):
        flexbone.create_model("ffnet40S_BCC_mobile", drop_path_rate=0.1)
