//! Times baton's EnCodec decode (and encode) of N seconds on a MusicGen checkpoint folder, the
//! Rust half of `tests/reference/bench_small_shaped.py`.
//!
//! ```text
//! python tests/reference/bench_small_shaped.py build /tmp/small-shaped
//! cargo run --example bench_encodec -- /tmp/small-shaped [SECONDS]
//! ```
//! Prints one JSON line: decode seconds (whole, a second time in the same process, and streamed 10 frames at a time as a
//! performance decodes, with the stream's SNR against the whole decode), encode seconds and the
//! process's peak RSS.

use std::time::Instant;

use baton::model::encodec::{Encodec, EncodecConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

#[path = "support/peak_rss.rs"]
mod peak_rss;
use peak_rss::peak_rss_mib;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().ok_or("usage: bench_encodec DIR [SECONDS]")?);
    let seconds: f64 = args.next().map_or(Ok(10.0), |s| s.parse())?;
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    let cfg: EncodecConfig = serde_json::from_value(config["audio_encoder"].clone())?;
    let device = Device::Cpu;
    let start = Instant::now();
    // SAFETY: the checkpoint is not modified while it is mapped.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &device)?
    };
    let codec = Encodec::load(vb.pp("audio_encoder"), &cfg)?;
    let load_s = start.elapsed().as_secs_f64();

    let frames = (seconds * cfg.frame_rate() as f64).round() as usize;
    let k = codec.num_codebooks();
    // Deterministic pseudo-random codes (an LCG keeps the example dependency-free).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let codes: Vec<u32> = (0..k * frames)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % cfg.codebook_size as u64) as u32
        })
        .collect();
    let codes = Tensor::from_vec(codes, (1, k, frames), &device)?;
    let start = Instant::now();
    let audio = codec.decode(&codes)?;
    let decode_s = start.elapsed().as_secs_f64();

    // The same codes decoded as a performance does: 10 frames (0.2 s) at a time.
    let start = Instant::now();
    let mut stream = codec.decode_stream()?;
    let mut parts = Vec::new();
    let mut at = 0;
    while at < frames {
        let n = 10.min(frames - at);
        parts.push(stream.push(&codes.narrow(2, at, n)?)?);
        at += n;
    }
    parts.push(stream.finish()?);
    let streamed = Tensor::cat(&parts, 2)?;
    let stream_s = start.elapsed().as_secs_f64();
    let whole: Vec<f32> = audio.flatten_all()?.to_vec1()?;
    let streamed: Vec<f32> = streamed.flatten_all()?.to_vec1()?;
    let signal: f64 = whole.iter().map(|x| (*x as f64).powi(2)).sum();
    let noise_power: f64 = whole
        .iter()
        .zip(&streamed)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    let snr_db = 10.0 * (signal / noise_power.max(1e-30)).log10();

    // The same decode again in a process that has run it once (as transformers' `time` reports).
    let start = Instant::now();
    codec.decode(&codes)?;
    let decode_warm_s = start.elapsed().as_secs_f64();

    let noise = (Tensor::randn(0f32, 1.0, audio.shape(), &device)? * 0.1)?;
    let start = Instant::now();
    codec.encode(&noise, k)?;
    let encode_s = start.elapsed().as_secs_f64();

    println!(
        "{}",
        serde_json::json!({
            "impl": "baton",
            "seconds": seconds,
            "frames": frames,
            "samples": audio.dims()[2],
            "load_s": load_s,
            "encodec_decode_s": decode_s,
            "encodec_decode_warm_s": decode_warm_s,
            "encodec_stream_decode_s": stream_s,
            "stream_lag_frames": codec.decode_stream()?.context(),
            "stream_snr_db": snr_db,
            "encodec_encode_s": encode_s,
            "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(())
}
