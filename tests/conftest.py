import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_pyro_state():
    """Each test starts with an empty Pyro parameter store and a fixed global seed."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits, split with seed 0 (shared by the tests that only read it)."""
    from thermossl.models.datasets import load_dataset

    return load_dataset("digits", seed=0)


def pytest_configure(config):
    # Two workers on two cores: keep each worker single-threaded.
    torch.set_num_threads(1)
