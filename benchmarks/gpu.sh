#!/usr/bin/env bash
# The GPU check, for a lent device machine: one script, one call, under 8 minutes on an
# H100/H200 by design (not yet timed there: written without a GPU, see README "GPU check").
# Run from the repo root after `make setup`:  bash benchmarks/gpu.sh > gpu-results.txt
# Copy its tables into benchmarks/RESULTS.md with the date and the card.
#
# 1. throughput benchmarks, alone on the machine (their figures are compared to anchors);
# 2. the whole test suite (`make test`: the CUDA code paths run where a test finds a GPU), in the
#    background on the CPU cores, while
# 3. a short real search runs on the card the way a GPU user runs one: the bundled CIFAR-100
#    subset (../shared/data, see its README), the default proposer (the embedded LLM's edits),
#    `--device cuda --executor pool --trials-per-gpu 2`; it must end with every accepted
#    candidate trained and the promoted one scored, then `report` and `export` run on it and
#    diffusers samples from the export on the GPU.
# The script exits non-zero when the suite or any check of the search fails.
set -euo pipefail
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/cifar100_subset_a.npz}
WORK=$(mktemp -d /tmp/diffnas-gpu.XXXXXX)
stage() { echo; echo "## [$((SECONDS / 60)) min $((SECONDS % 60)) s] $*"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
stage "training throughput, DDPM CIFAR-10 UNet (35.7 M), batch 128 (anchors: fp32 666, TF32 1487, bf16+CL 1969, +compile 2385 img/s on H200)"
$PY benchmarks/bench_train.py --device cuda --arch ddpm-cifar10 --batch 128 --steps 10 --repeats 3 --warmup 5
stage "scoring: Inception features and a 50k-sample FID estimate (anchor: 1955 img/s fp32 on H200)"
$PY benchmarks/bench_score.py --device cuda
stage "one proxy evaluation of a tiny candidate on the GPU"
$PY benchmarks/bench_proxy_eval.py --device cuda --steps 1000 --batch 128 --samples 1000 --sampler-steps 50
stage "the pool's packing gain on one card: 4 tiny candidates at once against 1 (anchor: 2.0x images/s with four 4.4 M-parameter UNets on an H200)"
$PY benchmarks/bench_pool.py --device cuda --candidates 8 --steps 1000 --batch 128 --samples 1000 --trials-per-gpu 4
stage "MACs against measured latency of one forward pass (60 tiny architectures; 40 of cifar10-ddpm), as the sampler runs it (bf16 autocast)"
$PY benchmarks/bench_latency.py --device cuda --space tiny --archs 60 --batch 1,128 --rounds 2 --runs 20 --warmup 5
$PY benchmarks/bench_latency.py --device cuda --space cifar10-ddpm --archs 40 --batch 1,64 --rounds 2 --runs 10 --warmup 5

stage "the test suite (make test), in the background: log in $WORK/test.log"
make test > "$WORK/test.log" 2>&1 &
TESTS=$!

stage "a real search on the GPU: CIFAR-100 subset, pool executor, 2 candidates per card"
test -f "$DATA" || { echo "missing $DATA (see ../shared/data/README.md)"; exit 1; }
# 32x32 RGB nets small enough that two share a card by measured cost (GMACs x batch < 256)
cat > "$WORK/gpu32.yaml" <<'YAML'
name: gpu32
description: 32x32 RGB, DDPM objective, nets small enough to pack two per GPU
image_size: 32
in_channels: 3
objective: ddpm
base_channels: [32, 48, 64]
num_levels: [2, 3]
channel_mult_values: [1, 2]
num_res_blocks: [1, 2]
attention_resolutions: [16, 8]
mid_attention: [true, false]
head_channels: [32]
dropout: [0.0, 0.1]
scale_shift_norm: [true, false]
resblock_updown: [false]
norm_groups: [16]
budget: {max_gmacs: 1.5, min_gmacs: 0.05}
YAML
$PY -m diffnas search --space "$WORK/gpu32.yaml" --data "$DATA" --runs "$WORK/runs" \
    --device cuda --executor pool --trials-per-gpu 2 --rounds 2 --per-round 2 \
    --proxy-steps 300 --proxy-batch-size 64 --score-samples 256 --score-steps 20 \
    --promote 1 --final-recipe proxy --final-steps 600 --final-batch-size 64 \
    --fid-samples 512 --fid-steps 20
RUN=$(ls -d "$WORK"/runs/00000-search-*)
$PY - "$RUN" <<'PY'
import json, sys
from pathlib import Path
summary = json.loads((Path(sys.argv[1]) / "summary.json").read_text())
counts = summary["status_counts"]
untrained = {k: n for k, n in counts.items() if k not in ("complete", "rejected")}
assert not untrained, f"candidates not trained: {untrained} ({counts})"
assert counts.get("complete", 0) >= 1, f"no candidate trained: {counts}"
assert not summary.get("rounds_failed"), summary["stop_reason"]
finals = summary["final"]
assert finals and all(f["status"] == "complete" for f in finals), finals
assert summary["compute"]["gpu_hours"] > 0, summary["compute"]
print(f"search ok: {counts}, origins {summary['origins']}, final {finals[0]['score']:.4g}, "
      f"{summary['compute']}")
PY
$PY -m diffnas status "$RUN"
stage "report and export of that search"
$PY -m diffnas report "$RUN" --out "$WORK/report"
BEST=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['best_trial'])" "$RUN/summary.json")
$PY -m diffnas export "$RUN" --trial "$BEST" --out "$WORK/export"
$PY - "$WORK/export" <<'PY'
import sys
import torch
from diffusers import DDPMPipeline
pipe = DDPMPipeline.from_pretrained(sys.argv[1]).to("cuda")
pipe.set_progress_bar_config(disable=True)
images = pipe(batch_size=4, num_inference_steps=50, output_type="np").images
assert images.shape == (4, 32, 32, 3) and torch.isfinite(torch.from_numpy(images)).all()
print("export ok: DDPMPipeline sampled 4 images on", torch.cuda.get_device_name(0))
PY

stage "waiting for the test suite"
if wait "$TESTS"; then
    tail -n 3 "$WORK/test.log"
else
    tail -n 60 "$WORK/test.log"
    echo "make test FAILED (full log: $WORK/test.log)"
    exit 1
fi
stage "all GPU checks passed"
