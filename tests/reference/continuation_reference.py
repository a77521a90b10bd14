#!/usr/bin/env python3
"""Records transformers' continuation of an audio clip and a window-by-window long piece on the
tiny checkpoint tests/fixtures/tiny-a, for tests/continuation.rs.

Run from the repository root:

    "$(tests/reference/setup.sh)" tests/reference/continuation_reference.py

Writes tests/fixtures/continuation-a.safetensors (f32 and i64 tensors, string metadata):

  clip                  [N]          0.2 s of chirp + seeded noise at 32 kHz (10 frames of 640)
  clip.codes            [K, C]       model.audio_encoder.encode(clip).audio_codes[0, 0]
  cont.cfg3.codes       [2, K, C+F]  model.generate(text, input_values=clip (both items),
                                     do_sample=False, guidance_scale=3, max_new_tokens=F+K-1):
                                     the codes handed to audio_encoder.decode (clip frames first)
  cont.cfg3.audio       [2, (C+F)*hop]  the returned audio
  cont.cfg1.codes/audio              the same without guidance
  long.codes            [2, K, 30]   a 30-frame piece from text alone in windows of 15 frames with
                                     a stride of 10, built by hand: window 1 is generate(text,
                                     max_new_tokens=15+K-1); each next window is generate(text,
                                     decoder_input_ids=BOS + the last 15-10 frames of the window
                                     before, max_new_tokens=n+K-1) with n new frames (10, then 5)
  long_clip.codes       [2, K, 30]   the same chain after the clip's 10 frames: 20 new frames,
                                     windows of 15 (5 new in the first)

Greedy and CFG 3 throughout (CFG 1 for cont.cfg1), every step's top-1 / top-2 margin checked.
"""

import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import MusicgenForConditionalGeneration, PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures")
PROMPTS = ["a calm piano melody with soft strings", "loud drums"]
WINDOW, STRIDE = 15, 10


def clip_audio(sr, frames, hop):
    n = frames * hop
    t = np.arange(n) / sr
    phase = 2 * np.pi * (220 * t + 440 * t * t)
    x = 0.4 * np.sin(phase) + 0.05 * np.random.default_rng(7).standard_normal(n)
    return torch.from_numpy(x.astype(np.float32))


class Recorder:
    """Wraps audio_encoder.decode to keep the codes generate hands it (delay pattern undone)."""

    def __init__(self, model):
        self.model = model
        self.orig = model.audio_encoder.decode
        self.codes = None

    def __enter__(self):
        def wrapped(audio_codes, *a, **kw):
            self.codes = audio_codes[0].clone()
            return self.orig(audio_codes, *a, **kw)

        self.model.audio_encoder.decode = wrapped
        return self

    def __exit__(self, *exc):
        self.model.audio_encoder.decode = self.orig


def generate(model, text, margins, **kw):
    with Recorder(model) as rec:
        gen = model.generate(**text, do_sample=False, return_dict_in_generate=True, output_scores=True, **kw)
    for s in gen.scores:
        top2 = torch.topk(s, 2, dim=-1).values
        margins.append((top2[:, 0] - top2[:, 1]).min().item())
    return rec.codes, gen.sequences


def long_piece(model, text, K, bos, start, new_total, margins):
    """Window by window, as baton's `passes` plans it: returns [2, K, frames]."""
    piece = start  # [2, K, C] (C may be 0)
    done = 0
    prompt_from, prompt_len = 0, start.shape[-1]
    while done < new_total:
        new = min(new_total - done, WINDOW - prompt_len)
        kw = dict(guidance_scale=3.0, max_new_tokens=new + K - 1)
        if prompt_len > 0:
            prompt = piece[:, :, prompt_from : prompt_from + prompt_len]
            ids = torch.cat([torch.full((2, K, 1), bos), prompt], dim=-1).reshape(2 * K, prompt_len + 1)
            kw["decoder_input_ids"] = ids
        codes, _ = generate(model, text, margins, **kw)
        assert codes.shape[-1] == prompt_len + new, codes.shape
        piece = torch.cat([piece, codes[:, :, prompt_len:]], dim=-1)
        done += new
        end = prompt_from + prompt_len + new
        kept = prompt_len + new - STRIDE
        prompt_from, prompt_len = end - kept, kept
    return piece


@torch.no_grad()
def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    folder = os.path.join(FIXTURES, "tiny-a")
    model = MusicgenForConditionalGeneration.from_pretrained(folder, attn_implementation="eager").eval()
    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    K = model.decoder.num_codebooks
    bos = model.generation_config.decoder_start_token_id
    sr = model.config.audio_encoder.sampling_rate
    hop = int(np.prod(model.config.audio_encoder.upsampling_ratios))
    text = dict(tok(PROMPTS, padding=True, return_tensors="pt"))
    out, margins = {}, []

    clip = clip_audio(sr, 10, hop)
    out["clip"] = clip
    clip_codes = model.audio_encoder.encode(clip[None, None, :]).audio_codes[0, 0]
    out["clip.codes"] = clip_codes
    C, F = clip_codes.shape[-1], 8
    for name, scale in (("cfg3", 3.0), ("cfg1", 1.0)):
        codes, audio = generate(
            model, text, margins, input_values=clip[None, None, :].repeat(2, 1, 1),
            guidance_scale=scale, max_new_tokens=F + K - 1,
        )
        assert codes.shape == (2, K, C + F), codes.shape
        assert torch.equal(codes[:, :, :C], clip_codes[None].repeat(2, 1, 1)), "clip frames not first"
        out[f"cont.{name}.codes"] = codes
        out[f"cont.{name}.audio"] = audio[:, 0, :]

    out["long.codes"] = long_piece(model, text, K, bos, torch.zeros((2, K, 0), dtype=torch.long), 30, margins)
    out["long_clip.codes"] = long_piece(model, text, K, bos, clip_codes[None].repeat(2, 1, 1), 20, margins)

    smallest = min(margins)
    assert smallest > 2e-4, f"greedy margin too small: {smallest}"
    meta = {
        "prompts": json.dumps(PROMPTS),
        "window_frames": str(WINDOW),
        "stride_frames": str(STRIDE),
        "min_margin": f"{smallest:.6g}",
    }
    out = {k: v.contiguous() for k, v in out.items()}
    path = os.path.join(FIXTURES, "continuation-a.safetensors")
    save_file(out, path, metadata=meta)
    print(f"wrote {path} ({os.path.getsize(path)} bytes, smallest greedy margin {smallest:.4g})")


if __name__ == "__main__":
    sys.exit(main())
