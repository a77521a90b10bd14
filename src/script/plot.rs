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

/// What a PNG plot's axes say: x runs over `0..x_max`, labelled `x_label`; the values are
/// `y_label`, and the legend names the series.
pub struct Axes {
    /// The x value of the last sample (seconds, or blocks for bars).
    pub x_max: f64,
    /// Under the x axis.
    pub x_label: &'static str,
    /// Above the y axis.
    pub y_label: &'static str,
    /// The series' name, in a box at the top right (cut to 40 characters).
    pub legend: String,
}

/// About `n` round values (1, 2 or 5 times a power of ten apart) from `lo` to `hi`, and their
/// step.
fn ticks(lo: f64, hi: f64, n: usize) -> (Vec<f64>, f64) {
    let raw = ((hi - lo) / n.max(1) as f64).max(1e-12);
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power);
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi + step * 1e-9 && out.len() < 50 {
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
    }
    (out, step)
}

/// A tick's label with as many decimals as its step needs.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

/// Writes `text` (ASCII, 8 x 8 pixels a character) with its top left at `(x, y)`.
fn text(px: &mut [u8], w: usize, x: usize, y: usize, text: &str) {
    for (i, c) in text.chars().enumerate() {
        let glyph = font8x8::legacy::BASIC_LEGACY
            .get(c as usize)
            .copied()
            .unwrap_or([0; 8]);
        for (r, row) in glyph.iter().enumerate() {
            for col in 0..8 {
                let (xx, yy) = (x + i * 8 + col, y + r);
                if row >> col & 1 == 1 && xx < w && yy * w + xx < px.len() {
                    px[yy * w + xx] = 0;
                }
            }
        }
    }
}

/// Draws `values` as a line (schedules) or bars (`bars`) on a white 560 x 240 canvas, with
/// axes, round-numbered ticks and their labels, the axes' labels and a legend.
pub fn draw(values: &[f64], bars: bool, axes: &Axes) -> (usize, usize, Vec<u8>) {
    let (w, h) = (560usize, 240usize);
    let (left, right, top, bottom) = (64usize, 16usize, 24usize, 40usize);
    let (x0, x1, y0, y1) = (left, w - right, top, h - bottom);
    let mut px = vec![255u8; w * h];
    let lo = values.iter().copied().fold(0.0f64, f64::min);
    let hi = values
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max)
        .max(lo + 1e-12);
    let y_of = |v: f64| {
        let f = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
        y0 + ((1.0 - f) * (y1 - y0) as f64).round() as usize
    };
    let x_max = axes.x_max.max(1e-12);
    let x_of = |v: f64| x0 + ((v / x_max).clamp(0.0, 1.0) * (x1 - x0) as f64).round() as usize;
    // Axes, and the zero line when the values go below it.
    for y in y0..=y1 {
        px[y * w + x0] = 0;
    }
    for x in x0..=x1 {
        px[y1 * w + x] = 0;
        if lo < 0.0 {
            px[y_of(0.0) * w + x] = 170;
        }
    }
    let (y_ticks, y_step) = ticks(lo, hi, 4);
    for v in y_ticks {
        let y = y_of(v);
        for x in x0 - 4..x0 {
            px[y * w + x] = 0;
        }
        let label = tick_label(v, y_step);
        let lx = (x0 - 6).saturating_sub(label.len() * 8);
        text(&mut px, w, lx, y.saturating_sub(4), &label);
    }
    let (mut x_ticks, mut x_step) = ticks(0.0, x_max, 6);
    if bars && x_step < 1.0 {
        // Bars stand for whole things (blocks): no ticks between them.
        x_ticks = (0..=x_max as usize).map(|i| i as f64).collect();
        x_step = 1.0;
    }
    for v in x_ticks {
        let x = x_of(v);
        for y in y1..y1 + 4 {
            px[y * w + x] = 0;
        }
        let label = tick_label(v, x_step);
        text(
            &mut px,
            w,
            x.saturating_sub(label.len() * 4),
            y1 + 6,
            &label,
        );
    }
    text(
        &mut px,
        w,
        (x0 + x1) / 2 - (axes.x_label.len() * 4).min((x0 + x1) / 2),
        h - 14,
        axes.x_label,
    );
    text(&mut px, w, 4, 6, axes.y_label);
    // The series.
    let n = values.len().max(1);
    let plot_w = x1 - x0;
    let base = y_of(0.0f64.max(lo));
    for x in 1..plot_w {
        let i = (x * n / plot_w).min(n - 1);
        let y = y_of(values[i]);
        let (a, b) = if bars {
            (y.min(base), y.max(base))
        } else {
            let prev = y_of(values[((x - 1) * n / plot_w).min(n - 1)]);
            (y.min(prev), y.max(prev))
        };
        for yy in a..=b {
            px[yy * w + x0 + x] = 0;
        }
    }
    // The legend: a sample of the line and the series' name, boxed, at the top right.
    let name: String = axes.legend.chars().take(40).collect();
    let (bw, bh) = (name.len() * 8 + 34, 16);
    let (bx, by) = (x1.saturating_sub(bw + 4), y0 + 2);
    for x in bx..bx + bw {
        for y in by..by + bh {
            let edge = x == bx || x == bx + bw - 1 || y == by || y == by + bh - 1;
            px[y * w + x] = if edge { 0 } else { 255 };
        }
    }
    for x in bx + 4..bx + 22 {
        px[(by + bh / 2) * w + x] = 0;
    }
    text(&mut px, w, bx + 28, by + 4, &name);
    (w, h, px)
}

