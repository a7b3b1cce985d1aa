"""flexbone.bench: MACs and parameters against torchvision's published numbers, and the measuring
machinery (interleaving, memory, train step, settings validation, result files)."""
import json

import pytest
import torch
import torch.nn as nn
import torchvision

import flexbone
from flexbone.bench import BenchSettings, count_macs, count_params, measure, model_complexity, prepare
from flexbone.bench.report import median_interval, write_report, write_results
from flexbone.bench.throughput import Runner, make_input, round_order
from flexbone.errors import ConfigError
from _helpers import sized
from flexbone.models import model_family

# torchvision's model metadata: "_ops" is GFLOPS in its docs' convention, i.e. giga multiply-accumulates
# of one 224x224 image (its counter, like ours, counts convolutions and linear layers only)
TV_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
}


@pytest.mark.parametrize("name", list(TV_WEIGHTS))
def test_macs_and_params_match_torchvision_metadata(name):
    meta = TV_WEIGHTS[name].meta
    c = model_complexity(name, img_size=224)
    assert c.params == meta["num_params"]
    assert c.macs / 1e9 == pytest.approx(meta["_ops"], rel=0.02)


def test_meta_counting_equals_counting_torchvision_model_on_real_tensors():
    # another input size than the metadata's, counted on a real torchvision model (a real forward pass)
    tv = torchvision.models.resnet18()
    assert model_complexity("resnet18", img_size=(64, 96)).macs == count_macs(tv, (64, 96))
    assert model_complexity("resnet18", img_size=64).params == count_params(tv)


def _one_model_per_family():
    by_family = {}
    for name in flexbone.list_models():
        by_family.setdefault(model_family(name), []).append(name)
    return [min(names, key=len) for _, names in sorted(by_family.items())]  # a short name: a base variant


@pytest.mark.parametrize("name", _one_model_per_family())
def test_meta_shortcuts_count_what_a_real_forward_counts(name):
    # model_complexity builds on meta and skips initialisers and normalisation kernels; the counts must be
    # those of the real model running real tensors (FlopCounterMode on the CPU, no shortcuts)
    kwargs, size = sized(name, 64)
    if kwargs:  # a fixed-size transformer: model_complexity's img_size is the input size, so use the model's own
        kwargs, size = {}, 224
    c = model_complexity(name, img_size=size, **kwargs)
    model = flexbone.create_model(name, **kwargs)
    assert c.params == count_params(model)
    assert c.macs == count_macs(model, size)


def test_count_macs_restores_training_mode_and_counts_in_eval():
    model = flexbone.create_model("resnet8s_tiny", drop_rate=0.5)
    model.train()
    macs = count_macs(model, 8)
    assert model.training
    assert macs == count_macs(model.eval(), 8)
    assert macs > 0


def test_count_params_trainable_only():
    model = flexbone.create_model("resnet8s_tiny")
    model.fc.requires_grad_(False)
    frozen = sum(p.numel() for p in model.fc.parameters())
    assert count_params(model, trainable_only=True) == count_params(model) - frozen


# ------------------------------------------------------------------------------ measuring machinery
def _fake_runner(name, calls):
    return Runner(name, "flexbone", nn.Identity(), lambda: calls.append(name), params=0, weights_mb=0.0)


def test_measure_interleaves_rounds_in_changing_order():
    calls = []
    a, b = _fake_runner("a", calls), _fake_runner("b", calls)
    s = BenchSettings(warmup=2, repeats=4, batch_size=4).validate()
    results = measure([a, b], s)
    # warm-up (2 steps) + one memory step per model, then rounds: a b, b a, b a, a b
    assert calls == ["a", "a", "a", "b", "b", "b"] + ["a", "b", "b", "a", "b", "a", "a", "b"]
    assert [len(r.latencies_ms) for r in results] == [4, 4]
    for r in results:
        assert r.throughput == pytest.approx(4 / (r.latency_p50_ms / 1e3))
        assert r.latency_p50_ms <= r.latency_p90_ms <= max(r.latencies_ms)


def test_round_order_gives_every_model_every_position_and_changing_neighbours():
    models = ["a", "b", "c", "d"]
    rounds = [round_order(models, i) for i in range(2 * len(models))]
    assert all(sorted(r) == models for r in rounds)
    for position in range(len(models)):
        assert sorted(r[position] for r in rounds) == sorted(models * 2)
    sequence = [m for r in rounds for m in r]
    before = {m: {p for p, n in zip(sequence, sequence[1:]) if n == m} for m in models}
    assert all(len(before[m] - {m}) >= 2 for m in models), before  # never always after the same model


