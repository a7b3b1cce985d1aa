"""Losses against torch's cross-entropy and timm's BCE / soft-target CE."""
import pytest
import torch
import torch.nn.functional as F

from flexbone.errors import ConfigError
from flexbone.train.losses import (
    BinaryCrossEntropy, CrossEntropy, DistillationLoss, SoftTargetCrossEntropy, create_loss, distillation_loss,
)

timm_loss = pytest.importorskip("timm.loss")


def _batch(b=6, c=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g) * 3
    target = torch.randint(0, c, (b,), generator=g)
    soft = torch.softmax(torch.randn(b, c, generator=g) * 2, dim=-1)
    return logits, target, soft


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_cross_entropy_matches_torch_and_timm(smoothing):
    logits, target, _ = _batch()
    ours = CrossEntropy(smoothing)(logits, target)
    torch.testing.assert_close(ours, F.cross_entropy(logits, target, label_smoothing=smoothing))
    torch.testing.assert_close(ours, timm_loss.LabelSmoothingCrossEntropy(smoothing)(logits, target))


@pytest.mark.parity
def test_soft_target_ce_matches_timm():
    logits, _, soft = _batch()
    ref = timm_loss.SoftTargetCrossEntropy()(logits, soft)
    torch.testing.assert_close(SoftTargetCrossEntropy()(logits, soft), ref)
    torch.testing.assert_close(CrossEntropy(0.1)(logits, soft), ref)  # soft targets: smoothing done upstream


@pytest.mark.parity
@pytest.mark.parametrize("smoothing, threshold", [(0.0, None), (0.1, None), (0.0, 0.2), (0.1, 0.2)])
def test_bce_matches_timm(smoothing, threshold):
    logits, target, soft = _batch()
    ref = timm_loss.BinaryCrossEntropy(smoothing=smoothing, target_threshold=threshold)
    ours = BinaryCrossEntropy(smoothing=smoothing, target_threshold=threshold)
    torch.testing.assert_close(ours(logits, target), ref(logits, target))
    torch.testing.assert_close(ours(logits, soft), ref(logits, soft))
    ref_sum = timm_loss.BinaryCrossEntropy(smoothing=smoothing, target_threshold=threshold, sum_classes=True)
    ours_sum = BinaryCrossEntropy(smoothing=smoothing, target_threshold=threshold, sum_classes=True)
    torch.testing.assert_close(ours_sum(logits, soft), ref_sum(logits, soft))


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_distillation_is_kl_between_tempered_softmaxes(temperature):
    student, _, _ = _batch(seed=1)
    teacher, _, _ = _batch(seed=2)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    loss = distillation_loss(student, teacher, temperature)
    # external reference: torch.distributions' KL(teacher || student) of the tempered categoricals
    p_t = torch.distributions.Categorical(logits=teacher.detach() / temperature)
    p_s = torch.distributions.Categorical(logits=student.detach() / temperature)
    torch.testing.assert_close(loss.detach(), torch.distributions.kl_divergence(p_t, p_s).mean() * temperature ** 2)
    # = soft-target CE against the teacher minus the teacher's entropy (timm's SoftTargetCrossEntropy)
    ce = timm_loss.SoftTargetCrossEntropy()(student.detach() / temperature, p_t.probs)
    torch.testing.assert_close(loss.detach(), (ce - p_t.entropy().mean()) * temperature ** 2)
    loss.backward()
    assert teacher.grad is None and student.grad is not None  # the teacher is not pushed towards the student


def test_distillation_loss_mixes_task_loss():
    student, target, _ = _batch(seed=3)
    teacher, _, _ = _batch(seed=4)
    mixed = DistillationLoss(CrossEntropy(), temperature=2.0, alpha=0.25)(student, teacher, target)
    expected = 0.25 * distillation_loss(student, teacher, 2.0) + 0.75 * F.cross_entropy(student, target)
    torch.testing.assert_close(mixed, expected)


def test_create_loss():
    assert isinstance(create_loss("ce", 0.1), CrossEntropy)
    bce = create_loss("bce", 0.0, bce_target_threshold=0.2)
    assert isinstance(bce, BinaryCrossEntropy) and bce.target_threshold == 0.2
    assert isinstance(create_loss("soft_ce"), SoftTargetCrossEntropy)
    with pytest.raises(ConfigError, match="unknown loss"):
        create_loss("focal")
