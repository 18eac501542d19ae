"""The NeSy addition constraint equals a brute-force enumeration of worlds, values and gradients."""

from __future__ import annotations

import math

import pytest
import torch
from thermossl.objectives.nesy import (
    addition_worlds,
    constraint_log_probability,
    make_addition_triplets,
    nesy_loss,
    world_posterior,
)


def confident(digits, scale=30.0, dtype=torch.float64):
    """Logits ``scale`` on the given digit of each row, 0 elsewhere."""
    return scale * torch.nn.functional.one_hot(torch.tensor(digits), 10).to(dtype)


def brute_force_log_probability(logits_a, logits_b, logits_c):
    """log P(y_a + y_b = y_c) by a Python triple loop over the C^3 worlds, in float64."""
    result = []
    for la, lb, lc in zip(logits_a.tolist(), logits_b.tolist(), logits_c.tolist(), strict=True):
        probabilities = []
        for logits in (la, lb, lc):
            top = max(logits)
            weights = [math.exp(v - top) for v in logits]
            probabilities.append([w / math.fsum(weights) for w in weights])
        pa, pb, pc = probabilities
        c = len(la)
        total = math.fsum(
            pa[a] * pb[b] * pc[k]
            for a in range(c)
            for b in range(c)
            for k in range(c)
            if a + b == k
        )
        result.append(math.log(total))
    return torch.tensor(result, dtype=torch.float64)


def random_logits(n=16, c=10, scale=2.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(n, c, generator=generator, dtype=torch.float64) for _ in range(3)]


# (a) the world mask


@pytest.mark.parametrize("num_classes", [1, 2, 5, 10])
def test_worlds_match_a_triple_loop(num_classes):
    worlds = addition_worlds(num_classes)
    expected = torch.zeros(num_classes, num_classes, num_classes, dtype=torch.bool)
    for a in range(num_classes):
        for b in range(num_classes):
            for c in range(num_classes):
                expected[a, b, c] = a + b == c
    assert worlds.dtype == torch.bool
    assert torch.equal(worlds, expected)
    assert int(worlds.sum()) == num_classes * (num_classes + 1) // 2


def test_digit_worlds_are_55_of_1000():
    worlds = addition_worlds()
    assert worlds.shape == (10, 10, 10) and int(worlds.sum()) == 55
    # every true world has c <= 9 and each admissible (a, b) pair appears once
    a, b, c = worlds.nonzero(as_tuple=True)
    assert bool((a + b == c).all()) and int(c.max()) == 9
    assert len({(int(x), int(y)) for x, y in zip(a, b, strict=True)}) == 55


# (b) exact enumeration against brute force


@pytest.mark.parametrize("scale", [0.5, 2.0, 8.0])
def test_log_probability_equals_brute_force(scale):
    logits = random_logits(scale=scale, seed=int(10 * scale))
    value = constraint_log_probability(*logits)
    expected = brute_force_log_probability(*logits)
    assert value.shape == (16,) and value.dtype == torch.float64
    torch.testing.assert_close(value, expected, rtol=0, atol=1e-12)


def test_uniform_predictions_give_55_over_1000():
    zeros = torch.zeros(3, 10, dtype=torch.float64)
    value = constraint_log_probability(zeros, zeros, zeros)
    torch.testing.assert_close(value, torch.full((3,), math.log(0.055), dtype=torch.float64))


def test_custom_worlds_mask_is_used():
    logits = random_logits(n=4, seed=3)
    everything = torch.ones(10, 10, 10, dtype=torch.bool)
    torch.testing.assert_close(
        constraint_log_probability(*logits, worlds=everything), torch.zeros(4, dtype=torch.float64)
    )
    single = torch.zeros(10, 10, 10, dtype=torch.bool)
    single[3, 2, 5] = True
    log_p = [torch.log_softmax(t, -1) for t in logits]
    expected = log_p[0][:, 3] + log_p[1][:, 2] + log_p[2][:, 5]
    torch.testing.assert_close(constraint_log_probability(*logits, worlds=single), expected)


def test_loss_is_the_mean_negative_log_probability():
    logits = random_logits(n=7, seed=5)
    expected = -brute_force_log_probability(*logits).mean()
    torch.testing.assert_close(nesy_loss(*logits), expected, rtol=0, atol=1e-12)
    assert nesy_loss(*logits).dim() == 0


# (c) the trivial solution and a confident violation


