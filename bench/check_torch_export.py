"""Checks a `mnist-ae export` against PyTorch: loads the exported state dict into the preset's
PyTorch module (bench/torch_models.py) and compares its reconstructions of the reference test
images with mnist-ae's. Exit status 1 when the largest absolute difference exceeds 1e-5.

    mnist-ae export RUN --torch /tmp/w.safetensors --reference /tmp/ref.safetensors
    python bench/check_torch_export.py /tmp/w.safetensors /tmp/ref.safetensors
"""
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from torch_models import PRESETS  # noqa: E402

weights, reference = sys.argv[1], sys.argv[2]
with safe_open(weights, "pt") as f:
    meta = f.metadata()
model = PRESETS[meta["preset"]](int(meta["latent_dim"]))
model.load_state_dict(load_file(weights), strict=True)
model.eval()
ref = load_file(reference)
with torch.no_grad():
    out = torch.cat([model.reconstruct(x) for x in ref["input"].split(1000)])
diff = (out - ref["output"]).abs().max().item()
print(f"{meta['preset']}: {len(out)} test images, max abs difference {diff:.3g}")
sys.exit(0 if diff <= 1e-5 else 1)