fn write_png(host: &Host, path: &str, values: &[f64], bars: bool, axes: &Axes) -> Res<()> {
    let out = sandbox::output_path(
        path,
        &host.options.out_dir,
        &host.options.allow_write,
        "png",
    )
    .or_else(fail)?;
    let (w, h, px) = draw(values, bars, axes);
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

/// The axes of a schedule's plot over `0..seconds`, the schedule's text as its legend.
fn schedule_axes(s: &Schedule, seconds: f64) -> Axes {
    Axes {
        x_max: seconds,
        x_label: "time (s; beats with a tempo)",
        y_label: "strength",
        legend: s.to_string(),
    }
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
                return write_png(&h, &path, &v, false, &schedule_axes(&s, DEFAULT_SECONDS));
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
            let secs = num(&secs, "plot: length")?;
            let v = schedule_values(&h, &ctx, &s, secs, 480)?;
            write_png(&h, path, &v, false, &schedule_axes(&s, secs))
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
        let v = direction_values(&d);
        let axes = Axes {
            x_max: v.len() as f64,
            x_label: "decoder block",
            y_label: "probe score by block",
            legend: d.name.clone(),
        };
        write_png(&h, path, &v, true, &axes)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_has_signature_and_chunks() {
        let axes = Axes {
            x_max: 2.0,
            x_label: "time (s)",
            y_label: "strength",
            legend: "rise".into(),
        };
        let (w, h, px) = draw(&[0.0, 0.5, 1.0], false, &axes);
        let png = png_gray(w, h, &px);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
    }

    #[test]
    fn a_png_plot_has_axes_tick_labels_and_a_legend() {
        let axes = Axes {
            x_max: 10.0,
            x_label: "time (s)",
            y_label: "strength",
            legend: "rise".into(),
        };
        let (w, h, px) = draw(&[0.0, 0.25, 0.5, 0.75, 1.0], false, &axes);
        let dark = |x0: usize, x1: usize, y0: usize, y1: usize| {
            (y0..y1).any(|y| (x0..x1).any(|x| px[y * w + x] == 0))
        };
        // The y axis runs down the left margin's edge, the x axis along the bottom's.
        assert!((24..200).all(|y| px[y * w + 64] == 0));
        assert!((64..544).all(|x| px[200 * w + x] == 0));
        // Tick labels left of the y axis and under the x axis, the x label under them, the y
        // label above, and the legend box at the top right.
        assert!(dark(0, 58, 30, 200), "no y tick labels");
        assert!(dark(64, 544, 206, 214), "no x tick labels");
        assert!(dark(200, 360, h - 14, h - 6), "no x label");
        assert!(dark(0, 80, 6, 14), "no y label");
        assert!(dark(480, 544, 26, 42), "no legend");
        assert_eq!(ticks(0.0, 10.0, 6).0, vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(tick_label(0.5, 0.1), "0.5");
    }

    #[test]
    fn sparkline_spans_the_range() {
        let s = sparkline(&[0.0, 1.0]);
        assert!(s.starts_with("▁█"));
    }
}
