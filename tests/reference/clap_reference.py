#!/usr/bin/env python3
"""Builds two tiny random CLAP checkpoints and records reference embeddings for baton's Rust tests.

Run from the repository root with the pinned environment (tests/reference/requirements.txt):

    "$(tests/reference/setup.sh)" tests/reference/clap_reference.py     # writes tests/fixtures/clap/

Everything runs on CPU in float32, seeded, so two runs give the same files.

Checkpoints (folders laid out as a downloaded model: config.json, model.safetensors,
tokenizer.json, preprocessor_config.json), transformers' ClapModel with enable_fusion=False:

  tests/fixtures/clap/tiny-a/  HTSAT with the real feature extractor (64 mels, 48 kHz, hop 480,
                               FFT 1024, 0-14 kHz, repeatpad) and image (spec_size 256, patch 4):
                               2 stages of 2 blocks (shifted windows in both), window 8, width
                               8 -> 16; RoBERTa 2 layers, width 16, gelu; projection 12, relu.
  tests/fixtures/clap/tiny-b/  Other shapes everywhere: 32 mels, hop 1000, FFT 512, 50-14 kHz,
                               padding "repeat", spec_size 128 (freq_ratio 4, 512 frames), window
                               4, 3 stages of 1, 2, 1 blocks, width 6 -> 24, mlp_ratio 2, no qkv
                               bias; RoBERTa 3 layers, width 24, 4 heads, gelu_new; projection 10,
                               gelu.

Every parameter and buffer is filled with noise (transformers starts biases and the relative
position tables at zero, which would let a wrong index pass), weights at std 0.2; the batch norm
statistics are set near real log-mel levels (mean about -40 dB, std about 20 dB). The tokenizer is a
byte-level BPE of 300 tokens trained here on a few sentences, with RoBERTa's <s> ... </s> post-
processor (<s> 0, <pad> 1, </s> 2).

tests/fixtures/clap/tiny-a.pytorch_model.bin holds tiny-a's weights as torch.save writes them (the
format laion's CLAP repositories publish), for the test of that loading path.

Reference outputs are computed by the model reloaded from the written folder:
tests/fixtures/clap/reference-{a,b}.safetensors, f32 (ids i64). Metadata: `texts` (JSON list),
`clips` (JSON list of names), `clip_seconds` (JSON list).

  text.{i}.ids          [S]      tokenizer.json's ids for texts[i] (with <s>, </s>)
  text.{i}.embedding    [P]      ClapModel.get_text_features(ids).pooler_output (unit length)
  audio.{c}.embedding   [P]      the clip's embedding: for a clip of at most 10 s,
                                 get_audio_features(ClapFeatureExtractor(clip, truncation=
                                 "rand_trunc")); for a longer one, the mean of the unit embeddings
                                 of consecutive 10 s windows (plus one ending at the clip's end
                                 when they stop short of it), scaled to unit length (baton's rule)
  audio.{c}.windows     [W, P]   each window's unit embedding
  audio.{c}.mel_head    [4, M]   the first 4 frames of the first window's log-mel input
  scores                [C, T]   cosine of every (clip, text) pair

Clips are 48 kHz signals computed from a formula (clip_signal below; baton's test computes the
same one), so no audio is stored: `short` is 3.7 s, `long` 23.3 s (3 windows).
"""

import json
import math
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "clap")
RATE = 48_000
TEXTS = ["lofi hip hop with piano", "a heavy metal guitar riff", "jazz"]
CLIPS = [("short", 3.7), ("long", 23.3)]

CORPUS = [
    "lofi hip hop with piano and soft drums",
    "a heavy metal guitar riff with distortion",
    "jazz trio with upright bass and brushes",
    "ambient synth pads and a slow melody",
    "classical string quartet playing a waltz",
    "electronic dance music with a loud kick drum",
]

SHAPES = {
    "a": dict(
        features=dict(feature_size=64, hop_length=480, fft_window_size=1024,
                      frequency_min=0, frequency_max=14_000, padding="repeatpad"),
        audio=dict(window_size=8, num_mel_bins=64, spec_size=256, patch_size=4, patch_stride=[4, 4],
                   patch_embeds_hidden_size=8, depths=[2, 2], num_attention_heads=[2, 4],
                   hidden_size=16, mlp_ratio=4.0, qkv_bias=True, hidden_act="gelu"),
        text=dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                  max_position_embeddings=40, hidden_act="gelu"),
        projection_dim=12, projection_hidden_act="relu",
    ),
    "b": dict(
        features=dict(feature_size=32, hop_length=1000, fft_window_size=512,
                      frequency_min=50, frequency_max=14_000, padding="repeat"),
        audio=dict(window_size=4, num_mel_bins=32, spec_size=128, patch_size=4, patch_stride=[4, 4],
                   patch_embeds_hidden_size=6, depths=[1, 2, 1], num_attention_heads=[1, 2, 4],
                   hidden_size=24, mlp_ratio=2.0, qkv_bias=False, hidden_act="gelu"),
        text=dict(hidden_size=24, num_hidden_layers=3, num_attention_heads=4, intermediate_size=20,
                  max_position_embeddings=30, hidden_act="gelu_new"),
        projection_dim=10, projection_hidden_act="gelu",
    ),
}


