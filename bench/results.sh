#!/usr/bin/env bash
# The README's quality figures for this build: every command its Results, Evaluation, sweep and
# Latent analysis passages quote, run in a scratch folder, and one summary of their numbers
# (results.md for people, results.json for programs) next to the run folders.
#   bench/results.sh [OUT]          (default: target/results; OUT must not exist)
#   FULL=1 bench/results.sh         (also the 30-epoch vae and its judged samples)
#   MNIST_AE_BIN=path/mnist-ae bench/results.sh   (a binary built elsewhere: no build here)
# One build gives the same numbers on every run (bit for bit), so one run of each command is
# the figure; the wall times are one run each, on whatever else the machine does then. The
# main job runs as the README says, `mnist-ae train --report` in an empty folder, reading MNIST
# from $MNIST_AE_DATA (else ../shared/data/mnist); its log is main.log. The pictures under
# docs/images come from these runs: runs/conv64 (the main job), runs/vae (vae_samples.png, the
# judged vae samples) and runs/sweep-mlp (sweep.png).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/results}"
[ ! -e "$out" ] || { echo "$out exists: give a new folder" >&2; exit 2; }
MNIST_AE_DATA="${MNIST_AE_DATA:-$(cd ../shared/data/mnist 2>/dev/null && pwd || echo ../shared/data/mnist)}"
export MNIST_AE_DATA
if [ -n "${MNIST_AE_BIN:-}" ]; then
  bin=$(realpath "$MNIST_AE_BIN")
else
  cargo build --release -q
  bin=$(realpath target/release/mnist-ae)
fi
mkdir -p "$out"
out=$(realpath "$out")
cd "$out"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores" | tee cpu.txt
"$bin" --version | tee version.txt

# The two timed commands: bash's `time` prints their wall seconds (%R) on the stderr of the
# `{ …; }` group, which goes to a file; each command's own output goes where its own
# redirections send it.
TIMEFORMAT=%R

echo "== the main job: mnist-ae train --report"
{ time "$bin" train --report > main.log 2>&1; } 2> main.seconds

echo "== conv64 over seeds, lr 1e-3 and 2e-3"
for lr in 1e-3 2e-3; do
  for seed in 42 1 2 3 4; do
    [ "$lr/$seed" != 1e-3/42 ] || continue # the main job
    "$bin" train --model conv64 --lr "$lr" --seed "$seed" --out "runs/conv64-lr$lr-s$seed" -q > /dev/null
    "$bin" eval "runs/conv64-lr$lr-s$seed" > /dev/null
  done
done
"$bin" train --model conv64 --lr 2e-3 --scheduler cosine --seed 2 --out runs/conv64-lr2e-3-cosine-s2 -q > /dev/null
"$bin" eval runs/conv64-lr2e-3-cosine-s2 > /dev/null

echo "== cae32, vae"
"$bin" train --model cae32 --out runs/cae32 -q > /dev/null
"$bin" eval runs/cae32 > /dev/null
"$bin" train --model vae --epochs 3 --out runs/vae3 -q > /dev/null
"$bin" eval runs/vae3 > /dev/null
"$bin" train --model vae --out runs/vae -q > /dev/null
"$bin" eval runs/vae > /dev/null
"$bin" sample runs/vae --judge runs/conv64 > /dev/null
"$bin" sample runs/vae --judge runs/conv64 --judge-classifier logistic --out runs/vae/judged-logistic > /dev/null
if [ -n "${FULL:-}" ]; then
  "$bin" train --model vae --epochs 30 --out runs/vae30 -q > /dev/null
  "$bin" eval runs/vae30 > /dev/null
  "$bin" sample runs/vae30 --judge runs/conv64 --judge-classifier logistic > /dev/null
fi

echo "== the README's model of your own, with its report"
{ time "$bin" train --report -q --out runs/mine --output sigmoid \
  --encoder "conv(16,3,s1,p1) bn relu maxpool(2) conv(32,3,s1,p1) bn relu maxpool(2) flatten dropout(0.1) linear(16)" \
  --decoder "linear(1568) relu reshape(32,7,7) upsample(2) conv(16,3,s1,p1) relu upsample(2) conv(1,3,s1,p1)" > /dev/null 2>&4; } 4>&2 2> mine.seconds

echo "== the sweep"
"$bin" sweep --model mlp --latent-dims 2,4,8,16,32,64 --epochs 5 -q > /dev/null

python3 - <<'EOF'
import json, os

def load(path):
    with open(path) as f:
        return json.load(f)

CLASSIFIERS = ("logistic", "svm", "rbf", "mlp")

def mse(run):
    return load(f"runs/{run}/eval.json")["test"]["mse"]

