"""Time and memory of benchmark ranking (top-50 with the reference excluded) at CIRCO scale.

    python bench/bench_eval_ranking.py --queries 1000 --gallery 123403 --dim 512

Random unit vectors stand in for features: this measures the ranking code, not a model. Reports wall time and
the process's peak resident memory before and after ranking (the vectors themselves are counted in "before").
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from clipmath.eval.ranking import EmbeddingScores


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--gallery", type=int, default=123_403)  # about the size of CIRCO's gallery
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--query-chunk", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((args.gallery, args.dim), dtype=np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exclude = [[int(i)] for i in rng.integers(0, args.gallery, args.queries)]
    before = peak_rss_mb()
    dense_mb = args.queries * args.gallery * 4 / 2**20

    start = time.perf_counter()
    results = EmbeddingScores(queries, gallery, query_chunk=args.query_chunk).top_k(args.k, exclude)
    elapsed = time.perf_counter() - start
    assert results.rows.shape == (args.queries, args.k)
    print(
        f"{args.queries} queries x {args.gallery} gallery x {args.dim}-d, top-{args.k}: {elapsed:.2f} s "
        f"({1000 * elapsed / args.queries:.2f} ms/query); peak RSS {before:.0f} MB before ranking, "
        f"{peak_rss_mb():.0f} MB after (a dense score matrix alone would be {dense_mb:.0f} MB)"
    )


if __name__ == "__main__":
    main()
