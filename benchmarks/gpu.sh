#!/usr/bin/env bash
# The GPU check, for a lent device machine: one script, one call (about 5-8 minutes on an H100/H200).
# Run from the repo root after `make setup`:  bash benchmarks/gpu.sh > gpu-results.txt
# Copy its tables into benchmarks/RESULTS.md with the date and the card.
set -euo pipefail
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
echo "## training throughput, DDPM CIFAR-10 UNet (35.7 M), batch 128 (anchors: fp32 666, TF32 1487, bf16+CL 1969, +compile 2385 img/s on H200)"
$PY benchmarks/bench_train.py --device cuda --arch ddpm-cifar10 --batch 128 --steps 10 --rounds 3 --warmup 5
echo "## scoring: Inception features and a 50k-sample FID estimate (anchor: 1955 img/s fp32 on H200)"
$PY benchmarks/bench_score.py --device cuda
echo "## one proxy evaluation of a tiny candidate on the GPU"
$PY benchmarks/bench_proxy_eval.py --device cuda --steps 2000 --batch 128 --samples 1000 --sampler-steps 50
echo "## the pool's packing gain on one card: 4 tiny candidates at once against 1 (anchor: 2.0x images/s with four 4.4 M-parameter UNets on an H200)"
$PY benchmarks/bench_pool.py --device cuda --candidates 8 --steps 2000 --batch 128 --samples 1000 --trials-per-gpu 4
echo "## MACs against measured latency of one forward pass (60 tiny architectures; 40 of cifar10-ddpm), as the sampler runs it (bf16 autocast)"
$PY benchmarks/bench_latency.py --device cuda --space tiny --archs 60 --batch 1,128 --rounds 2 --runs 20 --warmup 5
$PY benchmarks/bench_latency.py --device cuda --space cifar10-ddpm --archs 40 --batch 1,64 --rounds 2 --runs 10 --warmup 5
