#!/usr/bin/env python3
"""Side-by-side benchmark: baton's Rust RFM (`baton train`) vs xRFM 0.4.5 (PyTorch, CPU).

One probe at MusicRFM's sizes (n = 1,158 train / 248 val, d = 1,024 and 2,048, 30 iterations,
fixed hyper-parameters), then a random search (20 draws) over several layers. Each side runs as
its own child process; wall time, CPU time (user + system) and peak RSS come from the kernel
(os.wait4), and the xrfm child also reports its in-process fit time (without the torch import). Both use the same data, written
by this script (features/1 files for baton, .npy for xrfm).

Usage (from the repository root, after `cargo build --release`):
  "$(tests/reference/setup.sh)" tests/reference/bench_rfm.py [--baton target/release/baton]
      [--dims 1024,2048] [--search-layers 2] [--draws 20] [--iters 30] [--search-iters 10]
      [--xrfm-dtypes float32,float64] [--search-dtypes float64] [--baton-precisions f32,f64]
      [--rounds R]

The issue's full figure (a 20-draw search over 24 layers, 30 iterations; about two hours here):
  ... --search-layers 24 --draws 20 --search-iters 30
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

N_TRAIN, N_VAL = 1158, 248
HYPER = dict(reg=1e-3, bandwidth=10.0, exponent=1.0, center_grads=False)


def make_data(rng, d, layers):
    """Binary labels from a planted direction plus a quadratic term, per layer a fresh mix."""
    n = N_TRAIN + N_VAL
    y = np.zeros(n, dtype=np.int64)
    y[: n // 2] = 1
    rng.shuffle(y)
    xs = []
    for _ in range(layers):
        u = rng.standard_normal((d, 2))
        u /= np.linalg.norm(u, axis=0)
        x = rng.standard_normal((n, d))
        x += np.outer(2.0 * y - 1.0, u[:, 0]) * 0.8 + np.outer(rng.standard_normal(n) ** 2, u[:, 1]) * 0.3
        xs.append(x.astype(np.float32))
    return xs, y


def write_features(path, xs, y):
    from safetensors.numpy import save_file
    tensors = {f"layer.{l}": np.ascontiguousarray(x) for l, x in enumerate(xs)}
    tensors["labels"] = y
    meta = {"baton.format": "features/1", "classes": json.dumps(["neg", "pos"]), "model": "bench",
            "pooling": "mean", "concept": "bench"}
    save_file(tensors, path, metadata=meta)


def run_child(cmd):
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out}\n{err}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0, out


def worker(args):
    """Child process: xrfm fits on the .npy data; prints one JSON line."""
    import torch
    from xrfm.rfm_src import RFM
    from xrfm.rfm_src.class_conversion import ClassificationConverter
    torch.set_num_threads(2)
    dtype = getattr(torch, args.dtype)
    y = np.load(os.path.join(args.data, "y.npy"))
    layers = sorted(int(f[6:-4]) for f in os.listdir(args.data) if f.startswith("layer."))
    yt = torch.from_numpy(y[:N_TRAIN, None]).to(dtype)
    yv = torch.from_numpy(y[N_TRAIN:, None]).to(dtype)
    if args.hypers:
        with open(args.hypers) as f:
            hypers = json.load(f)
    else:
        hypers = [HYPER]
    start = time.perf_counter()
    scores, rounds = [], 0
    for l in layers:
        x = torch.from_numpy(np.load(os.path.join(args.data, f"layer.{l}.npy"))).to(dtype)
        xt, xv = x[:N_TRAIN], x[N_TRAIN:]
        best, best_model = -1.0, None
        for h in hypers:
            model = RFM(kernel="l2_high_dim", iters=args.iters, bandwidth=h["bandwidth"],
                        exponent=h["exponent"], device="cpu", tuning_metric="auc", verbose=False,
                        class_converter=ClassificationConverter(mode="zero_one", n_classes=2))
            count = []
            inner = model._compute_validation_metrics
            def counting(*a, _inner=inner, _count=count, **kw):
                out = _inner(*a, **kw)
                _count.append(out["auc"])
                return out
            model._compute_validation_metrics = counting
            model.fit((xt, yt), (xv, yv), iters=args.iters, method="lstsq", reg=h["reg"],
                      center_grads=h["center_grads"], early_stop_multiplier=1.1)
            rounds += len(count)
            if max(count) > best:
                best, best_model, best_h = max(count), model, h
        # Concept matrix of the winner and its top eigenvector, as baton does.
        agop = best_model.fit_M(xt, best_model.n_classes, inplace=False)
        torch.linalg.eigh(agop)
        scores.append(best)
    fit_s = time.perf_counter() - start
    print(json.dumps({"fit_s": fit_s, "scores": scores, "rounds": rounds}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--data")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--hypers", help="worker: JSON list of settings to search among")
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--baton", default="target/release/baton")
    ap.add_argument("--dims", default="1024,2048")
    ap.add_argument("--search-layers", type=int, default=2)
    ap.add_argument("--search-dim", type=int, default=1024)
    ap.add_argument("--search-iters", type=int, default=10)
    ap.add_argument("--xrfm-dtypes", default="float32,float64")
    ap.add_argument("--baton-precisions", default="f32,f64", help="baton train --precision values")
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs of every implementation, interleaved; wall time is their median")
    ap.add_argument("--search-dtypes", default="float64",
                    help="xrfm dtypes for the search (float64 gives results equal to baton's)")
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    rng = np.random.default_rng(7)
    me = [sys.executable, os.path.abspath(__file__), "--worker"]
    rows = []

    def compare(label, xs, y, iters, baton_extra, worker_extra, dtypes):
        with tempfile.TemporaryDirectory() as tmp:
            for l, x in enumerate(xs):
                np.save(os.path.join(tmp, f"layer.{l}.npy"), x)
            np.save(os.path.join(tmp, "y.npy"), y)
            train = os.path.join(tmp, "train.safetensors")
            val = os.path.join(tmp, "val.safetensors")
            write_features(train, [x[:N_TRAIN] for x in xs], y[:N_TRAIN])
            write_features(val, [x[N_TRAIN:] for x in xs], y[N_TRAIN:])
            out = os.path.join(tmp, "bundle.safetensors")

            def baton(precision):
                wall, cpu, rss, text = run_child([args.baton, "train", train, "--val", val, "--out", out,
                                                  "--positive", "pos", "--iters", str(iters),
                                                  "--precision", precision] + baton_extra)
                os.unlink(out)
                table = [line.split() for line in text.splitlines() if line.strip() and line.split()[0].isdigit()]
                return (wall, cpu, None, rss, [float(t[1]) for t in table],
                        f"rounds {sum(int(t[3]) for t in table)}")

            def xrfm(dt):
                wall, cpu, rss, text = run_child(me + ["--data", tmp, "--dtype", dt, "--iters", str(iters)]
                                                 + worker_extra)
                res = json.loads(text.strip().splitlines()[-1])
                return wall, cpu, res["fit_s"], rss, res["scores"], f"rounds {res['rounds']}"

            impls = [(f"baton (Rust, {p})", lambda p=p: baton(p)) for p in precisions]
            impls += [(f"xrfm 0.4.5 (torch, {dt})", lambda dt=dt: xrfm(dt)) for dt in dtypes]
            runs = {name: [] for name, _ in impls}
            # Rounds interleaved, so a change in the shared host's load reaches every side.
            for _ in range(args.rounds):
                for name, run in impls:
                    runs[name].append(run())
            for name, _ in impls:
                rs = runs[name]
                med = lambda k: float(np.median([r[k] for r in rs]))
                walls = [r[0] for r in rs]
                fit_s = med(2) if rs[0][2] is not None else None
                rows.append((label, name, med(0), min(walls), max(walls), med(1), fit_s,
                             max(r[3] for r in rs), rs[0][4], rs[0][5]))
            print_rows(rows[-len(impls):])

    precisions = [p for p in args.baton_precisions.split(",") if p]
    dtypes = [d for d in args.xrfm_dtypes.split(",") if d]
    for d in [int(v) for v in args.dims.split(",") if v]:
        xs, y = make_data(rng, d, 1)
        h = HYPER
        compare(f"1 probe d={d}", xs, y, args.iters,
                ["--reg", str(h["reg"]), "--bandwidth", str(h["bandwidth"]), "--exponent", str(h["exponent"])],
                [], dtypes)
    if args.search_layers > 0:
        xs, y = make_data(rng, args.search_dim, args.search_layers)
        # Both sides search among the same random draws (the paper's ranges).
        hypers = [dict(reg=float(np.exp(rng.uniform(np.log(1e-5), np.log(10)))),
                       bandwidth=float(np.exp(rng.uniform(0, np.log(100)))),
                       exponent=float(rng.uniform(0.7, 1.4)), center_grads=bool(rng.integers(2)))
                  for _ in range(args.draws)]
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(hypers, f)
        compare(f"search {args.draws}x{args.search_layers} layers d={args.search_dim}", xs, y,
                args.search_iters, ["--search-list", f.name], ["--hypers", f.name],
                [d for d in args.search_dtypes.split(",") if d])
        os.unlink(f.name)
    print("\nsummary")
    print_rows(rows)


def print_rows(rows):
    print(f"{'case':<27} {'implementation':<26} {'wall s (min-max)':>18} {'cpu s':>6} {'fit s':>6} "
          f"{'peak MiB':>8}  val AUC")
    for label, impl, wall, lo, hi, cpu, fit_s, rss, scores, note in rows:
        fit = f"{fit_s:6.2f}" if fit_s is not None else f"{'-':>6}"
        sc = ",".join(f"{s:.4f}" for s in scores)
        spread = f"{wall:6.2f} ({lo:.2f}-{hi:.2f})"
        print(f"{label:<27} {impl:<26} {spread:>18} {cpu:6.1f} {fit} {rss:8.0f}  {sc} {note}", flush=True)


if __name__ == "__main__":
    main()
