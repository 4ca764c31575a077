"""The defaults of a search's plain options, in one place: `SearchConfig` (search/config.py)
declares its fields with them and `diffnas search` (cli/search_cmd.py) its flags, so the two
cannot disagree. Plain data, no torch: the CLI reads it when it is imported.

The nested records keep their own defaults where they are declared: the proxy and final
evaluations (`EvalSpec.proxy_default`, `final_default`) and the latency measurement
(`LatencyOptions`).
"""

from __future__ import annotations

from typing import Any

from diffnas.propose import DEFAULT_MAX_REPAIRS

SEARCH_DEFAULTS: dict[str, Any] = {
    "space": "tiny",  # the bundled 16x16 digits space
    "data": "digits",  # the bundled dataset: runs offline
    "llm": "local",  # the embedded SmolLM2: no key, no network
    "llm_timeout_s": 120.0,  # seconds before one LLM request times out
    "llm_attempts": 5,  # tries per LLM request (timeouts, 429, 5xx)
    "proposer": "diffnas",  # the LLM with the search memory (the paper's method)
    "rounds": 3,  # proposal rounds R
    "per_round": 2,  # candidates asked per round K
    "schedule": "rounds",  # ask for K, evaluate them together, ask again
    "max_repairs": DEFAULT_MAX_REPAIRS,  # repair turns per round for invalid proposals
    "temperature": 0.7,  # LLM sampling temperature
    "llm_mode": "auto",  # edit for the embedded model, full otherwise
    "seed": 0,  # seeds proposals, training and sampling
    "promote": 1,  # top-k trained with the final recipe and scored by FID
    "executor": "inline",  # in the search's own process
    "trials_per_gpu": 1,  # pool/ray: candidates packed on one card
    "max_retries": 2,  # a killed worker: tries again this often
    "halving_rungs": 1,  # successive halving off
    "halving_eta": 3,  # with halving: about 1 in eta goes on per rung
    "screener": "gp",  # with --screen: a Gaussian process on the measured trials
}
