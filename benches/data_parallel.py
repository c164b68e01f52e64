"""`make bench`, data-parallel rows: PyTorch DDP's side of benches/data_parallel.sh.

Trains cnn-small (benches/train_step.py's, the suite's architecture) with PGD-AT
(uniform start, ATTACK_STEPS sign steps of EPS/4 in the L-inf ball of EPS)
and SGD on random digits-shaped data (1x8x8, 10 classes) at one global
batch, split over RANKS processes (torch.distributed, gloo on the CPU, one
thread each; DDP averages the gradients). Prints one line: samples per
second of STEPS timed steps after 2 warm-up steps.

Usage: data_parallel.py RANKS GLOBAL_BATCH STEPS ATTACK_STEPS EPS
"""
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import CnnSmall, Normalised  # noqa: E402 (the side-by-side bench's models)


def pgd(model, x, y, eps, steps):
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + eps / 4 * g.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def rank_main(rank, ranks, batch, steps, attack_steps, eps, port, out):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=ranks)
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(Normalised(CnnSmall(1, 8, 8, 10)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    share = batch // ranks + (rank < batch % ranks)
    x, y = torch.rand(share, 1, 8, 8), torch.randint(0, 10, (share,))

    def step():
        x_adv = pgd(model.module, x, y, eps, attack_steps)
        loss = F.cross_entropy(model(x_adv), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    dist.barrier()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    dist.barrier()
    if rank == 0:
        out.put(steps * batch / (time.perf_counter() - t))
    dist.destroy_process_group()


def main():
    ranks, batch, steps, attack_steps = map(int, sys.argv[1:5])
    eps = float(sys.argv[5])
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    port = 29500 + os.getpid() % 1000
    mp.start_processes(rank_main, args=(ranks, batch, steps, attack_steps, eps, port, out),
                       nprocs=ranks, join=True, start_method="spawn")
    print(f"{out.get():.2f}")


if __name__ == "__main__":
    main()
