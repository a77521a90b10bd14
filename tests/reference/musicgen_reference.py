#!/usr/bin/env python3
"""Builds two tiny random MusicGen checkpoints and records reference outputs for baton's Rust tests.

Run from the repository root with the pinned environment (tests/reference/requirements.txt):

    "$(tests/reference/setup.sh)" tests/reference/musicgen_reference.py            # writes tests/fixtures/
    "$(tests/reference/setup.sh)" tests/reference/musicgen_reference.py --check    # runs twice in memory,
                                                                            # fails if outputs differ

Everything runs on CPU in float32 with eager attention, seeded, and single-threaded so that two
runs give bit-identical files.

Checkpoints (folders laid out the way a user has a downloaded model: config.json,
model.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json):

  tests/fixtures/tiny-a/  EnCodec shaped like facebook/encodec_32khz (32 kHz, upsampling ratios
                          [8, 5, 4, 4] -> 640 samples per frame, 50 Hz, reflect padding,
                          non-causal, 2 LSTM layers, weight norm, no conv shortcut) with small
                          channels, 4 codebooks of 64 entries; T5 with relu FFN; decoder 3 blocks,
                          d 32, 4 heads. Weight norm stored as `weight_g` / `weight_v` (the layout
                          of the facebook checkpoints).
  tests/fixtures/tiny-b/  Different shapes everywhere: EnCodec at 16 kHz with ratios [5, 4, 2]
                          (40 samples per frame, 400 Hz, odd stride 5), 1 LSTM layer, 2 residual
                          layers with conv shortcuts, 2 codebooks of 32 entries; T5 with gated-gelu
                          FFN and few relative-position buckets; decoder 2 blocks, d 48, 6 heads.
                          Weight norm stored as transformers 5's
                          `parametrizations.weight.original0` / `original1` layout.

Random init is changed where the defaults would make the fixtures useless: EnCodec codebooks and
biases are filled with noise (they start at zero, so audio would ignore the codes), and the decoder
and T5 use std 0.2 so greedy argmax has clear margins (the script asserts a minimum top-1/top-2
gap over every generation step). The reference outputs are computed by the model *reloaded* from
the written folder with `MusicgenForConditionalGeneration.from_pretrained`, so the folder itself is
what the tests check.

Reference outputs: tests/fixtures/reference-{a,b}.safetensors. All float tensors are f32, integer
tensors i64. Metadata (strings): `prompts` (JSON list), `max_new_tokens`, `guidance_scales`,
`samples_per_frame`, `sampling_rate`, `gen_min_margin_cfg3` / `gen_min_margin_cfg1` (smallest
top-1 minus top-2 processed score seen while generating).

  text.input_ids        [2, S]   tokenizer(prompts, padding=True) with PreTrainedTokenizerFast
  text.attention_mask   [2, S]   loaded from tokenizer.json (right padding, pad id 0, `</s>`
                                 (id 1) appended by the post-processor)
  t5.last_hidden_state  [2, S, Dt]  model.text_encoder(input_ids, attention_mask).last_hidden_state
  t5.projected          [2, S, D]   model.enc_to_dec_proj(t5.last_hidden_state) * attention_mask
                                    (exactly what MusicgenForConditionalGeneration.forward feeds
                                    the decoder's cross-attention)
  tf.codes              [2, K, T]   fixed random codes in [0, vocab), first column BOS (= vocab);
                                    no delay pattern applied
  tf.embeddings         [2, T, D]   input of decoder block 0 (sum of codebook embeddings +
                                    sinusoidal positions), captured with a forward pre-hook
  tf.block.{l}          [2, T, D]   output of decoder block l, captured with forward hooks on
                                    model.decoder.model.decoder.layers[l]. (HF's hidden_states[l+1]
                                    equals these for l < L-1; HF's last entry is after the final
                                    LayerNorm, which is tf.final_norm here.)
  tf.final_norm         [2, T, D]   decoder output after the final LayerNorm
  tf.logits             [2, K, T, V]  model(input_ids, attention_mask,
                                    decoder_input_ids=tf.codes.reshape(2*K, T)).logits reshaped
  capture.block.{l}     [2, T, D]   the same codes through model.decoder(input_ids=codes) with NO
                                    encoder_hidden_states (cross-attention skipped): what baton's
                                    capture mode computes
  capture.logits        [2, K, T, V]
  gen.cfg3.codes        [2, K, F]   model.generate(input_ids, attention_mask, do_sample=False,
                                    guidance_scale=3.0, max_new_tokens=F+K-1); the codes handed to
                                    audio_encoder.decode (delay pattern undone), recorded by
                                    wrapping audio_encoder.decode
  gen.cfg3.audio        [2, F*hop]  the returned audio values (channel dim squeezed)
  gen.cfg1.codes/audio              the same with guidance_scale=1.0 (no doubled batch)
  encodec.input         [1, N]      fixed waveform: chirp + seeded noise, 0.5 s (A) / 0.1 s (B), a
                                    whole number of frames; the noise seed is searched so that no
                                    nearest-codebook choice is a near-tie (metadata
                                    encodec_noise_seed, encodec_min_relative_gap)
  encodec.embeddings    [1, H, F]   model.audio_encoder.encoder(input) (pre-quantisation latent)
  encodec.codes         [1, K, F]   model.audio_encoder.encode(input, bandwidth=last target
                                    bandwidth).audio_codes[0] (all K codebooks)
  encodec.decoded       [1, F*hop]  model.audio_encoder.decode(codes[None], [None]).audio_values
  encodec.odd_input     [1, M]      a length that is not a whole number of frames (M % hop != 0)
  encodec.odd_codes     [1, K, ceil(M/hop)]  its codes (exercises the extra right padding)
  encodec.short_input   [1, 3]      3 samples: the reflect-padding-on-small-input case
  encodec.short_codes   [1, K, 1]
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import save as np_save_bytes
from safetensors.torch import load_file, save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (
    EncodecConfig,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    PreTrainedTokenizerFast,
    T5Config,
)

PROMPTS = ["a calm piano melody with soft strings", "loud drums"]

CORPUS = [
    "a calm piano melody with soft strings",
    "loud drums and a heavy bass line",
    "80s pop track with bassy drums and synth",
    "90s rock song with loud guitars and heavy drums",
    "ambient pads slowly evolving in a large hall",
    "a jazz trio with brushed snare and walking bass",
    "lofi hip hop beat with vinyl crackle",
    "an orchestral film score with epic brass",
    "acoustic guitar folk song with gentle vocals",
    "fast techno with a driving kick drum",
    "sad violin solo in a minor key",
    "happy ukulele tune for a summer day",
    "a C major chord played on piano",
    "slow blues with electric guitar",
] * 4

CONFIGS = {
    "a": dict(
        weight_norm_layout="g_v",
        text=dict(vocab_size=160, d_model=40, d_kv=10, num_heads=4, d_ff=64, num_layers=2,
                  relative_attention_num_buckets=32, relative_attention_max_distance=128,
                  feed_forward_proj="relu"),
        audio=dict(sampling_rate=32000, upsampling_ratios=[8, 5, 4, 4], num_filters=2, hidden_size=16,
                   codebook_size=64, num_lstm_layers=2, num_residual_layers=1, use_conv_shortcut=False,
                   num_codebooks=4),
        decoder=dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=3, ffn_dim=64),
        tf_frames=12,
        gen_frames=8,
        encodec_seconds=0.5,
    ),
    "b": dict(
        weight_norm_layout="parametrizations",
        text=dict(vocab_size=160, d_model=24, d_kv=8, num_heads=3, d_ff=40, num_layers=3,
                  relative_attention_num_buckets=8, relative_attention_max_distance=6,
                  feed_forward_proj="gated-gelu"),
        audio=dict(sampling_rate=16000, upsampling_ratios=[5, 4, 2], num_filters=3, hidden_size=12,
                   codebook_size=32, num_lstm_layers=1, num_residual_layers=2, use_conv_shortcut=True,
                   num_codebooks=2),
        decoder=dict(hidden_size=48, num_attention_heads=6, num_hidden_layers=2, ffn_dim=80),
        tf_frames=9,
        gen_frames=10,
        encodec_seconds=0.1,
    ),
}


def seed_all(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)


def train_tokenizer(vocab_size):
    """A small T5-like Unigram tokenizer: pad 0, </s> 1, <unk> 2, Metaspace, `$A </s>`.

    tokenizers' UnigramTrainer is not deterministic across runs, so the vocabulary is built here
    from corpus counts instead: the most frequent whole words (with the `\u2581` word-start
    marker), every single character, and log-frequency scores, sorted deterministically.
    """
    words, chars = {}, {}
    for line in CORPUS:
        for w in line.split():
            words["\u2581" + w] = words.get("\u2581" + w, 0) + 1
            for c in w:
                chars[c] = chars.get(c, 0) + 1
    chars["\u2581"] = sum(words.values())
    total = sum(words.values()) + sum(chars.values())
    pieces = sorted(chars.items(), key=lambda kv: (-kv[1], kv[0]))
    budget = vocab_size - 3 - len(pieces)
    # only keep a part of the words so some prompts fall back to characters
    top_words = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[: min(budget, len(words) * 2 // 3)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    for piece, count in top_words + pieces:
        vocab.append((piece, math.log(count / total) - (0.0 if len(piece) > 1 else 2.0)))
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.add_special_tokens(["<pad>", "</s>", "<unk>"])
    assert tok.token_to_id("<pad>") == 0 and tok.token_to_id("</s>") == 1 and tok.token_to_id("<unk>") == 2
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return tok


def build_config(spec):
    a = spec["audio"]
    num_codebooks = a["num_codebooks"]
    hop = int(np.prod(a["upsampling_ratios"]))
    frame_rate = math.ceil(a["sampling_rate"] / hop)
    nbits = math.ceil(math.log2(a["codebook_size"]))
    # num_quantizers is derived from the last target bandwidth: make it exactly num_codebooks.
    bandwidth = num_codebooks * frame_rate * nbits / 1000.0
    audio = EncodecConfig(
        sampling_rate=a["sampling_rate"],
        upsampling_ratios=a["upsampling_ratios"],
        num_filters=a["num_filters"],
        hidden_size=a["hidden_size"],
        codebook_size=a["codebook_size"],
        num_lstm_layers=a["num_lstm_layers"],
        num_residual_layers=a["num_residual_layers"],
        use_conv_shortcut=a["use_conv_shortcut"],
        target_bandwidths=[bandwidth],
        use_causal_conv=False,
        pad_mode="reflect",
        norm_type="weight_norm",
        normalize=False,
        chunk_length_s=None,
        overlap=None,
        audio_channels=1,
    )
    assert audio.num_quantizers == num_codebooks, (audio.num_quantizers, num_codebooks)
    text = T5Config(**spec["text"], dropout_rate=0.0, is_encoder_decoder=False, use_cache=False,
                    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    d = spec["decoder"]
    vocab = a["codebook_size"]
    decoder = MusicgenDecoderConfig(
        vocab_size=vocab,
        max_position_embeddings=256,
        num_hidden_layers=d["num_hidden_layers"],
        ffn_dim=d["ffn_dim"],
        num_attention_heads=d["num_attention_heads"],
        hidden_size=d["hidden_size"],
        num_codebooks=num_codebooks,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        activation_function="gelu",
        pad_token_id=vocab,
        bos_token_id=vocab,
        decoder_start_token_id=vocab,
    )
    cfg = MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder)
    cfg.decoder_start_token_id = vocab
    cfg.pad_token_id = vocab
    return cfg


@torch.no_grad()
def randomise(model):
    """Replace the default init with one that makes the fixtures discriminative (see header)."""
    g = torch.Generator().manual_seed(1234)

    def noise(t, std):
        t.copy_(torch.randn(t.shape, generator=g) * std)

    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if name.startswith("decoder.") or name.startswith("text_encoder.") or name.startswith("enc_to_dec_proj."):
            if p.ndim == 1 and ("layer_norm" in name or "final_layer_norm" in name) and name.endswith("weight"):
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.1)
            elif p.ndim == 1:
                noise(p, 0.1)
            else:
                noise(p, 0.2)
        elif name.startswith("audio_encoder."):
            if name.endswith("bias"):
                noise(p, 0.05)
            elif "original0" in name or name.endswith("weight_g"):
                # weight-norm magnitude: perturb so it is not just ||v||
                p.mul_(1.0 + torch.rand(p.shape, generator=g) * 0.5)
    # Codebooks start at zero. Random entries far from the encoder's latents would make every
    # frame pick the same code, so seed each level (k-means style) with residual latents of random
    # audio plus a little noise: then the codes follow the audio.
    ae = model.audio_encoder
    sr = ae.config.sampling_rate
    audio = torch.randn((8, 1, sr), generator=g) * 0.3
    latents = ae.encoder(audio).permute(0, 2, 1).reshape(-1, ae.config.codebook_dim)
    residual = latents
    for layer in ae.quantizer.layers:
        book = layer.codebook
        pick = torch.randperm(residual.shape[0], generator=g)[: book.embed.shape[0]]
        scale = residual.std().item()
        book.embed.copy_(residual[pick] + torch.randn(book.embed.shape, generator=g) * 0.1 * scale)
        book.embed_avg.copy_(book.embed)
        residual = residual - book.decode(book.encode(residual[None]))[0]


def rename_weight_norm(state, layout):
    out = {}
    for k, v in state.items():
        if layout == "g_v":
            k = k.replace("parametrizations.weight.original0", "weight_g").replace(
                "parametrizations.weight.original1", "weight_v"
            )
        else:
            k = k.replace("weight_g", "parametrizations.weight.original0").replace(
                "weight_v", "parametrizations.weight.original1"
            )
        out[k] = v.contiguous().clone()
    return out


def write_folder(model, tok, spec, folder):
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        state = load_file(os.path.join(tmp, "model.safetensors"))
        with open(os.path.join(tmp, "config.json")) as f:
            config = json.load(f)
    state = rename_weight_norm(state, spec["weight_norm_layout"])
    # Sort keys so the file is byte-identical across runs.
    state = {k: state[k] for k in sorted(state)}
    save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    vocab = spec["audio"]["codebook_size"]
    gen = {
        "bos_token_id": vocab,
        "decoder_start_token_id": vocab,
        "pad_token_id": vocab,
        "do_sample": True,
        "guidance_scale": 3.0,
        "max_length": 1500,
    }
    with open(os.path.join(folder, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2, sort_keys=True)
        f.write("\n")
    tok.save(os.path.join(folder, "tokenizer.json"))
    tcfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "pad_token": "<pad>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": 512,
        "padding_side": "right",
    }
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(tcfg, f, indent=2, sort_keys=True)
        f.write("\n")


def chirp_and_noise(n, sr, seed):
    t = np.arange(n, dtype=np.float64) / sr
    f0, f1 = 110.0, 0.35 * sr
    dur = n / sr
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * dur))
    rng = np.random.default_rng(seed)
    x = 0.5 * np.sin(phase) + 0.05 * rng.standard_normal(n)
    return torch.from_numpy(x.astype(np.float32))[None, None, :]


@torch.no_grad()
def reference_outputs(folder, spec):
    model = MusicgenForConditionalGeneration.from_pretrained(folder, attn_implementation="eager")
    model.eval()
    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    K = model.decoder.num_codebooks
    V = model.config.decoder.vocab_size
    L = model.config.decoder.num_hidden_layers
    hop = int(np.prod(model.config.audio_encoder.upsampling_ratios))
    sr = model.config.audio_encoder.sampling_rate
    out = {}

    enc = tok(PROMPTS, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert ids.shape[0] == 2 and mask[1].sum() < mask[0].sum(), "prompts must differ in length"
    out["text.input_ids"] = ids
    out["text.attention_mask"] = mask

    t5 = model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    out["t5.last_hidden_state"] = t5
    out["t5.projected"] = model.enc_to_dec_proj(t5) * mask[..., None]

    # Teacher-forced pass on fixed codes.
    layers = model.decoder.model.decoder.layers
    g = torch.Generator().manual_seed(99)
    T = spec["tf_frames"]
    codes = torch.randint(0, V, (2, K, T), generator=g)
    codes[:, :, 0] = V  # BOS column, as generation starts
    out["tf.codes"] = codes

    rec = {}
    hooks = [layers[0].register_forward_pre_hook(lambda m, args: rec.__setitem__("emb", args[0].clone()))]
    for l, layer in enumerate(layers):
        hooks.append(layer.register_forward_hook(lambda m, a, o, l=l: rec.__setitem__(l, (o[0] if isinstance(o, tuple) else o).clone())))
    hooks.append(model.decoder.model.decoder.layer_norm.register_forward_hook(
        lambda m, a, o: rec.__setitem__("norm", o.clone())))

    res = model(input_ids=ids, attention_mask=mask, decoder_input_ids=codes.reshape(2 * K, T))
    out["tf.embeddings"] = rec["emb"]
    for l in range(L):
        out[f"tf.block.{l}"] = rec[l]
    out["tf.final_norm"] = rec["norm"]
    out["tf.logits"] = res.logits.reshape(2, K, T, V)

    rec.clear()
    res = model.decoder(input_ids=codes.reshape(2 * K, T))
    for l in range(L):
        out[f"capture.block.{l}"] = rec[l]
    out["capture.logits"] = res.logits.reshape(2, K, T, V)
    for h in hooks:
        h.remove()

    # Greedy generation, CFG 3 and 1.
    F = spec["gen_frames"]
    max_new_tokens = F + K - 1
    meta = {}
    orig_decode = model.audio_encoder.decode
    for name, scale in (("cfg3", 3.0), ("cfg1", 1.0)):
        seen = {}

        def wrapped(audio_codes, *a, **kw):
            seen["codes"] = audio_codes.clone()
            return orig_decode(audio_codes, *a, **kw)

        model.audio_encoder.decode = wrapped
        gen = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            guidance_scale=scale,
            max_new_tokens=max_new_tokens,
            return_dict_in_generate=True,
            output_scores=True,
        )
        model.audio_encoder.decode = orig_decode
        audio = gen.sequences
        gcodes = seen["codes"][0]
        assert gcodes.shape == (2, K, F), gcodes.shape
        assert audio.shape == (2, 1, F * hop), audio.shape
        # Each score row is [batch*K, V] of processed logits; only rows the delay pattern leaves
        # free matter, but every row having a clear winner is a stronger, simpler check.
        margins = []
        for s in gen.scores:
            top2 = torch.topk(s, 2, dim=-1).values
            margins.append((top2[:, 0] - top2[:, 1]).min().item())
        meta[f"gen_min_margin_{name}"] = f"{min(margins):.6g}"
        assert min(margins) > 2e-4, f"greedy margin too small for {name}: {min(margins)}"
        out[f"gen.{name}.codes"] = gcodes
        out[f"gen.{name}.audio"] = audio[:, 0, :]

    # EnCodec on a fixed waveform. Nearest-codebook choices must not be near-ties, or float
    # noise in another implementation could flip a code: the noise seed is the first from 7 up
    # whose every choice wins by a relative distance gap of at least 1e-3.
    ae = model.audio_encoder
    bw = ae.config.target_bandwidths[-1]

    def min_relative_gap(wav):
        residual = ae.encoder(wav).permute(0, 2, 1).reshape(-1, ae.config.codebook_dim)
        gaps = []
        for layer in ae.quantizer.layers:
            d = torch.cdist(residual, layer.codebook.embed) ** 2
            two = torch.topk(d, 2, dim=-1, largest=False).values
            gaps.append(((two[:, 1] - two[:, 0]) / d.mean(-1)).min().item())
            residual = residual - layer.codebook.embed[d.argmin(-1)]
        return min(gaps)

    def pick_seed(n, first):
        for seed in range(first, first + 200):
            wav = chirp_and_noise(n, sr, seed)
            gap = min_relative_gap(wav)
            if gap > 1e-3:
                return seed, wav, gap
        raise SystemExit("no waveform without near-tie codes found")

    n = int(sr * spec["encodec_seconds"])
    assert n % hop == 0
    seed, wav, gap = pick_seed(n, 7)
    meta["encodec_noise_seed"] = str(seed)
    meta["encodec_min_relative_gap"] = f"{gap:.6g}"
    out["encodec.input"] = wav[:, 0, :]
    out["encodec.embeddings"] = ae.encoder(wav)
    ecodes = ae.encode(wav, bandwidth=bw).audio_codes
    assert ecodes.shape == (1, 1, K, n // hop), ecodes.shape
    out["encodec.codes"] = ecodes[0]
    dec = ae.decode(ecodes, [None]).audio_values
    assert dec.shape == (1, 1, n), dec.shape
    out["encodec.decoded"] = dec[:, 0, :]
    m = 5 * hop + hop // 3 + 1
    seed, odd, _ = pick_seed(m, 1000)
    meta["encodec_odd_noise_seed"] = str(seed)
    out["encodec.odd_input"] = odd[:, 0, :]
    out["encodec.odd_codes"] = ae.encode(odd, bandwidth=bw).audio_codes[0]
    assert out["encodec.odd_codes"].shape[-1] == math.ceil(m / hop)
    short = torch.tensor([[[0.3, -0.2, 0.5]]])
    assert min_relative_gap(short) > 1e-3
    out["encodec.short_input"] = short[:, 0, :]
    out["encodec.short_codes"] = ae.encode(short, bandwidth=bw).audio_codes[0]

    # Codes must use more than one codebook entry or the tests prove little.
    for key in ("encodec.codes", "gen.cfg3.codes", "gen.cfg1.codes"):
        if key == "encodec.codes":
            for row in out[key].reshape(-1, out[key].shape[-1]):
                assert row.unique().numel() > 2, f"{key} is degenerate: {out[key]}"
        assert out[key].unique().numel() > 4, f"{key} is degenerate: {out[key]}"

    meta.update(
        prompts=json.dumps(PROMPTS),
        max_new_tokens=str(max_new_tokens),
        guidance_scales=json.dumps([3.0, 1.0]),
        samples_per_frame=str(hop),
        sampling_rate=str(sr),
        num_codebooks=str(K),
        num_layers=str(L),
    )
    arrays = {}
    for k in sorted(out):
        v = out[k].detach()
        if v.dtype.is_floating_point:
            arrays[k] = v.to(torch.float32).contiguous().numpy()
        else:
            arrays[k] = v.to(torch.int64).contiguous().numpy()
    return arrays, meta


def build(name, spec, folder):
    seed_all(0)
    tok = train_tokenizer(spec["text"]["vocab_size"] - 8)
    cfg = build_config(spec)
    seed_all(1)
    model = MusicgenForConditionalGeneration(cfg)
    model.eval()
    randomise(model)
    write_folder(model, tok, spec, folder)


def run_once(root):
    blobs = {}
    for name, spec in CONFIGS.items():
        folder = os.path.join(root, f"tiny-{name}")
        build(name, spec, folder)
        seed_all(2)
        arrays, meta = reference_outputs(folder, spec)
        blobs[f"reference-{name}.safetensors"] = np_save_bytes(arrays, metadata=meta)
        for fname in sorted(os.listdir(folder)):
            with open(os.path.join(folder, fname), "rb") as f:
                blobs[f"tiny-{name}/{fname}"] = f.read()
    return blobs


def fingerprint(name, data):
    """Content hash; safetensors writes its metadata map in arbitrary order, so parse those."""
    if not name.endswith(".safetensors"):
        return hashlib.sha256(data).hexdigest()
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    return hashlib.sha256(json.dumps(header, sort_keys=True).encode() + data[8 + header_len :]).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "fixtures"))
    ap.add_argument("--check", action="store_true", help="run twice and compare, write nothing")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    with tempfile.TemporaryDirectory() as tmp1:
        first = run_once(tmp1)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp2:
            second = run_once(tmp2)
        bad = [k for k in first if fingerprint(k, first[k]) != fingerprint(k, second.get(k, b""))]
        if bad:
            sys.exit(f"non-deterministic outputs: {bad}")
        print("deterministic: both runs identical")
        return

    total = 0
    for rel, data in sorted(first.items()):
        path = os.path.join(args.out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        total += len(data)
        print(f"{len(data):>9}  {rel}")
    print(f"{total:>9}  total bytes")


if __name__ == "__main__":
    main()
