#!/usr/bin/env bash
# Set up ./.venv (scripts/setup.sh), then run clipmath's main job offline on the photos shipped in examples/:
# index the gallery with the offline pretrained model and run composed searches on it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
CLIPMATH="${VENV:-.venv}/bin/clipmath"
STORE=${STORE:-demo.store}
MODEL=${MODEL:-offline-imagenet-minilm}

echo "== index examples/gallery into $STORE (incremental: a second run only checks for changes)"
"$CLIPMATH" index examples/gallery --store "$STORE" --model "$MODEL"
"$CLIPMATH" info "$STORE"

echo; echo "== text -> image: 'a photo of a pizza'"
"$CLIPMATH" search --store "$STORE" --text "a photo of a pizza" -k 3

echo; echo "== image + delta (SIMAT): the cat photo, cat -> cup of coffee"
"$CLIPMATH" search --store "$STORE" --image skimage/chelsea.png --from "a photo of a cat" --to "a photo of a cup of coffee" --lam 1.0 -k 3

echo; echo "== image + text (element-wise sum, the CLIP4Cir baseline): the cat photo + 'a photo of a pizza'"
"$CLIPMATH" search --store "$STORE" --image skimage/chelsea.png --text "a photo of a pizza" -k 3

echo; echo "== an expression over images and texts: cat photo - 'cat' + 'elephant'"
"$CLIPMATH" search --store "$STORE" --expr '+skimage/chelsea.png -"a photo of a cat" +"a photo of an elephant"' -k 3

echo; echo "== the photo library: 'a photo of a pizza' with a score cutoff (only the results above 0.8)"
"$CLIPMATH" search --store "$STORE" --text "a photo of a pizza" -k 10 --min-score 0.8

echo; echo "== near-duplicates in the gallery (nothing is deleted)"
"$CLIPMATH" duplicates "$STORE" --threshold 0.97
