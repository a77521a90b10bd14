//! Times CLAP's audio embedding on a checkpoint folder: seconds of audio embedded per second.
//!
//! `cargo run --release --example bench_clap -- FOLDER [SECONDS]` (default 30 s, three 10 s
//! windows). tests/reference/bench_clap.py builds a random checkpoint shaped like
//! laion/larger_clap_music, times transformers on the same audio, and runs this.
use std::time::Instant;

use baton::eval::clap::Clap;
use candle_core::Device;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let folder = args.next().ok_or("usage: bench_clap FOLDER [SECONDS]")?;
    let seconds: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(30.0);
    let t = Instant::now();
    let clap = Clap::load(&folder, &Device::Cpu)?;
    eprintln!("loaded in {:.1} s", t.elapsed().as_secs_f64());
    let rate = clap.sample_rate();
    let n = (seconds * rate as f64) as usize;
    let audio: Vec<f32> = (0..n)
        .map(|i| {
            let t = i as f64 / rate as f64;
            (0.3 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                + 0.2 * (2.0 * std::f64::consts::PI * 1234.5 * t).sin()) as f32
        })
        .collect();
    // One window first, so allocation and first-touch costs are not counted.
    let window = &audio[..clap.window_samples().min(n)];
    clap.embed_input(window)?;
    let t = Instant::now();
    clap.features().log_mel(window);
    eprintln!("log-mel of one window: {:.3} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let e = clap.embed_audio(&audio, rate)?;
    let dt = t.elapsed().as_secs_f64();
    println!(
        "baton: {seconds:.1} s of audio in {dt:.2} s = {:.2} audio s/s (embedding dim {})",
        seconds / dt,
        e.len()
    );
    Ok(())
}
