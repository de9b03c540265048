#!/usr/bin/env python3
"""Writes the first N images and labels of Fashion-MNIST as gzip IDX files.

    python3 tests/data/make_subset.py [SRC_DIR] [OUT_DIR] [N_TRAIN] [N_TEST]

defaults: /usr/share/datasets/fashion-mnist, tests/data/fashion-mnist-small,
2000, 1000. Only the standard library; the gzip header carries no name and
mtime 0, so the output is byte-identical from run to run.
"""
import gzip
import os
import struct
import sys


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    ndim = magic & 0xFF
    dims = list(struct.unpack(">%dI" % ndim, data[4:4 + 4 * ndim]))
    return magic, dims, data[4 + 4 * ndim:]


def write_subset(src, dst, n):
    magic, dims, payload = read_idx(src)
    per = 1
    for d in dims[1:]:
        per *= d
    assert len(payload) == dims[0] * per and n <= dims[0]
    dims[0] = n
    body = struct.pack(">I", magic) + struct.pack(">%dI" % len(dims), *dims) + payload[:n * per]
    with open(dst, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as g:
            g.write(body)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__),
                                                               "fashion-mnist-small")
    n_train = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    n_test = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    os.makedirs(out, exist_ok=True)
    for pre, n in (("train", n_train), ("t10k", n_test)):
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            name = "%s-%s.gz" % (pre, kind)
            write_subset(os.path.join(src, name), os.path.join(out, name), n)


if __name__ == "__main__":
    main()
