#!/usr/bin/env python3
"""Illustration2Vec retrieval on a tagged project: how many tags an image's nearest neighbours share with it.

    python bench/illustration2vec_hash.py PROJECT [--k 5] [--split test] [--tag-model ID]

For every tagged image of the split (queries) its k nearest images among all tagged images, by
  * Hamming distance on the tag model's codes (sigmoid outputs >= 0.5, the paper's hash),
  * Hamming distance on the fallback codes (ImageNet features above their median, 1280 bits),
  * cosine on the ImageNet features (no hashing: the plain baseline),
  * random neighbours (chance),
and the mean Jaccard index of the query's curated tags with each neighbour's. Needs a tag model
(`artannot train PROJECT --method tags`); features come from the project's cache.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("project")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--split", default="test")
    ap.add_argument("--tag-model", type=int)
    args = ap.parse_args()

    from artannot.ml.embedding import (
        collection_codes,
        cosine_knn,
        hamming_knn,
        hash_codes,
        l2_normalize,
        model_features,
    )
    from artannot.project import Project
    from artannot.store import repo
    from artannot.store import tags as tag_store

    with Project(args.project) as p:
        truth = {i: t for split in ("train", "val", "test") for i, t in tag_store.tagged_images(p.conn, split).items()}
        queries = set(tag_store.tagged_images(p.conn, args.split))
        images = [im for im in repo.all_images(p.conn) if im[0] in truth]
        ids = np.array([i for i, _, _ in images], np.int64)
        feats, ok, _ = model_features(p.conn, p.cache_dir, None, [(f, sha) for _, f, sha in images])
        codes = collection_codes(p.conn, ids, tag_model=args.tag_model)
    keep = ok
    ids, feats, tag_codes = ids[keep], feats[keep], codes.codes[keep]
    rows = [k for k, i in enumerate(ids.tolist()) if i in queries]

    def jaccard(a: int, b: int) -> float:
        x, y = truth[a], truth[b]
        return len(x & y) / max(len(x | y), 1)

    def score(neigh: np.ndarray) -> float:
        return float(np.mean([jaccard(int(ids[q]), int(ids[j])) for q, row in zip(rows, neigh, strict=True)
                              for j in row]))

    rng = np.random.default_rng(0)
    out = {}
    t = time.perf_counter()
    out[f"tag-model codes ({codes.bits} bits)"] = score(hamming_knn(tag_codes, rows, args.k)[0])
    median = hash_codes(feats, "median")
    out[f"median codes ({feats.shape[1]} bits)"] = score(hamming_knn(median, rows, args.k)[0])
    out["cosine on features"] = score(cosine_knn(l2_normalize(feats), rows, args.k, normalized=True)[0])
    out["random"] = score(np.array([rng.choice([j for j in range(len(ids)) if j != q], args.k, replace=False)
                                    for q in rows]))
    print(f"{len(rows)} {args.split} queries among {len(ids)} tagged images, k={args.k}, tag model "
          f"{codes.tag_model} ({time.perf_counter() - t:.2f}s)")
    for name, v in out.items():
        print(f"  {name:<28} mean tag Jaccard of neighbours {v:.3f}")


if __name__ == "__main__":
    main()
