"""The options `diffnas tabulate` and `diffnas proxy-check` share, declared once.

Both commands measure architectures the same way (`experiments.study.StudyConfig`: proxy
settings, the reference, seeds, where the runs go), so their flags are these types. Every one
defaults to None (not given): the config model holds the only default, and the help text
names it. Commands import this module and no other command module (tests/test_cli_basics.py).
It declares flags only, so importing it costs no torch.
"""

from __future__ import annotations

from typing import Annotated

import typer

from diffnas import limits as L

Data = Annotated[
    str | None,
    typer.Option(
        help="digits | fashion-mnist[:ROOT] | cifar10[:ROOT] | npz:PATH | imagefolder:DIR"
    ),
]
DataSubset = Annotated[
    int | None, typer.Option(min=1, max=L.MAX_IMAGES, help="Train on a subset of N images.")
]
DataImageSize = Annotated[
    int | None,
    typer.Option(
        min=4, max=L.MAX_IMAGE_SIZE, help="Resize the images (default: the space's image size)."
    ),
]
ProxySteps = Annotated[
    str | None, typer.Option(help="Proxy run lengths, comma-separated (default 100,400).")
]
ProxyBatchSize = Annotated[
    int | None,
    typer.Option(min=1, max=L.MAX_BATCH_SIZE, help="Proxy batch size (default 32)."),
]
Metrics = Annotated[
    str | None, typer.Option(help="Proxy scores among rfid,kid,loss (default all three).")
]
ScoreSamples = Annotated[
    str | None,
    typer.Option(help="Proxy scores' generated images N, comma-separated (default 250,1000)."),
]
ScoreSteps = Annotated[
    str | None,
    typer.Option(help="Proxy scores' sampler steps S, comma-separated (default 20)."),
]
Sampler = Annotated[str | None, typer.Option(help="ddim (default) | ddpm | respaced")]
Extractor = Annotated[str | None, typer.Option(help="classifier (default) | inception")]
InceptionWeights = Annotated[str | None, typer.Option(help="FID Inception weights file.")]
ReferenceRecipe = Annotated[str | None, typer.Option(help="full (default) | proxy")]
ReferenceSteps = Annotated[
    int | None,
    typer.Option(min=1, max=L.MAX_TRAIN_STEPS, help="Reference run length (default 1500)."),
]
ReferenceBatchSize = Annotated[
    int | None,
    typer.Option(min=1, max=L.MAX_BATCH_SIZE, help="Reference batch size (default 32)."),
]
ReferenceMetric = Annotated[str | None, typer.Option(help="fid (default) | rfid | kid")]
ReferenceSamples = Annotated[
    int | None,
    typer.Option(
        min=2, max=L.MAX_SAMPLES, help="Reference score's generated images (default 1000)."
    ),
]
ReferenceScoreSteps = Annotated[
    int | None,
    typer.Option(
        min=1, max=L.MAX_SAMPLER_STEPS, help="Reference score's sampler steps (default 50)."
    ),
]
Seed = Annotated[
    int | None,
    typer.Option(
        min=0, max=L.MAX_SEED,
        help="First seed of training and sampling (default 0; then seed + 1, ...).",
    ),
]  # fmt: skip
Seeds = Annotated[
    int | None,
    typer.Option(
        min=1, max=100,
        help="Seeds per architecture for every proxy setting and the reference (default 2): "
        "the reference's seed-to-seed agreement is the ceiling a proxy is read against.",
    ),
]  # fmt: skip
ReferenceSeeds = Annotated[
    int | None,
    typer.Option(
        min=1, max=100,
        help="Seeds of the reference alone (default: --seeds). More than the proxies' make the "
        "mean reference and its ceiling firmer; --resume may raise it (the new runs go first).",
    ),
]  # fmt: skip
Executor = Annotated[
    str | None,
    typer.Option(help="Where the runs go: inline (default) | subprocess | pool | ray | queue."),
]
Workers = Annotated[
    int | None, typer.Option(min=1, max=L.MAX_WORKERS, help="pool: concurrent CPU workers.")
]
TrialsPerGpu = Annotated[
    int | None, typer.Option(min=1, max=64, help="pool/ray: runs packed on one GPU.")
]
MaxRetries = Annotated[
    int | None, typer.Option(min=0, max=10, help="A killed worker is tried again (2).")
]
RayAddress = Annotated[str | None, typer.Option(help="ray: an existing cluster's address.")]
Storage = Annotated[str | None, typer.Option(help="queue: the database of the job queue.")]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")]
