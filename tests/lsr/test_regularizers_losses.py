"""Regularizers and losses against hand-computed values, and each regularizer sparsifies."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lsr import EncoderError
from lsr.losses import (
    combine_teachers,
    info_nce,
    kl_distillation,
    margin_mse,
    minmax_normalize,
    pairwise_scores,
)
from lsr.mlm import MLMSparseModel
from lsr.regularizers import (
    FLOPS,
    L1,
    IDFAwareFLOPS,
    L0MaskedFLOPS,
    QuadraticWarmup,
    make_regularizer,
)

W = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])


def test_regularizer_values():
    assert float(FLOPS()(W)) == pytest.approx(2.0**2 + 0 + 1.0**2)
    assert float(L1()(W)) == pytest.approx((3 + 3) / 2)
    idf = np.array([2.0, 1.0, 0.5])
    assert float(IDFAwareFLOPS(idf)(W)) == pytest.approx(4.0 / 2.0 + 1.0 / 0.5)
    # tau=1: only the first row (2 non-zeros) is penalized; the mean still runs over the batch
    assert float(L0MaskedFLOPS(tau=1)(W)) == pytest.approx(0.5**2 + 1.0**2)
    assert float(L0MaskedFLOPS(tau=5)(W)) == 0.0


def test_quadratic_warmup():
    s = QuadraticWarmup(1e-3, warmup_steps=100)
    assert s(0) == 0 and s(50) == pytest.approx(2.5e-4) and s(100) == s(500) == 1e-3
    assert QuadraticWarmup(0.5)(0) == 0.5


def test_unknown_regularizer():
    with pytest.raises(EncoderError, match="Unknown regularizer"):
        make_regularizer("l7")
    with pytest.raises(EncoderError, match="needs IDF"):
        make_regularizer("idf_flops")


@pytest.mark.parametrize("kind", ["flops", "idf_flops", "l0_flops", "l1"])
def test_each_regularizer_alone_reduces_non_zeros(tiny_mlm, kind):
    torch.manual_seed(0)
    model = MLMSparseModel.from_pretrained(tiny_mlm)
    idf = np.linspace(0.5, 3.0, model.vocab_size)
    reg = make_regularizer(kind, idf=idf, tau=0)
    texts = ["the cat sat on the mat", "paris is the capital of france", "bees make honey"] * 2
    opt = torch.optim.Adam(model.model.parameters(), lr=3e-3)

    def nnz():
        with torch.no_grad():
            return int((model.forward(texts) > 0).sum())

    before = nnz()
    for _ in range(40):
        opt.zero_grad()
        reg(model.forward(texts)).backward()
        opt.step()
    assert nnz() < 0.5 * before


def test_info_nce_in_batch_and_hard_negatives():
    torch.manual_seed(1)
    q, pos, neg = torch.rand(3, 5), torch.rand(3, 5), torch.rand(3, 2, 5)
    docs = torch.cat([pos, neg.flatten(0, 1)])
    expected = F.cross_entropy(q @ docs.T, torch.arange(3))
    assert torch.allclose(info_nce(q, pos, neg), expected)
    own = torch.cat([pos.unsqueeze(1), neg], 1)
    expected_own = F.cross_entropy(
        torch.einsum("bv,bnv->bn", q, own) / 0.5, torch.zeros(3, dtype=torch.long)
    )
    assert torch.allclose(info_nce(q, pos, neg, temperature=0.5, in_batch=False), expected_own)
    assert torch.allclose(info_nce(q, pos), F.cross_entropy(q @ pos.T, torch.arange(3)))
    with pytest.raises(ValueError, match="needs hard negatives"):
        info_nce(q, pos, None, in_batch=False)


def test_margin_mse_and_kl():
    s_pos, s_neg = torch.tensor([3.0, 1.0]), torch.tensor([1.0, 2.0])
    t_pos, t_neg = torch.tensor([2.0, 2.0]), torch.tensor([1.0, 0.0])
    assert float(margin_mse(s_pos, s_neg, t_pos, t_neg)) == pytest.approx(
        ((2 - 1) ** 2 + (-1 - 2) ** 2) / 2
    )
    student = torch.tensor([[2.0, 1.0, 0.0]])
    assert float(kl_distillation(student, student.clone())) == pytest.approx(0.0, abs=1e-7)
    teacher = torch.tensor([[0.0, 1.0, 2.0]])
    p = torch.softmax(teacher / 2, -1)
    expected = float((p * (p.log() - torch.log_softmax(student / 2, -1))).sum()) * 4
    assert float(kl_distillation(student, teacher, temperature=2.0)) == pytest.approx(
        expected, rel=1e-5
    )


def test_teacher_normalization():
    a = torch.tensor([[10.0, 20.0, 30.0], [5.0, 5.0, 5.0]])
    assert torch.allclose(minmax_normalize(a), torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.0, 0.0]]))
    b = torch.tensor([[0.3, 0.1, 0.2], [1.0, 0.0, 0.5]])
    combined = combine_teachers([a, b], weights=[1.0, 3.0])
    assert torch.allclose(
        combined[0], (minmax_normalize(a)[0] + 3 * torch.tensor([1.0, 0.0, 0.5])) / 4
    )
    with pytest.raises(ValueError):
        combine_teachers([])


def test_pairwise_scores():
    q, d = torch.rand(2, 4), torch.rand(2, 3, 4)
    assert torch.allclose(pairwise_scores(q, d)[1, 2], q[1] @ d[1, 2])
    assert not math.isnan(float(pairwise_scores(q, d).sum()))
