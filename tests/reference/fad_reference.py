"""Reference Fréchet and kernel audio distances on fixed embedding sets, for tests/fad.rs.

Writes tests/fixtures/fad/reference.json: a few embedding sets (reference rows, generated rows,
the generated rows' split into files) and what the reference implementations give on them:

- FD as fadtk / pytorch-fid compute it: np.cov (n - 1), scipy.linalg.sqrtm of S1 S2, real part,
  an eps offset only when sqrtm is not finite;
- KAD as kadtk's calc_kernel_audio_distance (unbiased MMD^2, Gaussian kernel exp(-d^2 / (2 h^2)),
  times SCALE_FACTOR = 100), in float64 and without its 1e-8 in the denominator;
  the bandwidth h is torch.median(torch.pdist(reference)) (torch's lower median), or given;
- per generated file: FD with every file minus FD refitted without it, and the KAD of the
  reference against that file alone (kadtk --indiv) with the run's bandwidth.

Usage: "$(tests/reference/setup.sh)" tests/reference/fad_reference.py
"""

import json
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

SCALE_FACTOR = 100
OUT = Path(__file__).resolve().parents[1] / "fixtures" / "fad" / "reference.json"


def frechet(x, y, eps=1e-6):
    mu1, mu2 = x.mean(axis=0), y.mean(axis=0)
    s1, s2 = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def median_pairwise_distance(x):
    return float(torch.median(torch.pdist(torch.tensor(x, dtype=torch.float64))).item())


def mmd2(x, y, h):
    gamma = 1 / (2 * h**2)
    k = lambda a, b: np.exp(-gamma * (np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None, :] - 2 * a @ b.T))
    m, n = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    kxx_mean = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    kyy_mean = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(kxx_mean + kyy_mean - 2 * k(x, y).mean())


def case(name, x, y, files, bandwidth=None):
    x, y = np.round(x, 4), np.round(y, 4)
    h = bandwidth if bandwidth is not None else median_pairwise_distance(x)
    fd = frechet(x, y)
    ranges, start = [], 0
    for n in files:
        ranges.append((start, start + n))
        start += n
    assert start == len(y)
    loo, alone = [], []
    for a, b in ranges:
        rest = np.concatenate([y[:a], y[b:]])
        loo.append(fd - frechet(x, rest) if len(rest) >= 2 else None)
        alone.append(mmd2(x, y[a:b], h) * SCALE_FACTOR if b - a >= 2 else None)
    return {
        "name": name,
        "reference": x.tolist(),
        "generated": y.tolist(),
        "files": files,
        "bandwidth_given": bandwidth,
        "bandwidth": h,
        "fd": fd,
        "kad": mmd2(x, y, h) * SCALE_FACTOR,
        "fd_leave_one_out": loo,
        "kad_alone": alone,
    }


def main():
    rng = np.random.default_rng(19)
    cases = []
    # Isotropic against shifted and stretched.
    x = rng.normal(size=(120, 6))
    y = rng.normal(size=(90, 6)) * 1.3 + 0.4
    cases.append(case("shifted-stretched-6d", x, y, [30, 30, 29, 1]))
    # Correlated covariances of different shapes, larger scale (like codec latents).
    a = rng.normal(size=(8, 8))
    b = rng.normal(size=(8, 8))
    x = rng.normal(size=(150, 8)) @ a * 3.0
    y = rng.normal(size=(100, 8)) @ b * 2.0 + 1.0
    cases.append(case("correlated-8d", x, y, [50, 25, 25]))
    # Same distribution, with a bandwidth given.
    x = rng.normal(size=(80, 4))
    y = rng.normal(size=(80, 4))
    cases.append(case("same-distribution-4d", x, y, [40, 40], bandwidth=1.5))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"source": "tests/reference/fad_reference.py", "cases": cases}) + "\n")
    for c in cases:
        print(f"{c['name']}: fd {c['fd']:.6f}  kad {c['kad']:.6f}  h {c['bandwidth']:.6f}")


if __name__ == "__main__":
    main()
