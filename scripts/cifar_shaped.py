"""Writes a CIFAR-shaped data set in CIFAR-10's binary format for gpu-check.sh.

usage: python3 cifar_shaped.py OUT_DIR N_TRAIN N_TEST [SEED]

OUT_DIR gets data_batch_1.bin … data_batch_5.bin (N_TRAIN records spread
over the five files) and test_batch.bin (N_TEST records); each record is one
label byte and 3072 pixel bytes (planar RGB, 32×32), as in CIFAR-10, so
`train --dataset cifar10 --data-dir OUT_DIR` reads it. Images are learnable
but not natural: each class k has a fixed random 3×32×32 pattern p_k in
[0,1], and an image of class k is round(255·(0.5·p_k + 0.5·u)) with u
uniform noise, so one epoch lifts accuracy above chance and AutoAttack has
correctly classified points to attack. Everything is drawn from a seeded
torch.Generator (default seed 0): the same arguments give the same bytes.
Only torch is needed (numpy, when present, makes it faster).
"""
import os
import sys

import torch


def records(n, patterns, gen):
    labels = torch.randint(0, patterns.shape[0], (n,), generator=gen)
    noise = torch.rand(n, 3 * 32 * 32, generator=gen)
    pixels = (255 * (0.5 * patterns[labels] + 0.5 * noise)).round().to(torch.uint8)
    table = torch.cat([labels.to(torch.uint8)[:, None], pixels], 1)
    try:
        return table.numpy().tobytes()
    except (ImportError, RuntimeError):  # torch without numpy
        return bytes(table.flatten().tolist())


def write(path, data):
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main():
    out, n_train, n_test = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    gen = torch.Generator().manual_seed(seed)
    patterns = torch.rand(10, 3 * 32 * 32, generator=gen)
    os.makedirs(out, exist_ok=True)
    per_file = -(-n_train // 5)
    left = n_train
    for k in range(1, 6):
        n = max(1, min(per_file, left))
        write(os.path.join(out, f"data_batch_{k}.bin"), records(n, patterns, gen))
        left -= min(per_file, left)
    write(os.path.join(out, "test_batch.bin"), records(n_test, patterns, gen))


if __name__ == "__main__":
    main()
