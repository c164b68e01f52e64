"""Writes a large CIFAR-shaped extra set for `train --extra-data`.

usage: python3 extra_set.py OUT_FILE N [SEED] [PATTERN_SEED]

OUT_FILE gets N records in CIFAR-10's binary format (one label byte and
3072 pixel bytes, planar RGB 32×32): 3073·N bytes, e.g. 3.07 GB for
N = 1,000,000, the size of SCORE's 1M generated CIFAR-10 images. Images are
those of cifar_shaped.py: class k has a fixed random pattern p_k in [0,1]
(drawn first from a torch.Generator seeded PATTERN_SEED, default 0, so the
same patterns as `cifar_shaped.py DIR … PATTERN_SEED`), and an image of
class k is round(255·(0.5·p_k + 0.5·u)) with u uniform noise. Labels and
noise come from a second generator seeded SEED (default 1): the same
arguments give the same bytes. Records are made and written CHUNK at a
time, so the script's memory does not grow with N (under 0.9 GB resident,
0.62 GB of it importing torch); the file is written under
OUT_FILE.partial and renamed when complete. Only torch is
needed (numpy, when present, makes it faster).
"""
import os
import sys

import torch

# Same records as the CIFAR-shaped data set (this folder is on sys.path).
from cifar_shaped import records

CHUNK = 2_000


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, n = sys.argv[1], int(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    pattern_seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    patterns = torch.rand(10, 3 * 32 * 32, generator=torch.Generator().manual_seed(pattern_seed))
    gen = torch.Generator().manual_seed(seed)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".partial"
    with open(tmp, "wb") as f:
        for first in range(0, n, CHUNK):
            f.write(records(min(CHUNK, n - first), patterns, gen))
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
