#!/usr/bin/env python3
"""Benchmark transformers' MusicGen on a random checkpoint with musicgen-small's exact shapes.

No weights are downloaded: `build` writes a folder shaped like facebook/musicgen-small (T5-base
text encoder: 12 layers, d 768, ff 3072, vocab 32128, relu; decoder: 24 blocks, d 1024, 16 heads,
ffn 4096, 4 codebooks of 2048 + 1 pad/bos; EnCodec like facebook/encodec_32khz: 32 kHz,
num_filters 64, hidden 128, ratios [8, 5, 4, 4], 2048-entry codebooks, 4 codebooks (2.2 kbps),
weight norm stored as weight_g / weight_v, 2 LSTM layers, reflect padding, non-causal, no conv
shortcut). Random weights make the timings meaningful and the audio noise.

    python tests/reference/bench_small_shaped.py build DIR
    python tests/reference/bench_small_shaped.py time DIR [--seconds 10] [--threads N] [--device cuda]
        [--dtype float32|bfloat16|float16]
    python tests/reference/bench_small_shaped.py encodec DIR [--seconds 10] [--threads N]
    python tests/reference/bench_small_shaped.py load DIR [--threads N] [--dtype float32]
    cargo run --release --example bench_encodec -- DIR [SECONDS]     # the baton side of `encodec`

`time` runs in a fresh process so its peak RSS counts only loading and running:
  1. load with MusicgenForConditionalGeneration.from_pretrained(DIR, dtype=--dtype) (sdpa) onto
     --device (cpu by default, or cuda); float32 by default, and a half dtype casts the whole
     model, as a transformers user would (baton's --dtype casts only the decoder),
  2. generate(prompt, do_sample=True, top_k=250, guidance_scale=3.0,
     max_new_tokens=seconds*50+3) -- text encoding, 503 decoder steps for 10 s and the EnCodec
     decode of the result -- timed as a whole,
  3. the EnCodec decode alone of the generated codes (audio_encoder.decode), timed separately,
  4. the EnCodec encode of 10 s of noise (audio_encoder.encode), timed.
It prints one JSON line: decoder steps/s (excluding the final decode), real-time factor of the
whole generate (wall time / audio seconds), decode and encode seconds, and peak RSS (MiB).
"""

import argparse
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from musicgen_reference import rename_weight_norm, train_tokenizer  # noqa: E402
from transformers import (  # noqa: E402
    EncodecConfig,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    PreTrainedTokenizerFast,
    T5Config,
)
from safetensors.torch import save_file  # noqa: E402


def small_config():
    text = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
                    feed_forward_proj="relu", relative_attention_num_buckets=32,
                    relative_attention_max_distance=128, dropout_rate=0.0, is_encoder_decoder=False,
                    use_cache=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    audio = EncodecConfig(sampling_rate=32000, audio_channels=1, num_filters=64, hidden_size=128,
                          upsampling_ratios=[8, 5, 4, 4], codebook_size=2048, target_bandwidths=[2.2],
                          norm_type="weight_norm", num_lstm_layers=2, pad_mode="reflect",
                          use_causal_conv=False, use_conv_shortcut=False, num_residual_layers=1,
                          compress=2, kernel_size=7, last_kernel_size=7, residual_kernel_size=3,
                          dilation_growth_rate=2, normalize=False, chunk_length_s=None, overlap=None)
    assert audio.num_quantizers == 4
    decoder = MusicgenDecoderConfig(vocab_size=2048, max_position_embeddings=2048, num_hidden_layers=24,
                                    ffn_dim=4096, num_attention_heads=16, hidden_size=1024,
                                    num_codebooks=4, dropout=0.0, attention_dropout=0.0,
                                    activation_dropout=0.0, activation_function="gelu",
                                    pad_token_id=2048, bos_token_id=2048, decoder_start_token_id=2048)
    cfg = MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder)
    cfg.decoder_start_token_id = 2048
    cfg.pad_token_id = 2048
    return cfg


@torch.no_grad()
def build(folder):
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(small_config())
    g = torch.Generator().manual_seed(1)
    for name, b in model.named_buffers():
        if name.endswith("codebook.embed"):
            b.copy_(torch.randn(b.shape, generator=g) * 0.1)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    # Re-save in the facebook layout (weight_g / weight_v), as the hub checkpoint has it.
    from safetensors.torch import load_file

    path = os.path.join(folder, "model.safetensors")
    if os.path.exists(path):
        state = rename_weight_norm(load_file(path), "g_v")
        save_file(state, path, metadata={"format": "pt"})
    train_tokenizer(512).save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "eos_token": "</s>",
                   "unk_token": "<unk>", "padding_side": "right"}, f)
    with open(os.path.join(folder, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 2048, "decoder_start_token_id": 2048, "pad_token_id": 2048,
                   "do_sample": True, "guidance_scale": 3.0, "max_length": 1500}, f)
    print(f"wrote {folder}")


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load(folder, dtype):
    """The model (eval mode, `dtype`) and tokenizer as a transformers user loads them."""
    model = MusicgenForConditionalGeneration.from_pretrained(folder, dtype=getattr(torch, dtype))
    model.eval()
    return model, PreTrainedTokenizerFast.from_pretrained(folder)


