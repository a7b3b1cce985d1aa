"""A checkpoint made for another input size loads as timm loads it: ViT's position embedding resampled to the
new patch grid, Swin's and TF MaxViT's relative-position tables resized to the new windows (``layers.pos_embed``);
`flexbone train`, `compare`, `info` and `list` build such models for the size they are asked about."""
import csv
import json

import pytest
import timm
import torch
import yaml
from timm.layers.pos_embed import resample_abs_pos_embed as timm_resample_abs_pos_embed
from timm.layers.pos_embed_rel import resize_rel_pos_bias_table as timm_resize_rel_pos_bias_table

import flexbone
from flexbone.bench.complexity import count_macs, count_params
from flexbone.cli import main
from flexbone.config.loader import recipe_path
from flexbone.layers.pos_embed import resample_abs_pos_embed, resize_rel_pos_bias_table

pytestmark = [pytest.mark.parity,  # timm's interpolation helper warns about its own indexing
              pytest.mark.filterwarnings("ignore::UserWarning:timm.layers.interpolate")]


@pytest.mark.parametrize("src,dst", [(7, 2), (7, 8), (7, 12), (8, 7), (4, 4), (2, 7)])
def test_rel_pos_tables_resize_as_timms(src, dst):
    g = torch.Generator().manual_seed(src * 100 + dst)
    flat = torch.randn((2 * src - 1) ** 2, 3, generator=g)  # Swin: (positions, heads)
    tf = torch.randn(3, 2 * src - 1, 2 * src - 1, generator=g)  # TF MaxViT: (heads, 2h-1, 2w-1)
    for table, shape in ((flat, ((2 * dst - 1) ** 2, 3)), (tf, (3, 2 * dst - 1, 2 * dst - 1))):
        want = timm_resize_rel_pos_bias_table(table, (dst, dst), shape)
        got = resize_rel_pos_bias_table(table, (dst, dst))
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("grid", [(2, 2), (5, 5), (24, 24), (14, 14)])
def test_position_embedding_resamples_as_timms(grid):
    pos = torch.randn(1, 1 + 14 * 14, 8, generator=torch.Generator().manual_seed(grid[0]))
    want = timm_resample_abs_pos_embed(pos, list(grid), num_prefix_tokens=1)
    torch.testing.assert_close(resample_abs_pos_embed(pos, grid, 1), want, rtol=0, atol=0)


@pytest.mark.parametrize("name,size", [("vit_tiny_patch16_224", 96), ("swin_tiny_patch4_window7_224", 64),
                                       ("maxvit_tiny_tf_224", 64)])
def test_a_224_checkpoint_loads_into_a_model_of_another_size_as_in_timm(tmp_path, name, size):
    """timm's 224 px model saved; timm's model built for ``size`` loads it through timm's checkpoint filter; ours
    through ``create_model(pretrained=file)``: same weights, same outputs."""
    filters = {"vit": timm.models.vision_transformer.checkpoint_filter_fn,
               "swin": timm.models.swin_transformer.checkpoint_filter_fn,
               "maxvit": timm.models.maxxvit.checkpoint_filter_fn}
    torch.manual_seed(0)
    state = timm.create_model(name).state_dict()
    torch.save(state, tmp_path / "w.pth")
    ref = timm.create_model(name, img_size=size).eval()
    ref.load_state_dict(filters[name.split("_")[0]](dict(state), ref))
    ours = flexbone.create_model(name, img_size=size, pretrained=str(tmp_path / "w.pth")).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-5)
    resized = [k for k in ref.state_dict() if state.get(k) is not None and state[k].shape != ref.state_dict()[k].shape]
    assert resized  # the test is about tables that had to change


@pytest.fixture
def tiny_recipe(tmp_path):
    """quickstart cut to 2 optimiser steps of 16 images per epoch."""
    raw = yaml.safe_load(recipe_path("quickstart").read_text())
    raw["data"]["batch_size"], raw["train"]["max_steps_per_epoch"] = 16, 2
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path / "tiny.yaml"


@pytest.mark.cli
def test_train_builds_a_vit_for_the_recipes_size_and_validate_rebuilds_it(tmp_path, tiny_recipe, capsys):
    """A ViT trained at 32 px from a 224 px checkpoint: the run's recipe and weights say img_size=32, so validate
    rebuilds the model that was trained."""
    weights = tmp_path / "vit224.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224").state_dict(), weights)
    assert main(["train", "--recipe", str(tiny_recipe), "--model", "vit_tiny_patch16_224", "--schedule.epochs", "1",
                 "--data.img_size", "32", "--data.test_img_size", "32", "--model.pretrained", str(weights),
                 "--train.output_dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert yaml.safe_load((run / "recipe.yaml").read_text())["model"]["kwargs"] == {"img_size": 32}
    trained = flexbone.load_state_dict(run / "model.safetensors")
    assert trained["pos_embed"].shape == timm.create_model("vit_tiny_patch16_224", img_size=32).pos_embed.shape
    capsys.readouterr()
    assert main(["validate", "--checkpoint", str(run / "model.safetensors"), "--data", "digits"]) == 0
    assert "359 images at 32 px" in capsys.readouterr().out


@pytest.mark.cli
def test_compare_fine_tunes_a_vit_checkpoint_at_another_size(tmp_path, tiny_recipe):
    """--img-size 32 for a ViT made for 224: built for 32 px everywhere (size, latency, export, fine-tune), and
    its 224 px checkpoint loads with the position embedding resampled."""
    weights = tmp_path / "vit224.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224").state_dict(), weights)
    out = tmp_path / "cmp"
    assert main(["compare", "vit_tiny_patch16_224", "--data", "digits", "--epochs", "1", "--img-size", "32",
                 "--recipe", str(tiny_recipe), "--pretrained", f"vit_tiny_patch16_224={weights}",
                 "--out", str(out), "--repeats", "1", "--warmup", "0", "--batch-size", "2", "--threads", "1",
                 "--no-progress"]) == 0
    with open(out / "compare.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    ref = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=1000)
    assert int(row["params"]) == count_params(ref) and int(row["macs"]) == count_macs(ref, 32)
    assert row["onnxruntime_error"] == "" and float(row["onnxruntime_latency_b2_ms"]) > 0
    assert 0 <= float(row["top1"]) <= 100
    recipe = yaml.safe_load((out / "runs" / "vit_tiny_patch16_224" / "recipe.yaml").read_text())
    assert recipe["model"]["kwargs"]["img_size"] == 32


@pytest.mark.cli
def test_info_and_list_build_a_vit_for_the_size_asked(capsys):
    ref = timm.create_model("vit_tiny_patch16_224", img_size=64)
    assert main(["info", "vit_tiny_patch16_224", "--img-size", "64", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == count_params(ref) and info["macs"] == count_macs(ref, 64)
    assert main(["list", "vit_tiny_patch16_224", "--img-size", "64", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["params"] == count_params(ref) and row["macs"] == count_macs(ref, 64)


@pytest.mark.cli
def test_export_builds_a_vit_for_its_img_size(tmp_path):
    """`flexbone export --model vit_... --img-size 32` (no checkpoint): the model is built for 32 px, so the
    export's own onnxruntime check runs on a 32 px input instead of failing on it."""
    import onnx

    out = tmp_path / "vit32.onnx"
    assert main(["export", "--model", "vit_tiny_patch16_224", "--img-size", "32", "--format", "onnx",
                 "--out", str(out)]) == 0
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert sidecar["kwargs"] == {"img_size": 32} and sidecar["input_size"] == [3, 32, 32]
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][-2:] == [32, 32]
