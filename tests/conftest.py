"""Shared test set-up."""

from __future__ import annotations

import functools
from pathlib import Path

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


# Files whose tests run whole searches, worker processes, servers or trainings end to end (tens
# of seconds each): `make test-fast` (`-m "not slow"`) leaves them out for the edit loop;
# `make test` runs everything. A test elsewhere that takes seconds is marked on its own.
SLOW_FILES = {
    "test_bench_screening.py",
    "test_cli_bad_input.py",
    "test_cli_bad_input_limits.py",
    "test_cli_bad_input_readback.py",
    "test_cli_search.py",
    "test_cli_train_score.py",
    "test_doctor.py",
    "test_evaluate_score.py",
    "test_execute_conformance.py",
    "test_execute_queue.py",
    "test_experiments_compare.py",
    "test_experiments_proxy_check.py",
    "test_experiments_regret.py",
    "test_experiments_tabulate.py",
    "test_experiments_trust.py",
    "test_llm_llama_server.py",
    "test_llm_local_backend.py",
    "test_report.py",
    "test_search_async.py",
    "test_search_executors.py",
    "test_search_faults.py",
    "test_search_halving.py",
    "test_search_loop.py",
    "test_search_objectives.py",
    "test_search_screening.py",
    "test_search_warm_start.py",
    "test_suite_groups.py",
}


@functools.cache
def _shares_a_fixture(path: Path) -> bool:
    """A file whose tests share a module- or session-scoped fixture (built once per process)."""
    text = path.read_text()
    return 'scope="module"' in text or 'scope="session"' in text


def _cost_rank(item) -> int:
    """0: the Ray tests (the longest unit one process takes), 1: the end-to-end files, 2: the rest."""
    if "[ray]" in item.name:
        return 0
    return 1 if item.path.name in SLOW_FILES else 2


# tryfirst: pytest-xdist reads the xdist_group marks in its own hook of this name, which runs
# before a conftest's otherwise (its worker plugin registers later); marked too late, every
# file's shared fixture was built once per process and the Ray tests ran on both
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    # The longest work first (a stable sort: a file's tests stay together, in their order), so
    # the processes of `make test` end on short tests: the suite's last minute is not one
    # process finishing an end-to-end file while the other waits. pytest-xdist (loadgroup)
    # hands out the groups of several tests first, then single tests in this order.
    items.sort(key=_cost_rank)
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
        # `make test` spreads single tests over the processes (pytest-xdist --dist loadgroup),
        # but a local Ray cluster is one per machine at a time: every Ray test in one process,
        # and a file's tests that share a fixture in one process (built once)
        if "[ray]" in item.name:
            item.add_marker(pytest.mark.xdist_group("ray"))
        elif _shares_a_fixture(item.path):
            item.add_marker(pytest.mark.xdist_group(item.path.name))
