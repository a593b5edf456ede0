"""Eq. 4 gradient embeddings and factored k-means++ seeding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from asknlearn.kmeanspp import embedding_factors, gradient_embedding, kmeanspp_dense, kmeanspp_factored
from asknlearn.models import build_model


@pytest.mark.parametrize("name,shape", [("mlp", (1, 8, 8)), ("resnet18", (3, 32, 32))])
def test_eq4_embedding_equals_autograd_last_layer_gradient(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 10, dropout=0.0).eval()
    x = torch.randn(4, *shape)
    z = model.features(x).detach()
    probs = torch.softmax(model.head(z), 1).detach()
    pseudo = torch.tensor([0, 3, 3, 9])  # not all argmax: eq. 4 holds for any label
    emb = gradient_embedding(probs, z, pseudo)
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), pseudo[i : i + 1]).backward()
        grad_w = model.head.weight.grad.flatten()
        torch.testing.assert_close(emb[i], grad_w, rtol=1e-4, atol=1e-6)


def _problem(n=300, k=5, d=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(n, k, generator=g) * 2, 1).double()
    z = torch.relu(torch.randn(n, d, generator=g)).double()
    pseudo = torch.randint(0, k, (n,), generator=g)
    return probs, z, pseudo


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_factored_kmeanspp_matches_dense_reference(seed):
    probs, z, pseudo = _problem(seed=seed)
    u = embedding_factors(probs, pseudo)
    dense = gradient_embedding(probs, z, pseudo)
    a = kmeanspp_factored(u, z, 40, torch.Generator().manual_seed(seed))
    b = kmeanspp_dense(dense, 40, torch.Generator().manual_seed(seed))
    assert a.tolist() == b.tolist()
    assert len(set(a.tolist())) == 40
    # the first centre is the largest gradient norm
    assert int(a[0]) == int(dense.norm(dim=1).argmax())


def test_factored_kmeanspp_float32_agrees_with_float64():
    probs, z, pseudo = _problem(n=500, seed=3)
    u = embedding_factors(probs, pseudo)
    a = kmeanspp_factored(u.float(), z.float(), 30, torch.Generator().manual_seed(0))
    b = kmeanspp_factored(u, z, 30, torch.Generator().manual_seed(0))
    assert a.tolist() == b.tolist()


def test_kmeanspp_second_centre_follows_d2_distribution():
    # 4 points on a line in embedding space: after the first centre (largest norm),
    # the second is drawn with probability proportional to squared distance.
    u = torch.tensor([[1.0], [1.0], [1.0], [1.0]], dtype=torch.float64)
    z = torch.tensor([[0.0], [1.0], [2.0], [4.0]], dtype=torch.float64)  # centre 0 is index 3
    d2 = torch.tensor([16.0, 9.0, 4.0, 0.0])
    expect = d2 / d2.sum()
    counts = torch.zeros(4)
    gen = torch.Generator().manual_seed(0)
    n = 4000
    for _ in range(n):
        counts[kmeanspp_factored(u, z, 2, gen)[1]] += 1
    assert counts[3] == 0
    torch.testing.assert_close(counts / n, expect.float(), atol=0.03, rtol=0)


def test_kmeanspp_duplicates_fall_back_to_distinct_points():
    u = torch.ones(10, 2)
    z = torch.ones(10, 3)  # all embeddings identical: D² is zero after the first centre
    picks = kmeanspp_factored(u, z, 6, torch.Generator().manual_seed(0))
    assert len(set(picks.tolist())) == 6