def test_all_zeros_collapse_satisfies_the_constraint():
    zero = confident([0, 0, 0])
    log_p = constraint_log_probability(zero, zero, zero)
    assert bool((log_p <= 0).all())
    torch.testing.assert_close(log_p, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-10)
    assert float(nesy_loss(zero, zero, zero)) < 1e-10


def test_confident_violation_is_very_unlikely():
    # 3 + 4 = 5 is false; the nearest true worlds flip one digit at cost 30 each:
    # 1 + 4 = 5, 3 + 2 = 5, 3 + 4 = 7, so log P = -30 + log 3 up to O(e^{-30}).
    log_p = constraint_log_probability(confident([3]), confident([4]), confident([5]))
    assert float(log_p) < -25
    assert float(log_p) == pytest.approx(-30 + math.log(3), abs=1e-8)
    # a confident *true* triplet costs nothing
    correct = constraint_log_probability(confident([3]), confident([4]), confident([7]))
    assert abs(float(correct)) < 1e-10


def test_extreme_violation_is_finite_and_linear_in_the_scale():
    scale = 1e4
    for dtype in (torch.float32, torch.float64):
        log_p = constraint_log_probability(
            *(confident([d], scale, dtype) for d in (3, 4, 5)),
        )
        assert bool(torch.isfinite(log_p).all())
        assert float(log_p) == pytest.approx(-scale + math.log(3), rel=1e-6)


# (d) gradients


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("digits", [(0, 0, 0), (3, 4, 5), (9, 9, 0), (2, 3, 5)])
def test_gradients_are_finite_for_extremely_confident_logits(dtype, digits):
    generator = torch.Generator().manual_seed(1)
    logits = [
        (confident([d] * 4, 1e4, dtype) - 1e4 * torch.rand(4, 10, generator=generator).to(dtype))
        .detach()
        .requires_grad_(True)
        for d in digits
    ]
    for function in (nesy_loss, lambda *x: world_posterior(*x)[:, 1, 2, 3].sum()):
        grads = torch.autograd.grad(function(*logits), logits)
        assert all(bool(torch.isfinite(g).all()) for g in grads)


def test_gradient_of_a_confident_violation_points_to_the_nearest_true_worlds():
    logits = [confident([d]).requires_grad_(True) for d in (3, 4, 5)]
    nesy_loss(*logits).backward()
    # descending the loss lowers each confident wrong digit's logit (up to the others) and raises
    # the flips that make the sum true: a -> 1, b -> 2, c -> 7, each with posterior weight 1/3
    for g, raised in zip((t.grad for t in logits), (1, 2, 7), strict=True):
        assert bool(torch.isfinite(g).all())
        assert float(g[0, raised]) == pytest.approx(-1 / 3, abs=1e-9)


