"""Loads a checkpoint written by `train` in PyTorch and compares its logits
with the ones the Rust model computed.

usage: check_checkpoint.py MODEL.safetensors IO.safetensors TOLERANCE

MODEL.json beside the weights gives the architecture (mlp or cnn-small);
IO.safetensors holds `inputs` and the Rust `logits`. Prints the largest
absolute difference; exits 1 if it exceeds TOLERANCE.
"""
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

ACT = {"relu": F.relu, "silu": F.silu, "tanh": torch.tanh, "softplus": F.softplus}


def forward(spec, w, x):
    act = ACT[spec["activation"]]
    shape = [1, -1, 1, 1] if x.dim() == 4 else [1, -1]
    x = (x - w["norm.mean"].view(shape)) / w["norm.std"].view(shape)
    if spec["arch"] == "mlp":
        h = x.flatten(1)
        n = len(spec["mlp_hidden"]) + 1
        for i in range(n):
            h = F.linear(h, w[f"layers.{i}.weight"], w[f"layers.{i}.bias"])
            if i < n - 1:
                h = act(h)
        return h
    if spec["arch"] == "cnn-small":
        conv = lambda h, n: F.conv2d(h, w[f"{n}.weight"], w[f"{n}.bias"], padding=1)
        h = act(conv(x, "conv1"))
        h = F.max_pool2d(act(conv(h, "conv2")), 2)
        h = F.max_pool2d(act(conv(h, "conv3")), 2)
        h = act(F.linear(h.flatten(1), w["fc1.weight"], w["fc1.bias"]))
        return F.linear(h, w["fc2.weight"], w["fc2.bias"])
    raise SystemExit(f"no PyTorch reference for {spec['arch']} in this script")


def main():
    model_path, io_path, tol = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    spec = json.loads(model_path.with_suffix(".json").read_text())["model"]
    weights = load_file(str(model_path))
    io = load_file(str(io_path))
    with torch.no_grad():
        logits = forward(spec, weights, io["inputs"])
    diff = (logits - io["logits"]).abs().max().item()
    print(f"{spec['arch']}: {len(weights)} tensors, max |logit diff| = {diff:.3e}")
    sys.exit(0 if diff <= tol else 1)


if __name__ == "__main__":
    main()
