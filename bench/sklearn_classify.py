"""Reference for `mnist-ae classify`: fits scikit-learn's LogisticRegression, LinearSVC, SVC
(all C=1; SVC with its default RBF kernel and gamma="scale") and MLPClassifier (defaults) on
standardised codes on the codes that `mnist-ae classify RUN --export-codes` wrote, and
prints test accuracies, fit times and the classification reports.

    python bench/sklearn_classify.py RUN
"""
import sys
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.metrics import classification_report
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

run = sys.argv[1]
train = np.loadtxt(f"{run}/codes_train.csv", delimiter=",", skiprows=1)
test = np.loadtxt(f"{run}/codes_test.csv", delimiter=",", skiprows=1)
ytr, xtr = train[:, 0].astype(int), train[:, 1:]
yte, xte = test[:, 0].astype(int), test[:, 1:]
sc = StandardScaler().fit(xtr)
xtr, xte = sc.transform(xtr), sc.transform(xte)
for name, clf in [
    ("logistic", LogisticRegression(C=1.0, max_iter=1000)),
    ("svm", LinearSVC(C=1.0, max_iter=10000)),
    ("rbf", SVC(C=1.0)),
    ("mlp", MLPClassifier(random_state=0)),
]:
    t0 = time.perf_counter()
    clf.fit(xtr, ytr)
    fit = time.perf_counter() - t0
    pred = clf.predict(xte)
    print(
        f"{name}: test accuracy {np.mean(pred == yte):.4f} train {clf.score(xtr, ytr):.4f}"
        f" (fitted in {fit:.1f}s)"
    )
    print(classification_report(yte, pred))
