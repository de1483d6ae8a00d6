#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Write a persistent (P) COW with N exceptions into a disk image, in the
on-disk format of dm-snap-persistent.c, for the activation benchmark.

  mkcow.py IMAGE N seq|rand [CHUNK_SECTORS=8] [SEED=1]

Chunk 0 is the header (magic "SnAp", valid 1, version 1, chunk size); the
metadata area a sits at chunk 1 + a * (epa + 1) and is followed by the epa
data chunks its entries point to (epa = exceptions per area = chunk bytes /
16). Entry i maps origin chunk i (seq) or a shuffled chunk in [0, N)
(rand). Data chunks are left sparse (zeros): activation reads only the
metadata. The area after the last entry is zeroed (the terminator).
"""
import random
import struct
import sys


def main():
    path, n, layout = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    chunk = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    seed = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    cbytes = chunk * 512
    epa = cbytes // 16
    olds = list(range(n))
    if layout == "rand":
        random.Random(seed).shuffle(olds)
    areas = (n + epa - 1) // epa
    need = (1 + (areas + 1) * (epa + 1)) * cbytes
    with open(path, "r+b") as f:
        f.seek(0, 2)
        if f.tell() < need:
            sys.exit(f"mkcow: {path} is {f.tell()} bytes, needs {need}")
        f.seek(0)
        f.write(struct.pack("<IIII", 0x70416E53, 1, 1, chunk).ljust(cbytes, b"\0"))
        for a in range(areas + 1):
            loc = 1 + a * (epa + 1)
            ents = olds[a * epa:(a + 1) * epa]
            buf = b"".join(struct.pack("<QQ", o, loc + 1 + k) for k, o in enumerate(ents))
            f.seek(loc * cbytes)
            f.write(buf.ljust(cbytes, b"\0"))


if __name__ == "__main__":
    main()
