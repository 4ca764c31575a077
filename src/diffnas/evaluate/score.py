"""One entry point that scores generated images against reference statistics.

Every score carries its protocol (metric, extractor + weights hash, sample counts, sampler
and steps, reference set) because FID values are only comparable under the same protocol:
an RFID at N=1k, S=25 steps says nothing about an FID at N=50k, S=1000. Its label names the
extractor next to the value ("FID[classifier] 12.3"); plain "FID" means Inception features.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, computed_field

from diffnas.data.datasets import ImageData
from diffnas.errors import UserError
from diffnas.evaluate.extractor import FeatureExtractor, as_uint8_images
from diffnas.evaluate.frechet import (
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    kid,
)
from diffnas.evaluate.frechet import kid_subset_size as default_kid_subset_size
from diffnas.evaluate.inception import INCEPTION_ENV, resolve_inception_weights
from diffnas.evaluate.reference import RefStats

Metric = Literal["fid", "rfid", "kid"]
METRICS = ("fid", "rfid", "kid")


class ScoreProtocol(BaseModel):
    """How a score was measured; two scores compare only if their protocols agree."""

    metric: Metric = Field(description="fid; rfid (FID at reduced samples/steps); kid (MMD²)")
    extractor: str = Field(description="feature extractor name, e.g. inception-v3-2048")
    weights_sha256: str = Field(description="SHA-256 of the extractor weights file")
    num_generated: int = Field(description="number of generated images scored")
    num_reference: int = Field(description="number of reference images in the statistics")
    reference: str = Field(description="reference set as dataset/split/fingerprint")
    sampler: str | None = Field(default=None, description="sampler that made the images")
    steps: int | None = Field(default=None, description="sampler steps")
    resolution: int = Field(description="image side length in pixels")
    kid_subsets: int | None = Field(default=None, description="KID only: number of subsets")
    kid_subset_size: int | None = Field(default=None, description="KID only: images per subset")

    @property
    def label(self) -> str:
        return score_label(self.metric, self.extractor)


STANDARD_EXTRACTOR = "inception"  # the features published FID and KID values are computed on


def score_label(metric: str, extractor: str) -> str:
    """A score's name wherever its value is shown or stored: plain "FID" or "KID" only for the
    standard Inception protocol; every other score names its extractor, e.g. "FID[classifier]",
    "RFID[inception]", "KID[classifier]". `extractor` is a kind ("classifier") or a full
    extractor name ("inception-v3-2048")."""
    kind = extractor.split("-", 1)[0]
    if kind == STANDARD_EXTRACTOR and metric in ("fid", "kid"):
        return metric.upper()
    return f"{metric.upper()}[{kind}]"


class Score(BaseModel):
    """A score value with its protocol (lower is better for every metric here)."""

    value: float = Field(description="FID/RFID, or the KID mean")
    std: float | None = Field(default=None, description="KID only: std over subsets")
    protocol: ScoreProtocol

    @computed_field(description="the score's name with its extractor, e.g. RFID[classifier]")
    @property
    def label(self) -> str:
        return self.protocol.label


def score_images(
    generated: torch.Tensor | np.ndarray,
    reference: RefStats,
    extractor: FeatureExtractor,
    *,
    metric: str = "rfid",
    sampler: str | None = None,
    steps: int | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int | None = None,
    seed: int = 2020,
) -> Score:
    """Score generated uint8 images N×C×H×W against `reference` with `metric`.

    KID's subset size defaults to min(1000, N/2) over the generated and reference sets
    (`frechet.kid_subset_size`): proper subsets, whose spread is a real std.
    """
    if metric not in METRICS:
        raise UserError(f"metric {metric!r} is unknown; choose one of {METRICS}", field="metric")
    made_by = (reference.extractor, reference.weights_sha256)
    if (extractor.name, extractor.weights_sha256) != made_by:
        raise UserError(
            f"reference statistics were made with {reference.extractor} "
            f"({reference.weights_sha256[:12]}) but the extractor is {extractor.name} "
            f"({extractor.weights_sha256[:12]}); recompute them with the same extractor",
            field="reference",
        )
    generated = as_uint8_images(generated, "generated images")
    if tuple(generated.shape[-2:]) != (reference.resolution, reference.resolution):
        raise UserError(
            f"generated images are {tuple(generated.shape[-2:])} but the reference statistics "
            f"are at resolution {reference.resolution}",
            field="generated",
        )
    features = extractor(generated)
    protocol = dict(
        metric=metric,
        extractor=extractor.name,
        weights_sha256=extractor.weights_sha256,
        num_generated=len(features),
        num_reference=reference.num_images,
        reference=reference.description,
        sampler=sampler,
        steps=steps,
        resolution=reference.resolution,
    )
    if metric == "kid":
        size = kid_subset_size or default_kid_subset_size(len(features), reference.num_images)
        mean, std = kid(
            features, reference.features, subsets=kid_subsets, subset_size=size, seed=seed
        )
        protocol.update(kid_subsets=kid_subsets, kid_subset_size=size)
        return Score(value=mean, std=std, protocol=ScoreProtocol(**protocol))
    if max(len(features), reference.num_images) <= features.shape[1]:
        value = frechet_distance_from_features(features, reference.features)  # N×N fast path
    else:
        value = frechet_distance(*feature_statistics(features), reference.mu, reference.sigma)
    return Score(value=value, protocol=ScoreProtocol(**protocol))


# The classifier trains on one half of the data and keeps the other half as the reference;
# a Fréchet distance needs at least two reference images for a covariance.
MIN_CLASSIFIER_IMAGES = 4
MIN_REFERENCE_IMAGES = 2


def check_scoring(
    images: ImageData,
    extractor: str,
    inception_weights: str | None,
    *,
    allow_download: bool = True,
) -> None:
    """What scoring against `images` needs, checked before sampling and before a run folder
    exists: labels and enough images for the classifier, a usable channel count, and the
    Inception weights on disk (or, with `allow_download`, fetched now rather than after the
    first candidate trained; offline that is a refusal naming the file to get)."""
    if extractor == "classifier":
        if images.y is None:
            raise UserError(
                f"data {images.name} has no labels, and the classifier extractor is trained on "
                "them; use labelled data or --extractor inception",
                field="extractor",
            )
        classes = int(images.y.unique().numel())
        if len(images) < MIN_CLASSIFIER_IMAGES or classes < 2:
            raise UserError(
                f"data {images.name} has {len(images)} image(s) in {classes} class(es); the "
                f"classifier extractor needs at least {MIN_CLASSIFIER_IMAGES} images (half to "
                "train on, half kept as the reference) in at least 2 classes",
                field="data",
            )
    if extractor == "inception":
        if images.channels not in (1, 3):
            raise UserError(
                f"data {images.name} has {images.channels} channels; the inception extractor "
                "takes 1 or 3",
                field="extractor",
            )
        if len(images) < MIN_REFERENCE_IMAGES:
            raise UserError(
                f"data {images.name} has {len(images)} image; a Fréchet distance needs at "
                f"least {MIN_REFERENCE_IMAGES} reference images",
                field="data",
            )
        if allow_download or inception_weights or os.environ.get(INCEPTION_ENV):
            # a named file must exist and be the right one; an unnamed one is found or fetched
            resolve_inception_weights(inception_weights, allow_download=allow_download)