@torch.no_grad()
def bench(folder, seconds, threads, device, dtype="float32"):
    if threads:
        torch.set_num_threads(threads)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    model, tok = load(folder, dtype)
    model = model.to(device)
    load_s = time.perf_counter() - t0
    inputs = tok(["80s pop track with bassy drums and synth"], padding=True, return_tensors="pt").to(device)
    max_new_tokens = int(seconds * 50) + 3

    codes = {}
    orig = model.audio_encoder.decode

    def timed_decode(audio_codes, *a, **kw):
        sync()
        start = time.perf_counter()
        out = orig(audio_codes, *a, **kw)
        sync()
        codes["decode_s"] = time.perf_counter() - start
        codes["codes"] = audio_codes
        return out

    model.audio_encoder.decode = timed_decode
    torch.manual_seed(0)
    sync()
    t0 = time.perf_counter()
    audio = model.generate(**inputs, do_sample=True, top_k=250, guidance_scale=3.0,
                           max_new_tokens=max_new_tokens)
    sync()
    gen_s = time.perf_counter() - t0
    model.audio_encoder.decode = orig
    audio_s = audio.shape[-1] / model.config.audio_encoder.sampling_rate

    sync()
    t0 = time.perf_counter()
    model.audio_encoder.decode(codes["codes"], [None])
    sync()
    decode_s = time.perf_counter() - t0

    sr = model.config.audio_encoder.sampling_rate
    noise = torch.randn(1, 1, int(seconds * sr), device=device, dtype=model.dtype) * 0.1
    sync()
    t0 = time.perf_counter()
    model.audio_encoder.encode(noise, bandwidth=model.config.audio_encoder.target_bandwidths[-1])
    sync()
    encode_s = time.perf_counter() - t0

    print(json.dumps({
        "impl": "transformers",
        "device": device,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "max_new_tokens": max_new_tokens,
        "load_s": round(load_s, 3),
        "generate_s": round(gen_s, 3),
        "steps_per_s": round(max_new_tokens / (gen_s - codes["decode_s"]), 2),
        "rtf": round(gen_s / audio_s, 3),
        "encodec_decode_s": round(decode_s, 3),
        "encodec_encode_s": round(encode_s, 3),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }))


@torch.no_grad()
def bench_encodec(folder, seconds, threads):
    """EnCodec alone: the same work as `cargo run --release --example bench_encodec`."""
    if threads:
        torch.set_num_threads(threads)
    from safetensors.torch import load_file
    from transformers import EncodecModel

    with open(os.path.join(folder, "config.json")) as f:
        cfg = EncodecConfig(**json.load(f)["audio_encoder"])
    t0 = time.perf_counter()
    model = EncodecModel(cfg).eval()
    state = {k[len("audio_encoder."):]: v for k, v in load_file(os.path.join(folder, "model.safetensors")).items()
             if k.startswith("audio_encoder.")}
    state = rename_weight_norm(state, "parametrizations")
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("parametrizations" not in m and "embed" not in m for m in missing), (missing, unexpected)
    load_s = time.perf_counter() - t0
    frames = int(seconds * cfg.frame_rate)
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, cfg.codebook_size, (1, 1, cfg.num_quantizers, frames), generator=g)
    t0 = time.perf_counter()
    audio = model.decode(codes, [None]).audio_values
    decode_s = time.perf_counter() - t0
    # The same decode again in a process that has run it once.
    t0 = time.perf_counter()
    model.decode(codes, [None])
    decode_warm_s = time.perf_counter() - t0
    noise = torch.randn(audio.shape, generator=g) * 0.1
    t0 = time.perf_counter()
    model.encode(noise, bandwidth=cfg.target_bandwidths[-1])
    encode_s = time.perf_counter() - t0
    print(json.dumps({"impl": "transformers", "threads": torch.get_num_threads(), "seconds": seconds,
                      "frames": frames, "samples": audio.shape[-1], "load_s": round(load_s, 3),
                      "encodec_decode_s": round(decode_s, 3), "encodec_decode_warm_s": round(decode_warm_s, 3),
                      "encodec_encode_s": round(encode_s, 3), "peak_rss_mib": round(peak_rss_mib(), 1)}))


def bench_load(folder, threads, dtype):
    """Seconds `from_pretrained` (model and tokenizer) takes, as in `time`, and nothing else;
    tests/reference/bench_load.sh runs it next to baton's examples/bench_load."""
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    load(folder, dtype)
    load_s = time.perf_counter() - t0
    print(json.dumps({"load_s": round(load_s, 3), "peak_rss_mib": round(peak_rss_mib(), 1)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("dir")
    t = sub.add_parser("time")
    t.add_argument("dir")
    t.add_argument("--seconds", type=float, default=10.0)
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--device", default="cpu", help="cpu or cuda")
    t.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    e = sub.add_parser("encodec", help="time EnCodec decode/encode alone")
    e.add_argument("dir")
    e.add_argument("--seconds", type=float, default=10.0)
    e.add_argument("--threads", type=int, default=0)
    lo = sub.add_parser("load", help="time from_pretrained alone")
    lo.add_argument("dir")
    lo.add_argument("--threads", type=int, default=0)
    lo.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = ap.parse_args()
    if args.cmd == "build":
        build(args.dir)
    elif args.cmd == "encodec":
        bench_encodec(args.dir, args.seconds, args.threads)
    elif args.cmd == "load":
        bench_load(args.dir, args.threads, args.dtype)
    else:
        bench(args.dir, args.seconds, args.threads, args.device, args.dtype)


if __name__ == "__main__":
    main()
