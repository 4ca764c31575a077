"""Rebuild the classifier the package ships for the bundled digits, bit for bit.

    python tools/build_digits_classifier.py           # write it, print its SHA-256 and accuracy
    python tools/build_digits_classifier.py --check   # retrain to a temp file, compare hashes

It trains exactly what `diffnas.evaluate.classifier.classifier_extractor` trains for
`--data digits` (its recipe under `deterministic_training`: one torch thread, seeded order), so
the shipped file is the cache entry every machine and executor shares. Run it after a change
that bumps `CLASSIFIER_RECIPE`, then paste the printed hash into `DIGITS_CLASSIFIER_SHA256`.
On this project's machine (x86-64, torch 2.14.1) the rebuild gives the pinned hash; a CPU with
other vector units may round differently and print another one - then the shipped file stays.

A maintainer's build step for a package file, so it lives here, not in benchmarks/ (figures)
or the CLI (users never need it: the weights come with the package).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from diffnas.data.datasets import DataSpec, load_images
from diffnas.evaluate.classifier import (
    DEFAULT_EPOCHS,
    DIGITS_CLASSIFIER,
    DIGITS_CLASSIFIER_SHA256,
    fit_classifier,
    save_classifier,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    data = load_images(DataSpec(kind="digits"))  # what `--data digits` loads: train split, 16×16
    model, meta = fit_classifier(data.as_uint8(), data.y, seed=0, epochs=DEFAULT_EPOCHS)
    meta["dataset"] = f"{data.name} {data.channels}x{data.image_size}x{data.image_size}"
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / DIGITS_CLASSIFIER.name if args.check else DIGITS_CLASSIFIER
        target.parent.mkdir(parents=True, exist_ok=True)
        sha = save_classifier(target, model, meta)
    print(
        f"held-out accuracy {meta['heldout_accuracy']:.4f} on {len(data) - meta['num_train_images']} images"
    )
    print(f"sha256 {sha}")
    if sha == DIGITS_CLASSIFIER_SHA256:
        print("matches DIGITS_CLASSIFIER_SHA256")
        return 0
    if args.check:
        print(f"differs from the pinned {DIGITS_CLASSIFIER_SHA256}", file=sys.stderr)
        return 1
    print(f"wrote {DIGITS_CLASSIFIER}; set DIGITS_CLASSIFIER_SHA256 = {sha!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
