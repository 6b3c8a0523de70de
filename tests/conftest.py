"""Fixtures shared by several test modules."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: on this shared 2-core machine, 2 OpenMP threads under load make torch FFTs ~50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
