"""Speed of the score pipeline: feature extractors (img/s) and a 50k-sample FID estimate.

    python benchmarks/bench_score.py                       # CPU: inception + classifier img/s
    python benchmarks/bench_score.py --device cuda         # + 50k FID time, TF32 on/off

Random weights are used unless --weights points at the real FID Inception file (speed does
not depend on the values). Anchor: Inception features fp32 on one H200 ≈ 1,955 img/s.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from diffnas.evaluate.classifier import ClassifierExtractor, SmallCNN
from diffnas.evaluate.extractor import FeatureExtractor, file_sha256
from diffnas.evaluate.frechet import (
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
)
from diffnas.evaluate.inception import InceptionExtractor

# Random Inception weights are a test helper (tests/random_inception.py), shared with this script.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from random_inception import save_random_inception_weights  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def images_per_second(extractor: FeatureExtractor, images: torch.Tensor) -> float:
    extractor(images[: extractor.batch_size])  # warm-up: cuDNN autotune, allocator
    _sync(extractor.device)
    start = time.perf_counter()
    extractor(images)
    _sync(extractor.device)
    return len(images) / (time.perf_counter() - start)


def random_images(n: int, channels: int, resolution: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, resolution, resolution), generator=gen).to(
        torch.uint8
    )


def fid_estimate_seconds(extractor: FeatureExtractor, n: int, resolution: int) -> dict[str, float]:
    """Time features + statistics + Fréchet distance for n generated images vs a reference."""
    reference_features = extractor(random_images(min(n, 5000), 3, resolution, seed=1))
    ref_mu, ref_sigma = feature_statistics(reference_features)
    images = random_images(n, 3, resolution, seed=2)
    _sync(extractor.device)
    start = time.perf_counter()
    feats = extractor(images)
    _sync(extractor.device)
    t_features = time.perf_counter() - start
    mu, sigma = feature_statistics(feats)
    t_stats = time.perf_counter() - start - t_features
    frechet_distance(mu, sigma, ref_mu, ref_sigma)
    total = time.perf_counter() - start
    return {
        "features_s": t_features,
        "stats_s": t_stats,
        "frechet_s": total - t_features - t_stats,
        "total_s": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--num-images", type=int, default=None, help="images per timing")
    parser.add_argument(
        "--resolution", type=int, default=32, help="input side (inception resizes to 299)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default 64 on CPU, 256 on CUDA"
    )
    parser.add_argument(
        "--weights", type=Path, default=None, help="real FID Inception weights (optional)"
    )
    parser.add_argument(
        "--fid-samples", type=int, default=None, help="FID estimate size (CUDA default 50000)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    n = args.num_images or (2048 if cuda else 64)
    batch_size = args.batch_size or (256 if cuda else 64)
    fid_samples = args.fid_samples if args.fid_samples is not None else (50_000 if cuda else 0)
    print(
        f"device={device} {torch.cuda.get_device_name() if cuda else ''} threads={torch.get_num_threads()}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        if args.weights:
            weights, sha = args.weights, file_sha256(args.weights)
        else:
            weights = Path(tmp) / "random-inception.pth"
            sha = save_random_inception_weights(weights)
        inception = InceptionExtractor(weights, sha, device=device, batch_size=batch_size)
        images = random_images(n, 3, args.resolution)
        modes = {"default": contextlib.nullcontext()}
        if cuda:  # cuDNN convs may use TF32 by default; strict fp32 is the reference protocol
            modes["strict-fp32"] = torch.backends.cudnn.flags(enabled=True, allow_tf32=False)
        for mode, ctx in modes.items():
            with ctx:
                rate = images_per_second(inception, images)
            print(f"inception features ({mode}, bs={batch_size}, {n} img): {rate:,.0f} img/s")

        cnn = SmallCNN(3, 10)
        meta = {"arch": "smallcnn-random", "channels": 3, "resolution": args.resolution}
        classifier = ClassifierExtractor(cnn, meta, "0" * 64, device=device, batch_size=batch_size)
        rate = images_per_second(classifier, random_images(max(n, 4096), 3, args.resolution))
        print(f"classifier features (bs={batch_size}): {rate:,.0f} img/s")

        if fid_samples:
            times = fid_estimate_seconds(inception, fid_samples, args.resolution)
            parts = ", ".join(f"{k}={v:.1f}" for k, v in times.items())
            print(f"FID estimate, {fid_samples} generated images: {parts}")
        d = 2048
        rng = np.random.default_rng(0)
        a, b = rng.normal(size=(4 * d, d)), rng.normal(size=(4 * d, d))
        stats = feature_statistics(a), feature_statistics(b)
        start = time.perf_counter()
        frechet_distance(*stats[0], *stats[1])
        print(f"frechet_distance at D={d} (stats path): {time.perf_counter() - start:.2f} s")
        start = time.perf_counter()
        frechet_distance_from_features(a[:1000], b[:1000])
        print(f"RFID fast path, N=1000 per side: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
