"""References for `mnist-ae tsne` on the same test codes: openTSNE (FFT-accelerated t-SNE, the
method ours uses) and scikit-learn's Barnes-Hut t-SNE, each with its fit time and the
trustworthiness (k = 10, scikit-learn's measure of how well each point's nearest neighbours
are kept) of its map beside ours.

Settings shared with ours: perplexity 30, 1000 iterations (250 of them with early exaggeration
12), random start, step size max(n / 12, 200). openTSNE keeps its own defaults otherwise
(approximate neighbours by Annoy; ours finds the exact ones). openTSNE is also run with all
its defaults (PCA start, 750 iterations), as its users would. scikit-learn: angle 0.5, its
automatic step size. scikit-learn is needed (for trustworthiness); openTSNE's maps are skipped
when it is not installed, scikit-learn's map with `--no-sklearn`.

    mnist-ae classify RUN --export-codes   # writes RUN/codes_test.csv
    mnist-ae tsne RUN                      # writes RUN/tsne.csv and RUN/tsne.json
    python bench/sklearn_tsne.py RUN [THREADS] [--no-sklearn]

Prints one line per map, and writes the same figures as JSON to RUN/tsne_reference.json.
"""
import json
import sys
import time

import numpy as np
from sklearn.manifold import trustworthiness

args = [a for a in sys.argv[1:] if not a.startswith("--")]
run = args[0]
threads = int(args[1]) if len(args) > 1 else 2
with_sklearn = "--no-sklearn" not in sys.argv
ours = np.loadtxt(f"{run}/tsne.csv", delimiter=",", skiprows=1)
n = len(ours)
test = np.loadtxt(f"{run}/codes_test.csv", delimiter=",", skiprows=1)[:n]
labels, codes = test[:, 0].astype(int), test[:, 1:]
assert (labels == ours[:, 1].astype(int)).all(), "tsne.csv and codes_test.csv disagree"
with open(f"{run}/tsne.json") as f:
    our_seconds = json.load(f)["seconds"]
step = max(n / 12, 200)


def opentsne(**settings):
    from openTSNE import TSNE

    return TSNE(random_state=0, n_jobs=threads, verbose=False, **settings).fit(codes)


# Ours: 250 iterations of early exaggeration 12, then 750, at our step size, random start.
OUR_SETTINGS = dict(
    perplexity=30.0,
    n_iter=750,
    early_exaggeration_iter=250,
    early_exaggeration=12,
    learning_rate=step,
    initialization="random",
    negative_gradient_method="fft",
)


def sklearn_map():
    from sklearn.manifold import TSNE

    return TSNE(
        n_components=2,
        perplexity=30.0,
        angle=0.5,
        max_iter=1000,
        init="random",
        method="barnes_hut",
        random_state=0,
        n_jobs=threads,
    ).fit_transform(codes)


rows = [("mnist-ae", our_seconds, ours[:, 2:4])]
candidates = [
    ("openTSNE", "openTSNE", lambda: opentsne(**OUR_SETTINGS)),
    ("openTSNE, its defaults", "openTSNE", opentsne),
]
if with_sklearn:
    candidates.append(("scikit-learn", "sklearn", sklearn_map))
for name, module, fit in candidates:
    try:
        __import__(module)
    except ImportError:
        print(f"{name} is not installed: skipped")
        continue
    t0 = time.perf_counter()
    embedding = np.asarray(fit())
    rows.append((name, time.perf_counter() - t0, embedding))

print(f"points {n}, code size {codes.shape[1]}, threads {threads} (mnist-ae maps on one)")
report = {"points": n, "code_size": int(codes.shape[1]), "threads": threads, "maps": []}
for name, seconds, embedding in rows:
    trust = trustworthiness(codes, embedding, n_neighbors=10)
    print(f"{name:<22} t-SNE {seconds:6.1f} s  trustworthiness(k=10) {trust:.4f}")
    report["maps"].append({"name": name, "seconds": seconds, "trustworthiness": trust})
with open(f"{run}/tsne_reference.json", "w") as f:
    json.dump(report, f, indent=2)
