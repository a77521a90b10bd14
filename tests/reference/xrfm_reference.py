#!/usr/bin/env python3
"""Reference numbers for baton's Rust RFM (src/rfm/), computed with xRFM 0.4.5.

Runs xrfm's single-leaf `RFM` (kernel `l2_high_dim`, least-squares solver) on small fixed data
sets and writes, per case, one safetensors file under tests/fixtures/:

  inputs   x_train f32 [n, d], y_train f32 [n, c], x_val f32 [m, d], y_val f32 [m, c]
  results  m.{i} f32 [d, d]   M after the i-th AGOP update (xrfm `return_Ms=True`)
           agop f32 [d, d]    AGOP of the restored best model (`get_agop_best_model=True`)
           eigvecs f32 [k, d] its top-k eigenvectors (rows, numpy eigh, descending), sign fixed so
                              that Pearson(labels, x_train @ v) > 0 for binary / regression
           pred f32 [m, c]    best model's raw predictions on x_val
           proba f32 [m, c']  its predict_proba (classification only)
  metadata hyper-parameters, val score of every round, best_iter, early_stopped, rounds.

The inputs are stored as f32 and both sides compute in f64 from exactly those values
(xrfm keeps the dtype it is given), so the comparison is free of input rounding.

Usage: "$(tests/reference/setup.sh)" tests/reference/xrfm_reference.py   (from the repository root)
"""
import json
import os

import numpy as np
import torch
from safetensors.numpy import save_file
from xrfm.rfm_src import RFM
from xrfm.rfm_src.class_conversion import ClassificationConverter

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures")
TOP_K = 4


def orthonormal(rng, d, k):
    q, _ = np.linalg.qr(rng.standard_normal((d, k)))
    return q


def binary_data(rng, n, m, d):
    """Label = 1 when a quadratic function of a planted 2-d subspace is above its median."""
    u = orthonormal(rng, d, 2)
    x = rng.standard_normal((n + m, d)).astype(np.float32)
    s = x.astype(np.float64) @ u
    score = s[:, 0] + 0.8 * s[:, 1] ** 2
    y = (score > np.median(score)).astype(np.float32)[:, None]
    return x[:n], y[:n], x[n:], y[n:]


def multiclass_data(rng, per_class_train, per_class_val, d, classes=12):
    """Twelve classes whose means sit on a circle (plus an offset) in a planted 3-d subspace."""
    u = orthonormal(rng, d, 3)
    def draw(per):
        ids = np.repeat(np.arange(classes), per)
        ang = 2 * np.pi * ids / classes
        mu = np.stack([np.cos(ang), np.sin(ang), 0.5 * (ids % 3 - 1)], axis=1) @ u.T
        x = (rng.standard_normal((len(ids), d)) + 2.0 * mu).astype(np.float32)
        y = np.eye(classes, dtype=np.float32)[ids]
        return x, y
    xt, yt = draw(per_class_train)
    xv, yv = draw(per_class_val)
    return xt, yt, xv, yv


def regression_data(rng, n, m, d):
    """Smooth function of a planted 2-d subspace plus noise, z-scored with the train statistics."""
    u = orthonormal(rng, d, 2)
    x = rng.standard_normal((n + m, d)).astype(np.float32)
    s = x.astype(np.float64) @ u
    y = np.tanh(s[:, 0]) + 0.5 * s[:, 1] + 0.1 * rng.standard_normal(n + m)
    mean, std = y[:n].mean(), y[:n].std()
    y = ((y - mean) / std).astype(np.float32)[:, None]
    return x[:n], y[:n], x[n:], y[n:]


def run_case(name, data, task, metric, reg, bandwidth, exponent, center_grads, iters):
    xt, yt, xv, yv = data
    to64 = lambda a: torch.from_numpy(a.astype(np.float64))
    converter = None
    if task == "binary":
        converter = ClassificationConverter(mode="zero_one", n_classes=2)
    model = RFM(kernel="l2_high_dim", iters=iters, bandwidth=bandwidth, exponent=exponent,
                device="cpu", tuning_metric=metric, verbose=False, class_converter=converter)

    # Record every round's validation score and whether the loop broke early.
    scores, stopped = [], []
    inner_metrics = model._compute_validation_metrics
    def recording_metrics(*a, **kw):
        out = inner_metrics(*a, **kw)
        scores.append(float(out[metric]))
        return out
    model._compute_validation_metrics = recording_metrics
    inner_stop = model._should_early_stop
    def recording_stop(*a, **kw):
        out = inner_stop(*a, **kw)
        stopped.append(bool(out))
        return out
    model._should_early_stop = recording_stop

    ms = model.fit((to64(xt), to64(yt)), (to64(xv), to64(yv)), iters=iters, method="lstsq",
                   reg=reg, center_grads=center_grads, return_Ms=True,
                   get_agop_best_model=True, early_stop_multiplier=1.1)
    agop = model.agop_best_model.numpy()
    pred = model.predict(to64(xv)).numpy()

    evals, evecs = np.linalg.eigh(agop)
    top = evecs[:, ::-1][:, :TOP_K].T.copy()
    if task in ("binary", "regression"):
        proj = xt.astype(np.float64) @ top.T
        for k in range(TOP_K):
            if np.corrcoef(yt[:, 0], proj[:, k])[0, 1] < 0:
                top[k] = -top[k]

    tensors = {
        "x_train": xt, "y_train": yt, "x_val": xv, "y_val": yv,
        "agop": agop.astype(np.float32), "eigvecs": top.astype(np.float32),
        "pred": pred.astype(np.float32),
    }
    if task != "regression":
        tensors["proba"] = model.predict_proba(to64(xv)).numpy().astype(np.float32)
    for i, m in enumerate(ms):
        tensors[f"m.{i}"] = m.numpy().astype(np.float32)
    meta = {
        "task": task, "metric": metric, "reg": repr(reg), "bandwidth": repr(bandwidth),
        "exponent": repr(exponent), "center_grads": json.dumps(center_grads),
        "iters": str(iters), "val_scores": json.dumps(scores), "best_iter": str(model.best_iter),
        "early_stopped": json.dumps(any(stopped)), "rounds": str(len(ms)),
        "eigvals": json.dumps([float(v) for v in evals[::-1][:TOP_K]]),
    }
    path = os.path.join(OUT, f"rfm-{name}.safetensors")
    save_file(tensors, path, metadata=meta)
    print(f"{name}: rounds={len(ms)} best_iter={model.best_iter} early_stopped={any(stopped)} "
          f"scores={[round(s, 4) for s in scores]} -> {os.path.getsize(path)} bytes")


def main():
    torch.set_num_threads(2)
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20251125)
    binary = binary_data(rng, 160, 60, 64)
    run_case("binary", binary, "binary", "auc", reg=1e-3, bandwidth=10.0, exponent=1.0,
             center_grads=False, iters=5)
    # A sharp, barely regularised kernel on the same data overfits: xrfm stops early.
    run_case("binary-es", binary, "binary", "auc", reg=1e-5, bandwidth=1.5, exponent=1.4,
             center_grads=True, iters=8)
    run_case("multiclass", multiclass_data(rng, 14, 5, 64), "multiclass", "accuracy", reg=1e-2,
             bandwidth=8.0, exponent=1.2, center_grads=True, iters=4)
    run_case("regression", regression_data(rng, 160, 60, 64), "regression", "mse", reg=1e-2,
             bandwidth=6.0, exponent=0.8, center_grads=False, iters=5)


if __name__ == "__main__":
    main()
