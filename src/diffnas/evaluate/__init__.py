"""Scores for generated images: FID/RFID and KID with pluggable feature extractors.

- `features`: extractors, uint8 N×C×H×W → float64 N×D: torch-fidelity's FID Inception, and
  `get_extractor` to pick one by name.
- `classifier`: a small CNN trained on the dataset's labels for offline use (shipped,
  hash-pinned, for the bundled digits; reproducible training for any other dataset).
- `frechet`: Fréchet distance and KID math.
- `reference`: cached reference statistics.
- `score`: `score_images` → `Score` with its `ScoreProtocol`.
"""

from __future__ import annotations

from diffnas.evaluate.features import (
    INCEPTION_ENV,
    INCEPTION_FILE,
    FeatureExtractor,
    get_extractor,
)
from diffnas.evaluate.frechet import feature_statistics, frechet_distance, kid
from diffnas.evaluate.reference import RefStats, reference_key, reference_stats
from diffnas.evaluate.score import Score, ScoreProtocol, score_images

__all__ = [
    "INCEPTION_ENV",
    "INCEPTION_FILE",
    "FeatureExtractor",
    "RefStats",
    "Score",
    "ScoreProtocol",
    "feature_statistics",
    "frechet_distance",
    "get_extractor",
    "kid",
    "reference_key",
    "reference_stats",
    "score_images",
]
