//! Times loading a MusicGen checkpoint folder with baton, the Rust half of
//! `tests/reference/bench_load.sh` (which runs transformers' `from_pretrained` next to it).
//!
//! ```text
//! python tests/reference/bench_small_shaped.py build /tmp/small-shaped
//! cargo run --release --example bench_load -- /tmp/small-shaped [f32|bf16|q8|q4]
//! ```
//! Prints one JSON line: load seconds (config, tokenizer, T5, EnCodec and decoder, as `baton
//! render` loads them), MiB of decoder weights used in place from the file's memory map
//! (`BATON_MAP_WEIGHTS=0` reads them into memory instead) and the process's peak RSS.

use std::time::Instant;

use baton::model::{MusicGen, WeightFormat};
use candle_core::Device;

#[path = "support/peak_rss.rs"]
mod peak_rss;
use peak_rss::peak_rss_mib;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: bench_load DIR [f32|bf16|q8|q4]")?;
    let format: WeightFormat = args.next().as_deref().unwrap_or("f32").parse()?;
    let start = Instant::now();
    let model = MusicGen::load_as(&dir, &Device::Cpu, format)?;
    let load_s = start.elapsed().as_secs_f64();
    println!(
        "{{\"load_s\": {load_s:.3}, \"mapped_mib\": {:.1}, \"peak_rss_mib\": {:.1}}}",
        model.mapped_bytes() as f64 / (1 << 20) as f64,
        peak_rss_mib()
    );
    Ok(())
}