r = {"cpu": open("cpu.txt").read().strip(), "version": open("version.txt").read().strip()}
r["main_job_seconds"] = round(float(open("main.seconds").read()), 1)
main = load("runs/conv64/eval.json")
r["conv64"] = {k: main["test"][k] for k in ("mse", "psnr_db", "ssim")}
r["classify"] = {}
for kind in CLASSIFIERS:
    rep = load(f"runs/conv64/classify-{kind}/classification_report.json")
    r["classify"][kind] = {"test_accuracy": rep["report"]["accuracy"],
                           "train_accuracy": rep["train_accuracy"], "fit_seconds": rep["fit_seconds"]}
r["denoise"] = load("runs/conv64/denoise.json")
seeds = {}
for lr in ("1e-3", "2e-3"):
    seeds[lr] = {}
    for seed in ("42", "1", "2", "3", "4"):
        seeds[lr][seed] = main["test"]["mse"] if (lr, seed) == ("1e-3", "42") else mse(f"conv64-lr{lr}-s{seed}")
r["conv64_seeds"] = seeds
r["conv64_lr2e-3_cosine_seed2"] = mse("conv64-lr2e-3-cosine-s2")
r["cae32_mse"] = mse("cae32")
for run in ("vae3", "vae", "vae30"):
    if os.path.exists(f"runs/{run}/eval.json"):
        e = load(f"runs/{run}/eval.json")
        r[run] = {"elbo": e["elbo"], "mse": e["test"]["mse"]}
e = load("runs/mine/eval.json")["test"]
d = load("runs/mine/denoise.json")["denoised"]
r["mine"] = {"seconds": round(float(open("mine.seconds").read()), 1),
             "mse": e["mse"], "psnr": e["psnr_db"], "ssim": e["ssim"],
             "denoised": {"psnr": d["psnr_db"], "ssim": d["ssim"]},
             "classify": {k: load(f"runs/mine/classify-{k}/classification_report.json")["report"]["accuracy"]
                          for k in CLASSIFIERS}}
speeds = [json.loads(l) for l in open("runs/mine/metrics.jsonl") if l.strip()]
r["mine"]["epoch_seconds"] = [round(m["seconds"], 1) for m in speeds if "seconds" in m]
judged = [("vae, mlp", "runs/vae/samples.json"), ("vae, logistic", "runs/vae/judged-logistic/samples.json")]
if os.path.exists("runs/vae30/samples.json"):
    judged.append(("vae30, logistic", "runs/vae30/samples.json"))
for name, path in judged:
    j = load(path)["judged"]
    r.setdefault("vae_judged", {})[name] = {k: j[k] for k in (
        "mean_confidence", "share_at_least_0_9", "real_mean_confidence",
        "real_share_at_least_0_9", "real_accuracy")}
with open("results.json", "w") as f:
    json.dump(r, f, indent=1)

def mean(xs):
    return sum(xs) / len(xs)

lines = [f"# Results of {r['version']}", "", r["cpu"], "",
         f"- main job: {r['main_job_seconds']} s; conv64 test MSE {r['conv64']['mse']:.6f}, "
         f"PSNR {r['conv64']['psnr_db']:.2f} dB, SSIM {r['conv64']['ssim']:.4f}",
         "- classifiers on its codes (test / train accuracy, fit s): " + "; ".join(
             f"{k} {v['test_accuracy']:.4f} / {v['train_accuracy']:.4f}, {v['fit_seconds']:.1f} s"
             for k, v in r["classify"].items())]
for lr, s in seeds.items():
    lines.append(f"- conv64 lr {lr}, seeds 42 1 2 3 4: "
                 + ", ".join(f"{v:.6f}" for v in s.values()) + f"; mean {mean(list(s.values())):.6f}")
lines.append(f"- conv64 lr 2e-3 cosine schedule, seed 2: {r['conv64_lr2e-3_cosine_seed2']:.6f}")
lines.append(f"- cae32 test MSE {r['cae32_mse']:.6f}")
for run in ("vae3", "vae", "vae30"):
    if run in r:
        lines.append(f"- {run}: ELBO {r[run]['elbo']:.2f} nats, test MSE {r[run]['mse']:.6f}")
m = r["mine"]
lines.append(f"- the model of your own: test MSE {m['mse']:.6f}, PSNR {m['psnr']:.2f} dB, SSIM "
             f"{m['ssim']:.4f}; denoised {m['denoised']['psnr']:.2f} dB / {m['denoised']['ssim']:.4f}; "
             "classifiers " + " / ".join(f"{v:.4f}" for v in m["classify"].values())
             + f"; {m['seconds']} s with the report, epochs {m['epoch_seconds']} s")
for name, j in r["vae_judged"].items():
    lines.append(f"- {name} judge of the samples: mean {j['mean_confidence']:.3f}, "
                 f"{100 * j['share_at_least_0_9']:.1f}% at ≥ 0.9; real test images "
                 f"{j['real_mean_confidence']:.3f}, {100 * j['real_share_at_least_0_9']:.1f}%, "
                 f"{100 * j['real_accuracy']:.1f}% correct")
lines += ["", open("runs/sweep-mlp/sweep.md").read()]
with open("results.md", "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
