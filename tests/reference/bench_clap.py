#!/usr/bin/env python3
"""CLAP audio embedding speed, transformers against baton, on one random checkpoint shaped like
laion/larger_clap_music (HTSAT with patch width 128, depths [2, 2, 12, 2], hidden 1024; RoBERTa-base
text encoder; projection 512), on this machine's CPU.

    "$(tests/reference/setup.sh)" tests/reference/bench_clap.py [SECONDS] [THREADS]

Writes the checkpoint to target/clap-bench/ (about 0.8 GB), embeds SECONDS (default 30) of the same
48 kHz audio with transformers (ClapFeatureExtractor + ClapModel.get_audio_features per 10 s
window, torch and candle at THREADS threads, default all) and with baton (cargo's bench_clap example, which
prints its own figure), and prints seconds of audio per second for each. BENCH_SKIP_BATON=1 runs
the transformers side alone; BENCH_FEATURES=avx512 builds baton with that cargo feature.
"""

import os
import subprocess
import sys
import time

import numpy as np
import torch
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clap_reference import build_tokenizer  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
FOLDER = os.path.join(ROOT, "target", "clap-bench")
RATE = 48_000


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    if len(sys.argv) > 2:
        torch.set_num_threads(int(sys.argv[2]))
    torch.manual_seed(0)
    # laion/larger_clap_music's config.json: only these differ from ClapConfig's defaults.
    config = ClapConfig(
        audio_config=dict(depths=[2, 2, 12, 2], hidden_size=1024, patch_embeds_hidden_size=128),
        projection_dim=512,
    )
    if not os.path.exists(os.path.join(FOLDER, "model.safetensors")):
        os.makedirs(FOLDER, exist_ok=True)
        model = ClapModel(config).eval()
        model.save_pretrained(FOLDER)
        build_tokenizer().save(os.path.join(FOLDER, "tokenizer.json"))
        ClapFeatureExtractor(truncation="rand_trunc").save_pretrained(FOLDER)
    model = ClapModel.from_pretrained(FOLDER).eval()
    fe = ClapFeatureExtractor.from_pretrained(FOLDER)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    audio = (0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * np.sin(2 * np.pi * 1234.5 * t)).astype(np.float32)
    size = fe.nb_max_samples
    spans = [(s, min(s + size, n)) for s in range(0, n, size)]
    with torch.no_grad():
        feats = fe(audio[:size], sampling_rate=RATE, truncation="rand_trunc", return_tensors="pt")
        model.get_audio_features(input_features=feats["input_features"])  # warm-up
        start = time.perf_counter()
        for a, b in spans:
            feats = fe(audio[a:b], sampling_rate=RATE, truncation="rand_trunc", return_tensors="pt")
            model.get_audio_features(input_features=feats["input_features"])
        dt = time.perf_counter() - start
    print(f"transformers: {seconds:.1f} s of audio in {dt:.2f} s = {seconds / dt:.2f} audio s/s "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
    sys.stdout.flush()
    if os.environ.get("BENCH_SKIP_BATON"):
        return
    env = dict(os.environ)
    if len(sys.argv) > 2:
        env["RAYON_NUM_THREADS"] = sys.argv[2]  # candle's thread count
    features = ["--features", os.environ["BENCH_FEATURES"]] if os.environ.get("BENCH_FEATURES") else []
    subprocess.run(["cargo", "run", "--release", "--quiet", *features, "--example", "bench_clap", "--",
                    FOLDER, str(seconds)], cwd=ROOT, check=True, env=env)


if __name__ == "__main__":
    main()
