"""The finite bounds of every count, size and duration a user can give (options, config fields).

Each bound is generous for real use and small enough that the value cannot overflow a C type
(a seed of 2**64 overflowed numpy's uint32 seed; an LLM timeout of `inf` overflowed time_t)
or ask for an allocation no machine has (a batch of 1e8 images). The typer options and the
pydantic fields use the same constants, so the message of a refusal states the range; every
config model also refuses inf and NaN (`FINITE`).
"""

from __future__ import annotations

from pydantic import ConfigDict

#: pydantic settings every config model shares: floats must be finite (no inf, no NaN).
FINITE = ConfigDict(allow_inf_nan=False)

MAX_IMAGE_SIZE = 1024  # pixels per side (ArchConfig.image_size; ADM goes to 512)
MAX_SEED = 2**32 - 1  # numpy's RandomState (Optuna's samplers) takes seeds below 2**32
MAX_TRAIN_STEPS = 10_000_000  # 12x DDPM's 800k steps
MAX_BATCH_SIZE = 4096  # images per optimizer step or sampling batch
MAX_SAMPLES = 100_000  # generated images of one score (the standard FID uses 50k)
MAX_SAMPLER_STEPS = 10_000  # sampler steps; the plan also bounds them by the diffusion's T
MAX_IMAGES = 100_000_000  # a --data-subset (ImageNet-21k holds 14 M images)
MAX_CLASSES = 100_000  # class labels 0 .. MAX_CLASSES - 1 (ImageNet-21k: 21,841 classes)
MAX_ROUNDS = 10_000  # proposal rounds of one search
MAX_PROMOTE = 100  # candidates trained with the final recipe
MAX_WORKERS = 1024  # concurrent workers or queued candidates
MAX_SEEDS = 100  # seeds of one `diffnas compare`
MAX_LLM_TIMEOUT_S = 3600.0  # one LLM request
MAX_BACKOFF_S = 600.0  # the first retry's backoff
MAX_DURATION_S = 366 * 24 * 3600.0  # a time budget: one year
MAX_LLM_TOKENS = 10**12  # a token budget
MAX_LLM_USD = 1_000_000.0  # a spending budget
MAX_OUTPUT_TOKENS = 131_072  # one LLM answer
MAX_TABLE_ARCHS = 1000  # choice combinations `diffnas tabulate` walks through unless told more
