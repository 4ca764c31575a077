"""Scores for generated images: FID/RFID and KID with pluggable feature extractors.

- `extractor`: what an extractor is, uint8 N×C×H×W → float64 N×D (`FeatureExtractor`).
- `inception`: torch-fidelity's FID Inception and its hash-checked weights.
- `classifier`: a small CNN trained on the dataset's labels for offline use (shipped,
  hash-pinned, for the bundled digits; reproducible training for any other dataset).
- `features`: `get_extractor`, one of them by name.
- `frechet`: Fréchet distance and KID math.
- `reference`: cached reference statistics.
- `score`: `score_images` → `Score` with its `ScoreProtocol`.
"""

from __future__ import annotations

from diffnas.evaluate.extractor import FeatureExtractor
from diffnas.evaluate.features import get_extractor
from diffnas.evaluate.frechet import feature_statistics, frechet_distance, kid
from diffnas.evaluate.inception import INCEPTION_ENV, INCEPTION_FILE
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
