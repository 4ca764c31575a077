"""Shared test set-up."""

from __future__ import annotations

import pytest
import torch

# Tiny models run fastest single-threaded, and the suite runs one test process per core
# (`make test`: pytest-xdist), so a second torch thread would only wait on a busy core. Set at
# import, before any fixture: module-scoped fixtures (a trained study shared by a file's tests)
# run before the function-scoped fixture below and were training with every core's thread.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """A test that changes the thread count gives it back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
