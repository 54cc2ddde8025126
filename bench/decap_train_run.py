"""Full-corpus DeCap training on the offline model, with per-epoch held-out-caption and 22-photo validation."""
import json, sys, time, logging
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
import torch
from PIL import Image
REPO = Path(__file__).resolve().parent.parent  # usage: python bench/decap_train_run.py OUTPUT [EPOCHS]
from clipmath.encoders import load_encoder
from clipmath.train.decap import DecapConfig, train_decap, held_out_validator
from clipmath.caption.metrics import caption_metrics
encoder = load_encoder("offline-imagenet-minilm")
encoder.set_threads(1)
refs = json.loads((REPO / "examples/captions.json").read_text())
names = sorted(refs)
photos = torch.from_numpy(encoder.encode_images([Image.open(REPO / "examples/gallery/coco" / n) for n in names]))
text_validate = held_out_validator()
def validate(task):
    out = text_validate(task)
    started = time.perf_counter()
    preds = task.describe(task.memory.project(photos, task.config.temperature))
    out["photos_seconds"] = time.perf_counter() - started
    m = caption_metrics(preds, [refs[n]["captions"] for n in names], meteor=False).percent()
    out.update({f"photos {k}": v for k, v in m.items() if k in ("BLEU-4", "CIDEr", "ROUGE-L")})
    print("photos:", preds[:4], flush=True)
    return out
started = time.time()
config = DecapConfig(epochs=int(sys.argv[2]) if len(sys.argv) > 2 else 4)
result = train_decap(encoder, REPO / "examples/caption-corpus/coco_captions.txt", config, sys.argv[1], validate=validate)
print("total seconds", time.time() - started)
json.dump({"config": config.to_dict(), "history": result.history, "total_seconds": time.time() - started},
          open(Path(sys.argv[1]).with_suffix(".history.json"), "w"), indent=1)