def clip_signal(seconds):
    """The test clip of `seconds` at 48 kHz: two tones (one amplitude-modulated) and a chirp."""
    n = int(round(seconds * RATE))
    t = np.arange(n, dtype=np.float64) / RATE
    x = (0.4 * np.sin(2 * math.pi * 440.0 * t)
         + 0.25 * np.sin(2 * math.pi * 3100.0 * t + 0.5) * (0.5 + 0.5 * np.sin(2 * math.pi * 1.3 * t))
         + 0.1 * np.sin(2 * math.pi * (200.0 + 40.0 * t) * t))
    return x.astype(np.float32)


def windows(length, size):
    """baton's long-clip rule: consecutive windows from the start, plus one ending at the end."""
    if length <= size:
        return [(0, length)]
    spans = [(s, s + size) for s in range(0, length - size + 1, size)]
    if spans[-1][1] < length:
        spans.append((length - size, length))
    return spans


def build_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return tok


def fill_noise(model, gen):
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + list(model.named_buffers()):
            if not p.dtype.is_floating_point:
                continue
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("batch_norm.running_mean"):
                p.copy_(-40.0 + 5.0 * noise)
            elif name.endswith("batch_norm.running_var"):
                p.copy_(400.0 * (1.0 + 0.2 * noise.abs()))
            elif "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith("bias") or "norm" in name.lower():
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.2 * noise)


def build(key, shape, tok):
    folder = os.path.join(ROOT, f"tiny-{key}")
    os.makedirs(folder, exist_ok=True)
    gen = torch.Generator().manual_seed(1234 + ord(key))
    text = dict(shape["text"], vocab_size=tok.get_vocab_size(), pad_token_id=1, bos_token_id=0,
                eos_token_id=2, type_vocab_size=1)
    config = ClapConfig(text_config=text, audio_config=dict(shape["audio"], enable_fusion=False),
                        projection_dim=shape["projection_dim"],
                        projection_hidden_act=shape["projection_hidden_act"])
    model = ClapModel(config).eval()
    fill_noise(model, gen)
    model.save_pretrained(folder)
    tok.save(os.path.join(folder, "tokenizer.json"))
    fe = ClapFeatureExtractor(sampling_rate=RATE, max_length_s=10, truncation="rand_trunc",
                              **shape["features"])
    fe.save_pretrained(folder)
    for extra in ("generation_config.json",):
        path = os.path.join(folder, extra)
        if os.path.exists(path):
            os.remove(path)

    # Everything below reads the folder back, so the folder is what the tests check.
    model = ClapModel.from_pretrained(folder).eval()
    fe = ClapFeatureExtractor.from_pretrained(folder)
    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    out, meta = {}, {}
    text_embs = []
    with torch.no_grad():
        for i, text in enumerate(TEXTS):
            ids = tok.encode(text).ids
            emb = model.get_text_features(input_ids=torch.tensor([ids])).pooler_output[0]
            out[f"text.{i}.ids"] = torch.tensor(ids, dtype=torch.int64)
            out[f"text.{i}.embedding"] = emb.float().contiguous()
            text_embs.append(emb.float())
        audio_embs = []
        size = fe.nb_max_samples
        for name, seconds in CLIPS:
            x = clip_signal(seconds)
            embs = []
            for w, (a, b) in enumerate(windows(len(x), size)):
                feats = fe(x[a:b], sampling_rate=RATE, truncation="rand_trunc", return_tensors="pt")
                mel = feats["input_features"].float()
                if w == 0:
                    out[f"audio.{name}.mel_head"] = mel[0, 0, :4].contiguous()
                emb = model.get_audio_features(input_features=mel).pooler_output[0].float()
                embs.append(emb)
            stacked = torch.stack(embs)
            mean = stacked.double().mean(0)
            emb = (mean / mean.norm().clamp_min(1e-12)).float()
            out[f"audio.{name}.windows"] = stacked.contiguous()
            out[f"audio.{name}.embedding"] = emb.contiguous()
            audio_embs.append(emb)
        scores = torch.stack([torch.stack([(a.double() @ t.double()) / (a.double().norm() * t.double().norm())
                                           for t in text_embs]) for a in audio_embs]).float()
        out["scores"] = scores.contiguous()
    meta["texts"] = json.dumps(TEXTS)
    meta["clips"] = json.dumps([c for c, _ in CLIPS])
    meta["clip_seconds"] = json.dumps([s for _, s in CLIPS])
    save_file(out, os.path.join(ROOT, f"reference-{key}.safetensors"), metadata=meta)
    if key == "a":
        # The same weights as a PyTorch pickle (laion's repositories hold only
        # pytorch_model.bin on their main branch); integer buffers left out, as baton reads none.
        state = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
        torch.save(state, os.path.join(ROOT, "tiny-a.pytorch_model.bin"))
    print(f"tiny-{key}: scores\n{scores.numpy()}", file=sys.stderr)


def main():
    torch.manual_seed(0)
    os.makedirs(ROOT, exist_ok=True)
    tok = build_tokenizer()
    for key, shape in SHAPES.items():
        build(key, shape, tok)


if __name__ == "__main__":
    main()
