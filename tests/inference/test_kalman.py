"""Kalman filter of :mod:`thermossl.inference.kalman` against a dense joint Gaussian and Pyro.

All equivalence tests run in float64. References are independent of the filter: the joint
Gaussian of ``(x_0, x_{1:T}, z_{1:T})`` built densely by stacking the model's linear maps (then
scored by :class:`torch.distributions.MultivariateNormal` and conditioned by dense solves), and
:class:`pyro.distributions.GaussianHMM`.
"""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from thermossl.inference.kalman import KalmanFilterResult, kalman_filter

from tests.common import assert_relative_close
from thermossl._validation import deferred_value_checks

DTYPE = torch.float64
NAMES = ("A", "c", "Q", "H", "R", "m0", "P0")
EVENT = {"A": "DD", "c": "D", "Q": "DD", "H": "LD", "R": "LL", "m0": "D", "P0": "DD"}


# --------------------------------------------------------------------------------------------
# Random models
# --------------------------------------------------------------------------------------------


def _spd(shape, size, generator):
    M = torch.randn(*shape, size, size, generator=generator, dtype=DTYPE)
    return M @ M.mT / size + 0.5 * torch.eye(size, dtype=DTYPE)


def _random_model(T, D, L, batch=(), kinds=None, seed=0, observation_batch=None):
    """Random stable model; ``kinds[name]`` is ``static`` (no batch, no time), ``batch``
    (``[*batch, 1, ...]``) or ``time`` (``[*batch, T, ...]``); ``m0``/``P0`` are ``static`` or
    ``batch``. Observations have ``observation_batch`` (default ``batch``) batch dimensions."""
    kinds = {name: "static" for name in NAMES} | (kinds or {})
    generator = torch.Generator().manual_seed(seed)
    sizes = {"D": D, "L": L}
    params = {}
    for name in NAMES:
        event = tuple(sizes[s] for s in EVENT[name])
        if name in ("m0", "P0"):
            lead = batch if kinds[name] == "batch" else ()
        else:
            lead = {"static": (), "batch": (*batch, 1), "time": (*batch, T)}[kinds[name]]
        if name in ("Q", "R", "P0"):
            value = _spd(lead, event[0], generator)
        else:
            value = torch.randn(*lead, *event, generator=generator, dtype=DTYPE)
        if name == "A":  # spectral norm below one: a stable system
            value = (
                0.95
                * value
                / torch.linalg.matrix_norm(value, ord=2).clamp_min(1.0)[..., None, None]
            )
        if name == "H":
            value = value / D**0.5
        params[name] = value
    obs_batch = batch if observation_batch is None else observation_batch
    z = torch.randn(*obs_batch, T, L, generator=generator, dtype=DTYPE)
    return z, params


def _call(z, params, parallel):
    p = params
    return kalman_filter(
        z, p["A"], p["c"], p["Q"], p["H"], p["R"], p["m0"], p["P0"], parallel=parallel
    )


def _full(params, batch, T):
    """Every parameter expanded to ``[*batch, T, ...]`` (``m0``/``P0`` to ``[*batch, ...]``)."""
    out = {}
    for name, value in params.items():
        event_ndim = len(EVENT[name])
        if name in ("m0", "P0"):
            out[name] = value.expand(*batch, *value.shape[-event_ndim:])
        else:
            if value.dim() == event_ndim:
                value = value.unsqueeze(0)
            out[name] = value.expand(*batch, T, *value.shape[-event_ndim:])
    return out


# --------------------------------------------------------------------------------------------
# Dense reference: loadings of every variable on the independent noises (x_0, w_1..T, v_1..T)
# --------------------------------------------------------------------------------------------


def _batch_shape(z, params):
    shapes = [z.shape[:-2]]
    for name, value in params.items():
        event_ndim = len(EVENT[name]) + (
            name not in ("m0", "P0") and value.dim() > len(EVENT[name])
        )
        shapes.append(value.shape[: value.dim() - event_ndim])
    return torch.broadcast_shapes(*shapes)


