"""Checks a `mnist-ae export` against PyTorch: builds the PyTorch module that `export` wrote as
code (next to the weights, same name with .py), loads the exported state dict into it
(strict), and compares its reconstructions of the reference test images with mnist-ae's.
Exit status 1 when the largest absolute difference exceeds 1e-5.

PyTorch runs on one thread here. With its default thread count (two on the CI machine), one
fresh process in 40, each started right after mnist-ae's export, gave a difference of
1.59e-05 instead of 3.58e-07 for the same weights, inputs and reference: PyTorch's own result
changed from process to process. Repeating the forward pass 300 times within one process, or
with the input at 64 different addresses, never changed it. On one thread: 0 in 80.

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
