"""Checks a `mnist-ae export` against PyTorch: builds the PyTorch module that `export` wrote as
code (next to the weights, same name with .py), loads the exported state dict into it
(strict), and compares its reconstructions of the reference test images with mnist-ae's.
Exit status 1 when the largest absolute difference exceeds 1e-5.

PyTorch runs on one thread here: with its default thread count a fresh process, started right
after another program had exited, gave a different difference (1.59e-05 against 3.58e-07,
same weights, inputs and reference, once in 40 runs): the CPU libraries may choose how many
threads, and so which order of additions, from the load they find.

    mnist-ae export RUN --torch /tmp/w.safetensors --reference /tmp/ref.safetensors
    python bench/check_torch_export.py /tmp/w.safetensors /tmp/ref.safetensors
"""
import importlib.util
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

torch.set_num_threads(1)
weights, reference = sys.argv[1], sys.argv[2]
code = os.path.splitext(weights)[0] + ".py"
spec = importlib.util.spec_from_file_location("exported_model", code)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
with safe_open(weights, "pt") as f:
    meta = f.metadata()
model = module.Autoencoder()
model.load_state_dict(load_file(weights), strict=True)
model.eval()
ref = load_file(reference)
with torch.no_grad():
    out = torch.cat([model.reconstruct(x) for x in ref["input"].split(1000)])
diff = (out - ref["output"]).abs().max().item()
name = os.path.basename(os.path.dirname(os.path.abspath(weights))) or meta["preset"]
print(f"{meta['preset']} ({os.path.basename(weights)}): {len(out)} test images, max abs difference {diff:.3g}")
sys.exit(0 if diff <= 1e-5 else 1)