def _dense(z, params):
    """Means, noise loadings and noise covariance of the joint of (x_1..T, z_1..T)."""
    batch = _batch_shape(z, params)
    T, L = z.shape[-2:]
    D = params["A"].shape[-1]
    p = _full(params, batch, T)
    sym = {n: 0.5 * (p[n] + p[n].mT) for n in ("Q", "R", "P0")}
    noise = D + T * D + T * L  # x_0, w_1..w_T, v_1..v_T
    blocks = [sym["P0"]] + [sym["Q"][..., t, :, :] for t in range(T)]
    blocks += [sym["R"][..., t, :, :] for t in range(T)]
    Sigma = torch.zeros(*batch, noise, noise, dtype=DTYPE)
    start = 0
    for block in blocks:
        size = block.shape[-1]
        Sigma[..., start : start + size, start : start + size] = block
        start += size
    load = torch.zeros(*batch, D, noise, dtype=DTYPE)
    load[..., :, :D] = torch.eye(D, dtype=DTYPE)
    mean = p["m0"]
    x_means, x_loads, z_means, z_loads = [], [], [], []
    for t in range(T):
        A, H = p["A"][..., t, :, :], p["H"][..., t, :, :]
        load = A @ load
        load[..., :, D + t * D : D + (t + 1) * D] += torch.eye(D, dtype=DTYPE)
        mean = (A @ mean.unsqueeze(-1)).squeeze(-1) + p["c"][..., t, :]
        z_load = H @ load
        offset = D + T * D + t * L
        z_load[..., :, offset : offset + L] += torch.eye(L, dtype=DTYPE)
        x_means.append(mean)
        x_loads.append(load)
        z_means.append((H @ mean.unsqueeze(-1)).squeeze(-1))
        z_loads.append(z_load)
    return batch, Sigma, x_means, x_loads, z_means, z_loads


def _dense_log_likelihood(z, params):
    batch, Sigma, _, _, z_means, z_loads = _dense(z, params)
    mean = torch.cat(z_means, dim=-1)
    load = torch.cat(z_loads, dim=-2)
    covariance = load @ Sigma @ load.mT
    covariance = 0.5 * (covariance + covariance.mT)
    z_flat = z.expand(*batch, *z.shape[-2:]).reshape(*batch, -1)
    return torch.distributions.MultivariateNormal(mean, covariance).log_prob(z_flat)


def _dense_moments(z, params):
    """Filtered and predicted means and covariances by conditioning the joint densely."""
    batch, Sigma, x_means, x_loads, z_means, z_loads = _dense(z, params)
    T = z.shape[-2]
    z = z.expand(*batch, *z.shape[-2:])
    out = {
        "predicted_mean": [],
        "predicted_covariance": [],
        "filtered_mean": [],
        "filtered_covariance": [],
    }
    for t in range(T):
        for kind, seen in (("predicted", t), ("filtered", t + 1)):
            x_mean, x_load = x_means[t], x_loads[t]
            covariance = x_load @ Sigma @ x_load.mT
            if seen:
                zl = torch.cat(z_loads[:seen], dim=-2)
                residual = (z[..., :seen, :] - torch.stack(z_means[:seen], dim=-2)).reshape(
                    *batch, -1
                )
                cross = x_load @ Sigma @ zl.mT
                gain = torch.linalg.solve(zl @ Sigma @ zl.mT, cross.mT).mT
                x_mean = x_mean + (gain @ residual.unsqueeze(-1)).squeeze(-1)
                covariance = covariance - gain @ cross.mT
            out[f"{kind}_mean"].append(x_mean)
            out[f"{kind}_covariance"].append(covariance)
    return {
        key: torch.stack(values, dim=-3 if "covariance" in key else -2)
        for key, values in out.items()
    }


def _gaussian_hmm(z, params):
    batch = _batch_shape(z, params)
    T = z.shape[-2]
    p = _full(params, batch, T)
    hmm = dist.GaussianHMM(
        dist.MultivariateNormal(p["m0"], p["P0"]),
        p["A"].mT,
        dist.MultivariateNormal(p["c"], p["Q"]),
        p["H"].mT,
        dist.MultivariateNormal(torch.zeros_like(p["R"][..., 0]), p["R"]),
    )
    return hmm.log_prob(z)


# --------------------------------------------------------------------------------------------
# Configurations: (T, D, L, batch, kinds, observation_batch)
# --------------------------------------------------------------------------------------------

