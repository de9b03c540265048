#!/usr/bin/python3
# Ternary initialisation: qat's w2 (MSE-best scale, threshold s/2) against TWN's
# 0.7 * mean|w| threshold, per output channel of a float checkpoint's dense
# layers (docs/QUANT.md section 14). Usage: scripts/twn_compare.py float.h5
import h5py, numpy as np
import sys
f = h5py.File(sys.argv[1], 'r')
print("| layer | rule | zeros | relative MSE |")
print("|---|---|---|---|")
for name in ['classifier.0', 'classifier.2', 'classifier.4']:
    W = f['model/params/%s.weight' % name][...].astype(np.float32)
    res = {}
    for rule in ['qat', 'twn']:
        err = 0.0; zeros = 0
        for w in W:
            a = np.abs(w)
            if rule == 'qat':
                best = None
                for k in range(30, 101):
                    s = np.float32(k / 100.0) * a.max()
                    q = np.clip(np.round(w / s), -1, 1) * s
                    e = float(((q - w) ** 2).sum())
                    if best is None or e < best[0]: best = (e, q)
                e, q = best
            else:
                d = 0.7 * a.mean(); m = a > d
                alpha = a[m].mean()
                q = np.sign(w) * alpha * m
                e = float(((q - w) ** 2).sum())
            err += e; zeros += int((q == 0).sum())
        print("| %s | %s | %.1f%% | %.4f |" % (name, 'qat: MSE-best s, threshold s/2' if rule == 'qat' else 'TWN: 0.7 mean(abs w)', 100.0 * zeros / W.size, err / float((W ** 2).sum())))