def test_gradcheck_in_float64():
    logits = [t.requires_grad_(True) for t in random_logits(n=3, scale=1.5, seed=7)]
    assert torch.autograd.gradcheck(constraint_log_probability, logits, eps=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(nesy_loss, logits, eps=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(
        lambda *x: world_posterior(*x)[:, :4, :4, :], logits, eps=1e-6, atol=1e-7
    )


# (e) triplets


def digit_labels(per_class=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(per_class)
    return labels[torch.randperm(len(labels), generator=generator)]


@pytest.mark.parametrize("replacement", [True, False])
def test_triplets_add_up(replacement):
    labels = digit_labels(per_class=30)
    triplets = make_addition_triplets(
        labels, 40, torch.Generator().manual_seed(0), replacement=replacement
    )
    assert triplets.shape == (40, 3) and triplets.dtype == torch.int64
    assert bool(((triplets >= 0) & (triplets < len(labels))).all())
    y = labels[triplets]
    assert bool((y[:, 0] + y[:, 1] == y[:, 2]).all()) and int(y[:, 2].max()) <= 9
    if not replacement:
        assert len(set(triplets.flatten().tolist())) == 120


def test_triplets_are_reproducible_and_depend_on_the_seed():
    labels = digit_labels()
    first = make_addition_triplets(labels, 50, torch.Generator().manual_seed(11))
    again = make_addition_triplets(labels, 50, torch.Generator().manual_seed(11))
    other = make_addition_triplets(labels, 50, torch.Generator().manual_seed(12))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_triplet_pairs_and_examples_are_uniform():
    # Each of the 55 admissible (a, b) pairs is equally likely, and so is each example of a class.
    labels = digit_labels(per_class=2)
    count = 55 * 400
    triplets = make_addition_triplets(labels, count, torch.Generator().manual_seed(3))
    y = labels[triplets]
    pair_counts = torch.bincount(10 * y[:, 0] + y[:, 1], minlength=100).double()
    admissible = addition_worlds().any(-1).flatten()
    assert bool((pair_counts[~admissible] == 0).all())
    p = 1 / 55
    observed = pair_counts[admissible] / count
    # six standard errors of a binomial proportion, for each of the 55 cells
    assert float((observed - p).abs().max()) < 6 * math.sqrt(p * (1 - p) / count)
    # the two examples of class 0 share its uses evenly
    zeros = triplets[y == 0]
    share = float((zeros == (labels == 0).nonzero()[0, 0]).double().mean())
    assert abs(share - 0.5) < 6 * math.sqrt(0.25 / len(zeros))


def test_triplet_errors():
    labels = digit_labels()
    generator = torch.Generator().manual_seed(0)
    for count in (0, -3):
        with pytest.raises(ValueError, match="count"):
            make_addition_triplets(labels, count, generator)
    with pytest.raises(ValueError, match=r"class\(es\) \[7\]"):
        make_addition_triplets(labels[labels != 7], 5, generator)
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        make_addition_triplets(torch.cat([labels, torch.tensor([10])]), 5, generator)
    with pytest.raises(ValueError, match="integer"):
        make_addition_triplets(labels.double(), 5, generator)
    with pytest.raises(TypeError, match="generator"):
        make_addition_triplets(labels, 5, 0)
    with pytest.raises(ValueError, match="class 0 has 5"):
        make_addition_triplets(labels, 200, generator, replacement=False)


# (f) the posterior over worlds


def test_world_posterior_is_normalized_and_zero_on_violations():
    logits = random_logits(n=5, scale=3.0, seed=9)
    posterior = world_posterior(*logits)
    assert posterior.shape == (5, 10, 10, 10)
    torch.testing.assert_close(posterior.sum((1, 2, 3)), torch.ones(5, dtype=torch.float64))
    worlds = addition_worlds()
    assert bool((posterior[:, ~worlds] == 0).all())
    assert bool((posterior[:, worlds] > 0).all())
    # Bayes' rule against the brute-force constraint probability
    log_p = [torch.log_softmax(t, -1) for t in logits]
    joint = (log_p[0][:, 3] + log_p[1][:, 2] + log_p[2][:, 5]).exp()
    expected = joint / brute_force_log_probability(*logits).exp()
    torch.testing.assert_close(posterior[:, 3, 2, 5], expected, rtol=1e-12, atol=0)


def test_world_posterior_reads_off_consistent_labels():
    posterior = world_posterior(confident([3]), confident([4]), confident([7]))
    assert float(posterior[0, 3, 4, 7]) == pytest.approx(1.0, abs=1e-10)
    marginals = [posterior.sum(dims) for dims in ((2, 3), (1, 3), (1, 2))]
    assert [int(m.argmax()) for m in marginals] == [3, 4, 7]


# input checks


def test_input_checks():
    good = torch.zeros(4, 10)
    with pytest.raises(ValueError, match="same shape"):
        constraint_log_probability(good, good, torch.zeros(4, 9))
    with pytest.raises(ValueError, match="same shape"):
        nesy_loss(good, torch.zeros(3, 10), good)
    with pytest.raises(ValueError, match=r"logits_a must have shape \[n, C\]"):
        constraint_log_probability(torch.zeros(2, 4, 10), good, good)
    with pytest.raises(ValueError, match="logits_b"):
        constraint_log_probability(good, torch.zeros(10), good)
    bad = good.clone()
    bad[1, 2] = torch.nan
    with pytest.raises(ValueError, match="logits_c contains 1 non-finite"):
        constraint_log_probability(good, good, bad)
    with pytest.raises(ValueError, match="logits_a contains 1 non-finite"):
        world_posterior(bad.masked_fill(bad.isnan(), torch.inf), good, good)
    with pytest.raises(TypeError, match="floating-point"):
        constraint_log_probability(good.long(), good, good)
    with pytest.raises(ValueError, match=r"worlds must have shape \(10, 10, 10\)"):
        constraint_log_probability(good, good, good, worlds=addition_worlds(5))
    with pytest.raises(TypeError, match="boolean"):
        constraint_log_probability(good, good, good, worlds=addition_worlds().long())
    with pytest.raises(ValueError, match="at least one true world"):
        constraint_log_probability(good, good, good, worlds=torch.zeros(10, 10, 10).bool())
    with pytest.raises(ValueError, match="num_classes"):
        addition_worlds(0)