TIME_VARYING_NOISE = {"Q": "time", "R": "time"}
EVERYTHING_VARYING = {n: "time" for n in ("A", "c", "Q", "H", "R")} | {"m0": "batch", "P0": "batch"}
CONFIGS = {
    "T1": (1, 3, 2, (), {}, None),
    "T2": (2, 3, 2, (), {}, None),
    "T7-hidden": (7, 4, 2, (), {}, None),  # D > L
    "T13-batch": (13, 3, 2, (2,), {}, None),
    "T5-obs-larger": (5, 2, 3, (2,), {"m0": "batch"}, None),  # L > D
    "T7-noise-varying": (7, 4, 2, (3,), TIME_VARYING_NOISE, None),
    "T6-all-varying": (6, 3, 2, (2, 2), EVERYTHING_VARYING, None),
    "T5-mixed": (5, 3, 2, (2, 1), {"R": "time", "c": "batch", "P0": "batch"}, (2, 3)),
    "T4-batched-params": (4, 3, 2, (3,), {"A": "batch", "H": "time"}, ()),
    "T6-initial-batch": (6, 3, 2, (4,), {"m0": "batch"}, ()),  # only m0 is batched
}


def _config(name, seed=0):
    T, D, L, batch, kinds, obs_batch = CONFIGS[name]
    return _random_model(T, D, L, batch, kinds, seed=seed, observation_batch=obs_batch)


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "sequential"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_log_likelihood_equals_dense_joint_gaussian(name, parallel):
    z, params = _config(name)
    result = _call(z, params, parallel)
    assert_relative_close(result.log_likelihood, _dense_log_likelihood(z, params), rtol=1e-5)


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "sequential"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_log_likelihood_equals_pyro_gaussian_hmm(name, parallel):
    z, params = _config(name, seed=1)
    result = _call(z, params, parallel)
    assert_relative_close(result.log_likelihood, _gaussian_hmm(z, params), rtol=1e-5)


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "sequential"])
@pytest.mark.parametrize("name", ["T1", "T7-hidden", "T7-noise-varying", "T5-mixed"])
def test_moments_equal_dense_conditional_gaussians(name, parallel):
    z, params = _config(name, seed=2)
    result = _call(z, params, parallel)
    expected = _dense_moments(z, params)
    for key, value in expected.items():
        assert_relative_close(getattr(result, key), value, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parallel_equals_sequential_on_every_output(name):
    z, params = _config(name, seed=3)
    parallel, sequential = _call(z, params, True), _call(z, params, False)
    for key in KalmanFilterResult._fields:
        assert_relative_close(
            getattr(parallel, key), getattr(sequential, key), rtol=1e-8, atol=1e-10
        )


def test_shapes_and_broadcast_covariances():
    z, params = _config("T13-batch")
    z = z.unsqueeze(0).expand(4, *z.shape)  # batch (4, 2): parameters shared along dim 0
    result = _call(z, params, True)
    assert result.log_likelihood.shape == (4, 2)
    assert result.filtered_mean.shape == result.predicted_mean.shape == (4, 2, 13, 3)
    assert result.filtered_covariance.shape == result.predicted_covariance.shape == (4, 2, 13, 3, 3)
    single = _call(z[0, 1], params, True)
    assert_relative_close(result.filtered_mean[3, 1], single.filtered_mean, rtol=1e-12)
    assert_relative_close(result.log_likelihood[3, 1], single.log_likelihood, rtol=1e-12)


@pytest.mark.parametrize("name", ["T7-hidden", "T6-all-varying", "T5-mixed"])
def test_gradients_match_between_parallel_sequential_and_dense(name):
    z, params = _config(name, seed=4)
    leaves = {"z": z.clone().requires_grad_(True)}
    leaves |= {n: v.clone().requires_grad_(True) for n, v in params.items()}
    inputs = list(leaves.values())

    def gradients(log_likelihood):
        return torch.autograd.grad(log_likelihood.sum(), inputs)

    p = {n: leaves[n] for n in NAMES}
    dense = gradients(_dense_log_likelihood(leaves["z"], p))
    for parallel in (True, False):
        ours = gradients(_call(leaves["z"], p, parallel).log_likelihood)
        for key, actual, expected in zip(leaves, ours, dense, strict=True):
            assert actual.shape == expected.shape, key
            assert_relative_close(actual, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("T", [2, 7, 13, 16])
def test_general_scan_equals_doubling_for_time_invariant_models(T):
    """Time-invariant parameters given with an explicit time dimension take the general scan;
    without it, the doubling path: both must give the same filter."""
    z, params = _random_model(T, 4, 2, batch=(2,), seed=7)
    tiled = {
        name: (value if name in ("m0", "P0") else value.expand(T, *value.shape).clone())
        for name, value in params.items()
    }
    doubling, scan = _call(z, params, True), _call(z, tiled, True)
    for key in KalmanFilterResult._fields:
        assert_relative_close(getattr(scan, key), getattr(doubling, key), rtol=1e-9, atol=1e-11)


def test_float32_matches_float64():
    z, params = _config("T13-batch", seed=5)
    expected = _call(z, params, True).log_likelihood
    single = {n: v.float() for n, v in params.items()}
    for parallel in (True, False):
        actual = _call(z.float(), single, parallel).log_likelihood
        assert actual.dtype == torch.float32
        assert_relative_close(actual.double(), expected, rtol=1e-4)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def _valid():
    return _random_model(4, 3, 2, seed=6)


def _with(**changes):
    z, params = _valid()
    z = changes.pop("z", z)
    params |= changes
    return z, params


def _not_positive_definite(size):
    return torch.diag(torch.tensor([1.0] * (size - 1) + [-1.0], dtype=DTYPE))


@pytest.mark.parametrize(
    ("changes", "argument"),
    [
        ({"Q": "npd"}, "transition_covariance"),
        ({"R": "npd"}, "observation_covariance"),
        ({"P0": "npd"}, "initial_covariance"),
        ({"Q": "asym"}, "transition_covariance"),
        ({"H": torch.zeros(3, 3, dtype=DTYPE)}, "observation_matrix"),  # L rows vs observations
        ({"H": torch.zeros(2, 4, dtype=DTYPE)}, "observation_matrix"),  # D columns vs A
        ({"A": torch.zeros(3, 4, dtype=DTYPE)}, "transition_matrix must be square"),
        ({"c": torch.zeros(4, dtype=DTYPE)}, "transition_offset"),
        ({"R": torch.eye(3, dtype=DTYPE)}, "observation_covariance"),
        ({"m0": torch.zeros(2, dtype=DTYPE)}, "initial_mean"),
        ({"Q": torch.eye(3, dtype=DTYPE).expand(5, 3, 3)}, "transition_covariance"),  # T=5 != 4
        ({"z": torch.zeros(0, 2, dtype=DTYPE)}, "observations"),  # T = 0
        ({"z": "nan"}, "observations"),
        ({"A": "nan"}, "transition_matrix"),
        ({"c": "inf"}, "transition_offset"),
        ({"R": "nan"}, "observation_covariance"),
        ({"m0": "inf"}, "initial_mean"),
        (
            {"z": torch.zeros(2, 4, 2, dtype=DTYPE), "m0": torch.zeros(3, 3, dtype=DTYPE)},
            "broadcast",
        ),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(changes, argument):
    z, params = _valid()
    names = {"z": z} | params
    for key, change in changes.items():
        value = names[key]
        if isinstance(change, str):
            value = value.clone()
            if change == "npd":
                value = _not_positive_definite(value.shape[-1])
            elif change == "asym":
                value[..., 0, 1] += 1.0
            else:
                value.view(-1)[0] = float(change)
            change = value
        names[key] = change
    z = names.pop("z")
    for parallel in (True, False):
        with pytest.raises(ValueError, match=argument):
            _call(z, names, parallel)


def test_wrong_type_raises_type_error_and_mixed_dtypes_promote():
    z, params = _valid()
    with pytest.raises(TypeError, match="observations"):
        _call(z.numpy(), params, True)
    with pytest.raises(TypeError, match="initial_mean"):
        _call(z, params | {"m0": torch.zeros(3, dtype=torch.int64)}, True)
    mixed = _call(z, params | {"A": params["A"].float(), "c": params["c"].float()}, True)
    assert mixed.log_likelihood.dtype == torch.float64
    rounded = {name: params[name].float().double() for name in ("A", "c")}
    expected = _call(z, params | rounded, True)
    assert_relative_close(mixed.log_likelihood, expected.log_likelihood, rtol=1e-12)


def test_value_checks_can_be_deferred():
    z, params = _with(Q=_not_positive_definite(3) + 2 * torch.eye(3, dtype=DTYPE))
    with deferred_value_checks():
        result = _call(z, params, True)
    assert torch.isfinite(result.log_likelihood)
