"""Fixtures shared by several test modules."""
import signal

import pytest
import torch

# Tests send Ctrl-C (SIGINT) to the CLI and the demo. A test run started in the background by a shell without job
# control (`cmd &`, nohup, some CI runners) inherits SIGINT *ignored*, and ignored signals stay ignored across exec,
# so those children would never see it. A handled signal is reset to its default on exec: handle it here.
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: on this shared 2-core machine, 2 OpenMP threads under load make torch FFTs ~50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
