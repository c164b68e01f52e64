"""PyTorch side of `make bench`'s side-by-side training-step table.

The same models (lib/models: cnn-small, kuangliu's CIFAR ResNet-18), the same
step (SGD momentum 0.9, weight decay 5e-4, lr 0.01, cross-entropy on the
train-mode forward) and the same TASER variants as benches/train_step.rs:
penalty λ·R with R = mean((r − mean r)²), r the residual of the smooth margin
m = LSE_{j≠y} z_j − z_y, scores of N(0, I) (s̃ = −x), BatchNorm in eval mode
for the penalty, fd step h = 1e-2, Hutchinson K = 1.

METHOD standard trains on the clean batch; pgd-at (Madry et al.) on PGD's
adversarial batch: uniform start in the L-inf ball, ATTACK_STEPS sign steps of
STEP_SIZE on the summed cross-entropy, each projected onto the ball and [0,1],
the model in train mode throughout, as the suite's PGD-AT; the penalty is on
the clean batch, as the suite's.

Runs as a server so that the Rust bench can alternate its steps with these
one by one: a line `MODEL METHOD VARIANT BATCH C H W CLASSES THREADS DEVICE
PRECISION FORMAT EPS STEP_SIZE ATTACK_STEPS` on stdin builds that row and runs
its 2 warm-up steps (answer `ready`); each following line `step` times one
step of it (answer: its ms). VARIANT is alone, first-autograd, first-fd,
full-autograd or full-fd (the penalty's order and mode; see `residual`).
Inputs are uniform random pixels of the row's shape, seeded 0. DEVICE is cpu
or cuda:N (CUDA timings synchronise before the clock starts and stops),
PRECISION f32 or bf16 (torch.autocast with bfloat16 around the base loss's
forward and the training attack, the penalty in f32, as the suite's
--precision bf16), FORMAT contiguous or channels-last (model
and input in torch.channels_last, as the suite's --memory-format
channels-last). EPS, STEP_SIZE and ATTACK_STEPS are pgd-at's (ignored for
standard).
"""
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class CnnSmall(nn.Module):
    def __init__(self, c, h, w, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(c, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.fc1 = nn.Linear(128 * (h // 4) * (w // 4), 256)
        self.fc2 = nn.Linear(256, classes)

    def forward(self, x):
        h = F.relu(self.conv1(x))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)
        return self.fc2(F.relu(self.fc1(h.flatten(1))))


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, c, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(c, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, c_in = [], 64
        for c_out, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            for i in range(2):
                layers.append(Block(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(512, classes)

    def forward(self, x):
        h = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(h, 1).flatten(1))


class Normalised(nn.Module):
    """z = (x − 0.5)/0.25 per channel, as the bench's Rust models."""

    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body((x - 0.5) / 0.25)


def margin(z, y):
    z_y = z.gather(1, y[:, None])[:, 0]
    other = z.scatter(1, y[:, None], float("-inf"))
    return torch.logsumexp(other, 1) - z_y


def per_sample(t):
    return t.flatten(1).sum(1)


def eval_bn(model):
    """BatchNorm in eval mode for the penalty's forward (the suite's --stein-bn eval)."""
    class Ctx:
        def __enter__(self):
            model.eval()

        def __exit__(self, *a):
            model.train()
    return Ctx()


def rademacher(x):
    return torch.randint(0, 2, x.shape, dtype=x.dtype, device=x.device) * 2 - 1


def residual(model, x, y, s, variant, h=1e-2):
    order, mode = variant.split("-")[0], variant.split("-")[1]
    with eval_bn(model):
        if mode == "autograd":
            xg = x.detach().requires_grad_(True)
            m = margin(model(xg), y)
            (g,) = torch.autograd.grad(m.sum(), xg, create_graph=True)
            r = per_sample(g * s)
            if order == "full":
                v = rademacher(x)
                (hv,) = torch.autograd.grad((g * v).sum(), xg, create_graph=True)
                r = r + per_sample(hv * v)
            return r
        b = x.shape[0]
        sn = per_sample(s * s).sqrt()
        shat = s / sn.clamp_min(1e-30).view(-1, *([1] * (x.dim() - 1)))
        if order == "first":
            # The two-copy central difference in one batched forward.
            m = margin(model(torch.cat([x + h * shat, x - h * shat])), y.repeat(2)).view(2, b)
            return (m[0] - m[1]) * sn / (2 * h)
        v = rademacher(x)
        vn2 = per_sample(v * v)
        u = v / vn2.sqrt().view(-1, *([1] * (x.dim() - 1)))
        m = margin(model(torch.cat([x, x + h * shat, x - h * shat, x + h * u, x - h * u])),
                   y.repeat(5)).view(5, b)
        return (m[1] - m[2]) * sn / (2 * h) + (m[3] - 2 * m[0] + m[4]) / h ** 2 * vn2


def pgd_at_batch(model, x, y, eps, step_size, steps):
    """Madry et al.'s PGD: uniform start, sign steps, projection onto the L-inf ball and [0,1]."""
    xa = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        xa.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
        xa = torch.min(torch.max(xa.detach() + step_size * g.sign(), x - eps), x + eps).clamp(0, 1)
    return xa.detach()


def step(model, opt, x, y, variant, attack=None, bf16=False):
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        x_base = x if attack is None else pgd_at_batch(model, x, y, *attack)
        loss = F.cross_entropy(model(x_base), y)
    if variant != "alone":
        r = residual(model, x, y, -x, variant)
        loss = loss + ((r - r.mean()) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


class Row:
    """One row's model, optimiser and batch, built from seed 0 and warmed up."""

    def __init__(self, arch, method, variant, batch, c, h, w, classes, device, precision,
                 memory_format, attack):
        torch.manual_seed(0)
        self.device = torch.device(device)
        fmt = torch.channels_last if memory_format == "channels-last" else torch.contiguous_format
        body = CnnSmall(c, h, w, classes) if arch == "cnn-small" else ResNet18(c, classes)
        self.model = Normalised(body).to(self.device, memory_format=fmt).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9,
                                   weight_decay=5e-4)
        self.x = torch.rand(batch, c, h, w, device=self.device).contiguous(memory_format=fmt)
        self.y = torch.randint(0, classes, (batch,), device=self.device)
        self.variant, self.bf16 = variant, precision == "bf16"
        self.attack = attack if method == "pgd-at" else None
        for _ in range(2):
            self.run()

    def run(self):
        step(self.model, self.opt, self.x, self.y, self.variant, self.attack, self.bf16)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time_step(self):
        """ms of one step."""
        self.sync()
        t = time.perf_counter()
        self.run()
        self.sync()
        return (time.perf_counter() - t) * 1e3


def main():
    row = None
    for line in sys.stdin:
        if line.strip() == "step":
            if row is None:
                sys.exit("train_step.py: a `step` line before any row line; send the row first")
            print(f"{row.time_step():.3f}", flush=True)
            continue
        arch, method, variant, *rest = line.split()
        batch, c, h, w, classes, threads = map(int, rest[:6])
        device, precision, memory_format = rest[6:9]
        attack = (float(rest[9]), float(rest[10]), int(rest[11]))
        torch.set_num_threads(threads)
        row = None  # free the last row's model before building the next
        row = Row(arch, method, variant, batch, c, h, w, classes, device, precision,
                  memory_format, attack)
        print("ready", flush=True)


if __name__ == "__main__":
    main()
