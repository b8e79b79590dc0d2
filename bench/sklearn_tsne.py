"""Reference for `mnist-ae tsne`: scikit-learn's Barnes-Hut t-SNE (perplexity 30, angle 0.5,
1000 iterations, random start, the automatic step size; ours has the same perplexity,
iterations and start, with FIt-SNE) on the same test codes, with its fit time, and the
trustworthiness (k = 10, scikit-learn's measure of how well each point's nearest neighbours
are kept) of both maps.

    mnist-ae classify RUN --export-codes   # writes RUN/codes_test.csv
    mnist-ae tsne RUN                      # writes RUN/tsne.csv and RUN/tsne.json
    python bench/sklearn_tsne.py RUN [THREADS]
"""
import json
import sys
import time

import numpy as np
from sklearn.manifold import TSNE, trustworthiness

run = sys.argv[1]
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
ours = np.loadtxt(f"{run}/tsne.csv", delimiter=",", skiprows=1)
n = len(ours)
test = np.loadtxt(f"{run}/codes_test.csv", delimiter=",", skiprows=1)[:n]
labels, codes = test[:, 0].astype(int), test[:, 1:]
assert (labels == ours[:, 1].astype(int)).all(), "tsne.csv and codes_test.csv disagree"
with open(f"{run}/tsne.json") as f:
    our_seconds = json.load(f)["seconds"]
t0 = time.perf_counter()
theirs = TSNE(
    n_components=2,
    perplexity=30.0,
    angle=0.5,
    max_iter=1000,
    init="random",
    method="barnes_hut",
    random_state=0,
    n_jobs=threads,
).fit_transform(codes)
seconds = time.perf_counter() - t0
print(f"points {n}, code size {codes.shape[1]}, threads {threads}")
print(f"mnist-ae    t-SNE {our_seconds:6.1f} s  trustworthiness(k=10) "
      f"{trustworthiness(codes, ours[:, 2:4], n_neighbors=10):.4f}")
print(f"scikit-learn t-SNE {seconds:6.1f} s  trustworthiness(k=10) "
      f"{trustworthiness(codes, theirs, n_neighbors=10):.4f}")
