"""A cheap but real recipe for tests: reads the artifact, writes outputs, can sleep or fail.

python fake_recipe.py ARTIFACT [--sleep S] [--fail] [--tag T] --out DIR
Writes DIR/report.json (artifact sha256, tag, env TAG_ENV, start/end wall times) and DIR/model.pt (the
artifact's bytes plus the tag, so each run's output differs and can feed another job).
"""

import argparse
import hashlib
import json
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("artifact")
parser.add_argument("--sleep", type=float, default=0.0)
parser.add_argument("--fail", action="store_true")
parser.add_argument("--tag", default="")
parser.add_argument("--out", required=True)
args = parser.parse_args()
started = time.time()
print(f"fake recipe: tag={args.tag} env={os.environ.get('TAG_ENV', '')}", flush=True)
time.sleep(args.sleep)
if args.fail:
    print("fake recipe: failing on purpose: bad calibration data", file=sys.stderr, flush=True)
    sys.exit(3)
os.makedirs(args.out, exist_ok=True)
with open(args.artifact, "rb") as f:
    data = f.read()
sha = hashlib.sha256(data).hexdigest()
with open(os.path.join(args.out, "model.pt"), "wb") as f:
    f.write(data + args.tag.encode())
report = {"artifact_sha256": sha, "tag": args.tag, "env": os.environ.get("TAG_ENV", ""),
          "started": started, "ended": time.time(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
with open(os.path.join(args.out, "report.json"), "w") as f:
    json.dump(report, f)
print("fake recipe: done", flush=True)
