"""The equilibrium surface's flat-parameter functionals on digits against the derived bound."""

from __future__ import annotations

import pytest
import torch
from thermossl.models.equilibrium_digits import SurfaceFunctionals
from thermossl.models.therml_digits import DIGITS_SITES, DigitsWorlds, digits_data
from thermossl.objectives.therml import functionals

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def setup():
    data = digits_data()
    worlds = DigitsWorlds(latent_dim=2, hidden=8, seed=3, dtype=torch.float64)
    pixels, labels = data.train_pixels[:200].double(), data.train_labels[:200]
    noise = torch.randn(200, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return worlds, pixels, labels, noise, SurfaceFunctionals(worlds, pixels, labels, noise)


def _derived(worlds, pixels, labels, noise):
    """The functionals read off the derived bound of the module's programs (the reference)."""
    return functionals(
        worlds.model, worlds.guide, pixels, labels, None, noise, None,
        num_examples=pixels.shape[0], sites=DIGITS_SITES,
    )  # fmt: skip


def test_values_at_the_modules_parameters_are_the_derived_functionals(setup):
    worlds, pixels, labels, noise, surface = setup
    expected = _derived(worlds, pixels, labels, noise)
    values = surface(surface.initial())
    for got, want in zip(
        values, (expected.rate, expected.distortion, expected.classification), strict=True
    ):
        assert float(got) == pytest.approx(float(want), rel=1e-12)


def test_flat_gradient_equals_autograd_on_the_module(setup):
    """d(R + 2D + 3C)/d(flat) equals the module's parameter gradients, laid out as documented."""
    worlds, pixels, labels, noise, surface = setup
    flat = surface.initial()
    gradient = torch.func.grad(
        lambda t: torch.dot(
            torch.stack(surface(t)), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
        )
    )(flat)
    worlds.zero_grad()
    values = _derived(worlds, pixels, labels, noise)
    (values.rate + 2 * values.distortion + 3 * values.classification).backward()
    named = dict(worlds.named_parameters())
    expected = torch.cat([named[name].grad.flatten() for name in surface.names])
    assert torch.allclose(gradient, expected, rtol=1e-10, atol=1e-12)


def test_a_moved_flat_vector_moves_the_values_and_load_writes_it(setup):
    *_, surface = setup
    flat = surface.initial()
    moved = flat + 0.01 * torch.randn(
        flat.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    assert float(surface(moved)[1]) != float(surface(flat)[1])
    surface.load(moved)
    assert torch.equal(surface.initial(), moved)
    surface.load(flat)
    with pytest.raises(ValueError, match="flat must have shape"):
        surface(flat[:-1])