def test_train_step_updates_weights_and_infer_does_not():
    s = BenchSettings(mode="train", batch_size=2, img_size=16, num_classes=10).validate()
    model = flexbone.create_model("resnet8s_tiny", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = prepare(model, s, make_input(s))
    runner.step()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "fc.weight" in changed and "conv1.weight" in changed

    s = BenchSettings(mode="infer", batch_size=2, img_size=16, num_classes=10).validate()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepare(model, s, make_input(s)).step()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_channels_last_and_bf16_are_applied():
    s = BenchSettings(batch_size=1, img_size=16, dtype="bf16", channels_last=True, num_classes=10).validate()
    x, _ = make_input(s)
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)
    runner = prepare(flexbone.create_model("resnet8s_tiny", num_classes=10), s, (x, None))
    assert runner.model.conv1.weight.dtype == torch.bfloat16
    assert runner.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    runner.step()


@pytest.mark.parametrize("change, message", [
    (dict(dtype="fp8"), "--dtype"),
    (dict(dtype="fp16"), "not supported on the CPU"),
    (dict(mode="eval"), "--mode"),
    (dict(device="tpu"), "--device"),
    (dict(batch_size=0), "--batch-size"),
    (dict(repeats=0), "--repeats"),
    (dict(warmup=-1), "--warmup"),
])
def test_invalid_settings_are_user_errors(change, message):
    with pytest.raises(ConfigError, match=message):
        BenchSettings(**change).validate()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_user_error():
    with pytest.raises(ConfigError, match="no CUDA device"):
        BenchSettings(device="cuda").validate()


def test_write_results_json_and_csv(tmp_path):
    rows = [dict(model="a", throughput=1.5), dict(model="b", throughput=2.0, extra=1)]
    write_results(tmp_path / "r.json", rows, environment={"torch": "x"})
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["results"] == rows and data["environment"] == {"torch": "x"}
    write_results(tmp_path / "r.csv", rows, command="flexbone bench a b")
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0] == "model,throughput,extra,command"
    assert lines[1] == "a,1.5,,flexbone bench a b"
    with pytest.raises(ConfigError, match=".json or .csv"):
        write_results(tmp_path / "r.txt", rows)


def test_write_report_writes_json_and_markdown(tmp_path):
    json_path, md_path = write_report(tmp_path / "new", "suite_cpu", {"ratios": [1.5]}, "# table\n")
    assert json.loads(json_path.read_text()) == {"ratios": [1.5]}
    assert md_path.read_text() == "# table\n" and md_path.name == "suite_cpu.md"


def test_environment_records_the_source_revision(monkeypatch):
    """Benchmark results name the commit they measured (git's own answer), or None outside a checkout."""
    import pathlib
    import subprocess

    from flexbone.bench import throughput

    root = pathlib.Path(flexbone.__file__).resolve().parents[2]
    revision = throughput.environment()["flexbone_revision"]
    if (root / ".git").exists() and (root / "src" / "flexbone").exists():
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        assert revision is not None and revision.split("+")[0] == head
    else:
        assert revision is None

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(throughput.subprocess, "run", no_git)
    assert throughput.source_revision() is None


@pytest.mark.parametrize("n", [6, 7, 9, 17, 20, 31, 58])
def test_median_interval_equals_scipys_order_statistic_interval(n):
    stats = pytest.importorskip("scipy.stats")
    values = torch.randn(n, generator=torch.Generator().manual_seed(n)).tolist()
    low, high, coverage = median_interval(values)
    reference = stats.quantile_test(values, q=0.0, p=0.5).confidence_interval(confidence_level=0.95)
    assert (low, high) == (reference.low, reference.high)
    k = sorted(values).index(low) + 1  # the interval is the k-th smallest to the k-th largest value
    assert sorted(values)[-k] == high
    assert coverage == pytest.approx(1 - 2 * stats.binom.cdf(k - 1, n, 0.5)) and coverage >= 0.95


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_median_interval_of_few_values_is_their_range_with_its_lower_coverage(n):
    stats = pytest.importorskip("scipy.stats")
    values = [float(v) for v in range(n, 0, -1)]
    low, high, coverage = median_interval(values)
    assert (low, high) == (1.0, float(n))
    assert coverage == pytest.approx(1 - 2 * stats.binom.cdf(0, n, 0.5)) and coverage < 0.95
    with pytest.raises(ValueError):
        median_interval([])
