#!/usr/bin/env python3
"""Reference steering on the tiny checkpoint, for baton's steering parity test.

Run from the repository root with the pinned environment (tests/reference/requirements.txt):

    "$(tests/reference/setup.sh)" tests/reference/steer_reference.py

Reads tests/fixtures/tiny-a (written by musicgen_reference.py) and writes:

  tests/fixtures/steer-direction.safetensors   a baton direction bundle (`direction/1`): one random
                                               unit vector per decoder block (seeded), made-up
                                               per-block AUC scores
  tests/fixtures/steer-reference.safetensors   codes and audio of greedy CFG-3 generations,
                                               steered by forward hooks on transformers' decoder
                                               blocks, and the unsteered baseline

Steering, as the paper describes it: at generation step t, the output of decoder block l (the first
element of the block's output tuple, i.e. the residual stream) gets `eta(t) * w_l * q_l` added, at
every position, on both classifier-free-guidance halves (case `cond`: the conditional half only,
which is the first half of HF's doubled batch). The step is known by counting calls of block 0's
forward during one `generate` (one call per step with the KV cache; transformers 5.24 runs the
step-0 prefill twice, and both count as step 0). Layer weights w_l are the
paper's exponential rule with kappa = 0.95 on min-max normalised scores.

Cases (tensors `{case}.codes` [2, K, F] i64; `const.audio` [2, F*hop] f32):
  none     unsteered
  const    eta(t) = ETA0
  linear   eta(t) = ETA0 * clip(t / (F / 50 Hz), 0, 1), t = step / 50 Hz (baton: linear(0, 1, 0, F/50))
  cond     eta(t) = ETA0, conditional half only
Metadata: prompts, max_new_tokens, guidance_scale, eta0, layer_weights (JSON), gen_min_margin_*.
"""

import json
import os
import sys

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import MusicgenForConditionalGeneration, PreTrainedTokenizerFast

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
PROMPTS = ["a calm piano melody with soft strings", "loud drums"]
FRAMES = 24
ETA0 = 6.0
KAPPA = 0.95
FRAME_RATE = 50.0


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    folder = os.path.join(ROOT, "tiny-a")
    model = MusicgenForConditionalGeneration.from_pretrained(folder, attn_implementation="eager")
    model.eval()
    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    K = model.decoder.num_codebooks
    D = model.config.decoder.hidden_size
    L = model.config.decoder.num_hidden_layers
    layers = model.decoder.model.decoder.layers
    assert len(layers) == L

    g = torch.Generator().manual_seed(1234)
    q = torch.randn(L, D, generator=g)
    q = q / q.norm(dim=-1, keepdim=True)
    scores = {l: 0.6 + 0.35 * l / max(L - 1, 1) for l in range(L)}
    lo, hi = min(scores.values()), max(scores.values())
    weights = {l: ((s - lo) / (hi - lo)) ** (1.0 / KAPPA) for l, s in scores.items()}

    bundle = {f"direction.{l}": q[l].numpy().astype(np.float32) for l in range(L)}
    save_file(
        bundle,
        os.path.join(ROOT, "steer-direction.safetensors"),
        metadata={
            "baton.format": "direction/1",
            "concept": "test",
            "target": "random",
            "model": "tiny-a",
            "hidden_size": str(D),
            "num_layers": str(L),
            "metric": "auc",
            "scores": json.dumps({str(l): s for l, s in scores.items()}),
            "pooling": "mean",
        },
    )

    enc = tok(PROMPTS, padding=True, return_tensors="pt")
    max_new_tokens = FRAMES + K - 1
    seconds = FRAMES / FRAME_RATE
    schedules = {
        "none": None,
        "const": lambda t: ETA0,
        "linear": lambda t: ETA0 * min(max(t / seconds, 0.0), 1.0),
        "cond": lambda t: ETA0,
    }

    out, meta = {}, {}
    orig_decode = model.audio_encoder.decode
    for case, eta in schedules.items():
        state = {"step": -1, "calls": 0}
        hooks = []
        if eta is not None:

            def count(module, args):
                # transformers 5.24's MusicGen generate runs the BOS prefill twice (once in
                # MusicgenForConditionalGeneration.generate, again in _sample); both calls are
                # step 0, so the first call does not advance the counter.
                state["calls"] += 1
                state["step"] = max(state["calls"] - 2, 0)

            def add(module, args, output, l):
                t = state["step"] / FRAME_RATE
                v = (eta(t) * weights[l]) * q[l]
                h = output[0] if isinstance(output, tuple) else output
                if case == "cond":
                    h = h.clone()
                    half = h.shape[0] // 2
                    h[:half] = h[:half] + v
                else:
                    h = h + v
                return (h,) + tuple(output[1:]) if isinstance(output, tuple) else h

            hooks.append(layers[0].register_forward_pre_hook(count))
            for l, layer in enumerate(layers):
                hooks.append(layer.register_forward_hook(lambda m, a, o, l=l: add(m, a, o, l)))

        seen = {}

        def wrapped(audio_codes, *a, **kw):
            seen["codes"] = audio_codes.clone()
            return orig_decode(audio_codes, *a, **kw)

        model.audio_encoder.decode = wrapped
        with torch.no_grad():
            gen = model.generate(
                **enc,
                do_sample=False,
                guidance_scale=3.0,
                max_new_tokens=max_new_tokens,
                return_dict_in_generate=True,
                output_scores=True,
            )
        model.audio_encoder.decode = orig_decode
        for h in hooks:
            h.remove()
        if eta is not None:
            assert state["calls"] == max_new_tokens + 1, (state, max_new_tokens)
            assert state["step"] + 1 == max_new_tokens, (state, max_new_tokens)
        margins = [(torch.topk(s, 2, dim=-1).values.diff(dim=-1).abs().min().item()) for s in gen.scores]
        meta[f"gen_min_margin_{case}"] = f"{min(margins):.6g}"
        assert min(margins) > 2e-4, f"greedy margin too small for {case}: {min(margins)}"
        out[f"{case}.codes"] = seen["codes"][0].to(torch.int64).numpy()
        if case == "const":  # audio of one case keeps the fixture small; codes decide the rest
            out[f"{case}.audio"] = gen.sequences[:, 0, :].to(torch.float32).numpy()

    for case in ("const", "linear", "cond"):
        changed = (out[case + ".codes"] != out["none.codes"]).mean()
        print(f"{case}: {changed:.0%} of codes differ from unsteered")
        assert changed > 0.1, f"steering case {case} barely changes the codes"
    assert (out["const.codes"] != out["linear.codes"]).any()
    assert (out["const.codes"] != out["cond.codes"]).any()
    print({k: v for k, v in meta.items() if k.startswith("gen_min_margin")})

    meta.update(
        prompts=json.dumps(PROMPTS),
        max_new_tokens=str(max_new_tokens),
        guidance_scale="3.0",
        eta0=str(ETA0),
        seconds=str(seconds),
        layer_weights=json.dumps({str(l): w for l, w in weights.items()}),
    )
    save_file(out, os.path.join(ROOT, "steer-reference.safetensors"), metadata=meta)
    for name in ("steer-direction.safetensors", "steer-reference.safetensors"):
        print(os.path.getsize(os.path.join(ROOT, name)), name)


if __name__ == "__main__":
    sys.exit(main())
