"""Traces tiny ε-prediction models for the torchscript score source tests.

usage: make_eps_models.py OUTDIR INPUTS.safetensors T

Writes to OUTDIR:
  eps.pt            a good model (x_t [B,1,8,8], t [B]) -> eps of the same shape
  eps_one_arg.pt    wrong signature: forward(x) only
  eps_shape.pt      wrong output shape
  eps_nan.pt        returns NaN
  expected.safetensors  the score Python computes for INPUTS (x in [0,1]):
                    s(x) = 2 * ( -eps(2x - 1, t) / sigma_t ),
                    sigma_t = sqrt(1 - alphas_cumprod[t]) of the linear-beta DDPM schedule.
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


class Eps(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.out = torch.nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x, t):
        scale = 1.0 + t.float().view(-1, 1, 1, 1) / 1000.0
        return self.out(torch.tanh(self.conv(x)) * scale)


class OneArg(torch.nn.Module):
    def forward(self, x):
        return x


class WrongShape(torch.nn.Module):
    def forward(self, x, t):
        return x.flatten(1)


class Nan(torch.nn.Module):
    def forward(self, x, t):
        return x * float("nan")


def main():
    out, inputs_path, t = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    x = load_file(inputs_path)["inputs"]
    example = (torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.int64))
    model = Eps().eval()
    torch.jit.trace(model, example).save(str(out / "eps.pt"))
    torch.jit.trace(OneArg(), (example[0],)).save(str(out / "eps_one_arg.pt"))
    torch.jit.trace(WrongShape(), example).save(str(out / "eps_shape.pt"))
    torch.jit.trace(Nan(), example).save(str(out / "eps_nan.pt"))
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    sigma_t = (1 - torch.cumprod(1 - betas, 0)[t]).sqrt().item()
    with torch.no_grad():
        tt = torch.full((x.shape[0],), t, dtype=torch.int64)
        score = 2.0 * (-model(2 * x - 1, tt) / sigma_t)
    save_file({"score": score.contiguous(), "sigma_t": torch.tensor([sigma_t], dtype=torch.float64)}, str(out / "expected.safetensors"))
    print(f"traced 4 models; sigma_{t} = {sigma_t:.6f}")


if __name__ == "__main__":
    main()
