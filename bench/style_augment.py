#!/usr/bin/env python3
"""Style-transfer augmentation on a cross-style split: fine-tuning top-1 with and without, same seed, same run.

    python bench/style_augment.py [--src FOLDER] [--out DIR] [--k 2] [--epochs 3] [--image-size 128] [--seeds 0]

FOLDER holds one sub-folder per class (default: the bundled demo collection; bench/clipart_collection.py
builds a larger one from openclipart). The cross-style split: every image's Gram-matrix style vector
(ml/style.py: early EfficientNet-Lite0 layers), projected on the collection's first principal style axis;
within each class the 60% of images lowest on that axis train, the 40% highest are the test split. So test
images are drawn in styles (line weight, texture, colour statistics) the training images are not, and every
class is on both sides.

Runs, all on that split, CPU, each fine-tuning run once per --seeds value (same seeds for all):
  svm       SVM on the backbone's ImageNet features (the plain reference, no augmentation)
  plain     `train --method finetune` (the baseline for the augmentation)
  style     the same with `--augment style:K`: styles from every image of the project (labels unused)
  style-tr  the same with styles from the training images only (option style_pool=train)
Prints top-1 (and top-5) on the test split for each, and the seconds spent (stylizing included). Given an
--out that holds a project this bench made, it reuses it: the same split, and the stylized copies cached.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from artannot.demo import demo_folder  # noqa: E402
from artannot.ml import style  # noqa: E402
from artannot.project import Project  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def cross_style_split(project: Project) -> tuple[int, int]:
    """Per class: the lowest 60% on the first principal style axis train, the rest test; (n train, n test)."""
    from sklearn.decomposition import PCA

    rows = [(r.id, r.path, r.class_id) for r in project.images() if r.class_id is not None]
    feats, ok = style.gram_features([p for _, p, _ in rows])
    axis = np.zeros(len(rows))
    axis[ok] = PCA(n_components=1, random_state=0).fit_transform(feats[ok])[:, 0]
    train, test = [], []
    for c in sorted({c for *_, c in rows}):
        members = sorted((axis[k], rows[k][0]) for k in range(len(rows)) if rows[k][2] == c and ok[k])
        cut = round(0.6 * len(members))
        train += [i for _, i in members[:cut]]
        test += [i for _, i in members[cut:]]
    project.set_split(train, "train")
    project.set_split(test, "test")
    return len(train), len(test)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=None, help="class folders (default: the bundled demo)")
    ap.add_argument("--out", type=Path, default=None, help="where the project goes (default: a temp folder)")
    ap.add_argument("--k", type=int, default=2, help="stylized copies per training image")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--seeds", default="0", help="fine-tuning seeds, e.g. 0,1,2 (each run once per seed)")
    args = ap.parse_args()
    seeds = [int(x) for x in args.seeds.split(",")]
    src = args.src or demo_folder()
    out = args.out or Path(tempfile.mkdtemp(prefix="style-augment-"))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench.artannot"
    reuse = path.exists()  # a project this bench made before: its split, and its cached stylized copies
    with (Project(path) if reuse else Project.create(path)) as project:
        if not reuse:
            project.import_folder(src, labels_from="folder", split="train")
            cross_style_split(project)
        n_train = sum(r.split == "train" for r in project.images())
        n_test = sum(r.split == "test" for r in project.images())
        print(f"{src}: {n_train} train / {n_test} test images (cross-style split{', reused' if reuse else ''}),"
              f" {len(project.classes())} classes, finetune {args.epochs} epochs at {args.image_size} px,"
              f" K={args.k}, seeds {seeds}, {torch.get_num_threads()} thread(s)", flush=True)
        runs = [("svm", "svm", None, {}, None)]
        for seed in seeds:
            size = {"image_size": args.image_size, "seed": seed}
            runs += [("plain", "finetune", None, size, seed), ("style", "finetune", f"style:{args.k}", size, seed),
                     ("style-tr", "finetune", f"style:{args.k}", {**size, "style_pool": "train"}, seed)]
        results: dict[str, list[float]] = {}
        for name, method, augment, options, seed in runs:
            t0 = time.perf_counter()
            result = project.train(method=method, epochs=None if method == "svm" else args.epochs, device="cpu",
                                   options=dict(options), augment=augment)
            seconds = time.perf_counter() - t0
            results.setdefault(name, []).append(result.metrics["top1"])
            print(f"  {name:9s} seed {'-' if seed is None else seed}  top-1 {result.metrics['top1']:.3f}"
                  f"  top-5 {result.metrics.get('top5', 0):.3f}  ({seconds:.0f} s incl. stylizing)", flush=True)
    mean = {k: float(np.mean(v)) for k, v in results.items()}
    print(f"finetune top-1 (mean over seeds {seeds}) without style augmentation {mean['plain']:.3f}, with"
          f" {mean['style']:.3f} ({mean['style'] - mean['plain']:+.3f}); styles from train images only"
          f" {mean['style-tr']:.3f}; SVM reference {mean['svm']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
