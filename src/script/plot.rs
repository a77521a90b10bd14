//! `plot(schedule)` / `plot(direction)`: a terminal sparkline, and a PNG when a path is given
//! (written under the output folder, like audio).
//!
//! Schedules are drawn over 0..30 s unless a length is given (`plot(s, 20.0)`); directions show
//! their per-block probe scores.

use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, NativeCallContext};

use super::schedules::num;
use super::{fail, sandbox, Host};
use crate::steer::{Direction, Schedule};

type Res<T> = Result<T, Box<EvalAltResult>>;

const DEFAULT_SECONDS: f64 = 30.0;
const COLUMNS: usize = 60;

/// A one-line sparkline of `values`, scaled to their own range, which it shows.
pub fn sparkline(values: &[f64]) -> String {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    sparkline_in(values, lo, hi)
}

/// A one-line sparkline of `values` on the fixed scale `lo..hi` (probabilities on 0..1, so a
/// flat line is not stretched into peaks).
pub fn sparkline_in(values: &[f64], lo: f64, hi: f64) -> String {
    format!(
        "{}  [{lo:.3} .. {hi:.3}]",
        crate::progress::bars(values, lo, hi)
    )
}

/// `n` values of `s` over `0..seconds`, user curves called through the interpreter.
fn schedule_values(
    host: &Host,
    ctx: &NativeCallContext,
    s: &Schedule,
    seconds: f64,
    n: usize,
) -> Res<Vec<f64>> {
    if !(seconds > 0.0 && seconds.is_finite()) {
        return fail(format!(
            "plot: length must be positive seconds, got {seconds}"
        ));
    }
    let dt = seconds / (n.max(2) - 1) as f64;
    super::with_curves(host, ctx, |curves| {
        s.sample(n, dt, curves).map_err(|e| e.to_string().into())
    })
}

fn direction_values(d: &Direction) -> Vec<f64> {
    let n = d
        .num_layers
        .max(d.vectors.keys().max().map_or(0, |l| l + 1));
    (0..n)
        .map(|l| d.scores.get(&l).copied().unwrap_or(0.0))
        .collect()
}

/// Encodes an 8-bit grayscale image as PNG (uncompressed deflate: plots are small).
pub fn png_gray(width: usize, height: usize, pixels: &[u8]) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut raw = Vec::with_capacity((width + 1) * height);
    for row in pixels.chunks(width) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        z.extend_from_slice(&(b.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(b.len() as u16)).to_le_bytes());
        z.extend_from_slice(b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + x as u32) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(height as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Draws `values` as a line (schedules) or bars (`bars`) on a white 480 x 160 canvas.
pub fn draw(values: &[f64], bars: bool) -> (usize, usize, Vec<u8>) {
    let (w, h, pad) = (480usize, 160usize, 8usize);
    let mut px = vec![255u8; w * h];
    let lo = values.iter().copied().fold(0.0f64, f64::min);
    let hi = values
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max)
        .max(lo + 1e-12);
    let y_of = |v: f64| {
        let x = (v - lo) / (hi - lo);
        pad + ((1.0 - x) * (h - 2 * pad - 1) as f64).round() as usize
    };
    let zero = y_of(0.0);
    for x in pad..w - pad {
        px[zero * w + x] = 160;
    }
    let n = values.len().max(1);
    let plot_w = w - 2 * pad;
    for x in 0..plot_w {
        let i = (x * n / plot_w).min(n - 1);
        let y = y_of(values[i]);
        let (a, b) = if bars {
            (y.min(zero), y.max(zero))
        } else {
            (y, y)
        };
        let (a, b) = if !bars && x > 0 {
            let prev = y_of(values[((x - 1) * n / plot_w).min(n - 1)]);
            (a.min(prev), b.max(prev))
        } else {
            (a, b)
        };
        for yy in a..=b {
            px[yy * w + pad + x] = 0;
        }
    }
    (w, h, px)
}

fn write_png(host: &Host, path: &str, values: &[f64], bars: bool) -> Res<()> {
    let out = sandbox::output_path(
        path,
        &host.options.out_dir,
        &host.options.allow_write,
        "png",
    )
    .or_else(fail)?;
    let (w, h, px) = draw(values, bars);
    let png = png_gray(w, h, &px);
    host.claim_output("plot", &out, png.len() as u64)?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)
            .or_else(|e| fail(format!("plot: cannot create {}: {e}", dir.display())))?;
    }
    crate::audio::write_atomic(&out, &png).or_else(|e| fail(e.to_string()))?;
    host.say(format!("wrote {}", out.display()));
    if let Ok(mut wr) = host.written.lock() {
        wr.push(out);
    }
    Ok(())
}

/// Registers `plot`.
pub(crate) fn register(engine: &mut Engine, host: &Arc<Host>) {
    let h = host.clone();
    engine.register_fn(
        "plot",
        move |ctx: NativeCallContext, s: Schedule| -> Res<()> {
            let v = schedule_values(&h, &ctx, &s, DEFAULT_SECONDS, COLUMNS)?;
            h.say(format!("{s}\n{}  over 0..{DEFAULT_SECONDS}", sparkline(&v)));
            Ok(())
        },
    );
    let h = host.clone();
    engine.register_fn(
        "plot",
        move |ctx: NativeCallContext, s: Schedule, arg: Dynamic| -> Res<()> {
            if let Ok(path) = arg.clone().into_string() {
                let v = schedule_values(&h, &ctx, &s, DEFAULT_SECONDS, 480)?;
                return write_png(&h, &path, &v, false);
            }
            let secs = num(&arg, "plot: length")?;
            let v = schedule_values(&h, &ctx, &s, secs, COLUMNS)?;
            h.say(format!("{s}\n{}  over 0..{secs}", sparkline(&v)));
            Ok(())
        },
    );
    let h = host.clone();
    engine.register_fn(
        "plot",
        move |ctx: NativeCallContext, s: Schedule, secs: Dynamic, path: &str| -> Res<()> {
            let v = schedule_values(&h, &ctx, &s, num(&secs, "plot: length")?, 480)?;
            write_png(&h, path, &v, false)
        },
    );
    let h = host.clone();
    engine.register_fn("plot", move |d: Direction| {
        h.say(format!(
            "{d}\nscores by block: {}",
            sparkline(&direction_values(&d))
        ));
    });
    let h = host.clone();
    engine.register_fn("plot", move |d: Direction, path: &str| -> Res<()> {
        write_png(&h, path, &direction_values(&d), true)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_has_signature_and_chunks() {
        let (w, h, px) = draw(&[0.0, 0.5, 1.0], false);
        let png = png_gray(w, h, &px);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
    }

    #[test]
    fn sparkline_spans_the_range() {
        let s = sparkline(&[0.0, 1.0]);
        assert!(s.starts_with("▁█"));
    }
}
