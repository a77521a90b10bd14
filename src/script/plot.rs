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

/// A white 560 x 240 canvas with a plot area mapping `x_lo..x_hi` and `y_lo..y_hi`, on which
/// [`Canvas::frame`] draws the axes, ticks and labels every PNG plot shares.
struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
    /// The plot area, in pixels.
    x0: usize,
    x1: usize,
    y0: usize,
    y1: usize,
    /// The values at the plot area's edges.
    x_lo: f64,
    x_hi: f64,
    y_lo: f64,
    y_hi: f64,
}

impl Canvas {
    fn new(x_lo: f64, x_hi: f64, y_lo: f64, y_hi: f64) -> Self {
        let (w, h) = (560usize, 240usize);
        let (left, right, top, bottom) = (64usize, 16usize, 24usize, 40usize);
        Canvas {
            w,
            h,
            px: vec![255u8; w * h],
            x0: left,
            x1: w - right,
            y0: top,
            y1: h - bottom,
            x_lo,
            x_hi: x_hi.max(x_lo + 1e-12),
            y_lo,
            y_hi: y_hi.max(y_lo + 1e-12),
        }
    }

    fn y_of(&self, v: f64) -> usize {
        let f = ((v - self.y_lo) / (self.y_hi - self.y_lo)).clamp(0.0, 1.0);
        self.y0 + ((1.0 - f) * (self.y1 - self.y0) as f64).round() as usize
    }

    fn x_of(&self, v: f64) -> usize {
        let f = ((v - self.x_lo) / (self.x_hi - self.x_lo)).clamp(0.0, 1.0);
        self.x0 + (f * (self.x1 - self.x0) as f64).round() as usize
    }

    /// Blackens pixel `(x, y)` when it is on the canvas.
    fn dot(&mut self, x: usize, y: usize) {
        if x < self.w && y < self.h {
            self.px[y * self.w + x] = 0;
        }
    }

    /// The axes, the zero line when the values go below it, round-numbered ticks with their
    /// labels (`bar_ticks`: whole numbers only, for bars that stand for whole things), and the
    /// axes' labels.
    fn frame(&mut self, x_label: &str, y_label: &str, bar_ticks: bool) {
        let (w, x0, x1, y0, y1) = (self.w, self.x0, self.x1, self.y0, self.y1);
        for y in y0..=y1 {
            self.px[y * w + x0] = 0;
        }
        let zero = (self.y_lo < 0.0).then(|| self.y_of(0.0));
        for x in x0..=x1 {
            self.px[y1 * w + x] = 0;
            if let Some(z) = zero {
                self.px[z * w + x] = 170;
            }
        }
        let (y_ticks, y_step) = ticks(self.y_lo, self.y_hi, 4);
        for v in y_ticks {
            let y = self.y_of(v);
            for x in x0 - 4..x0 {
                self.px[y * w + x] = 0;
            }
            let label = tick_label(v, y_step);
            let lx = (x0 - 6).saturating_sub(label.len() * 8);
            text(&mut self.px, w, lx, y.saturating_sub(4), &label);
        }
        let (mut x_ticks, mut x_step) = ticks(self.x_lo, self.x_hi, 6);
        if bar_ticks && x_step < 1.0 {
            x_ticks = (self.x_lo.ceil().max(0.0) as usize..=self.x_hi as usize)
                .map(|i| i as f64)
                .collect();
            x_step = 1.0;
        }
        for v in x_ticks {
            let x = self.x_of(v);
            for y in y1..y1 + 4 {
                self.px[y * w + x] = 0;
            }
            let label = tick_label(v, x_step);
            text(
                &mut self.px,
                w,
                x.saturating_sub(label.len() * 4),
                y1 + 6,
                &label,
            );
        }
        let h = self.h;
        text(
            &mut self.px,
            w,
            (x0 + x1) / 2 - (x_label.len() * 4).min((x0 + x1) / 2),
            h - 14,
            x_label,
        );
        text(&mut self.px, w, 4, 6, y_label);
    }

    /// The legend: a sample of the line and the series' name (cut to 40 characters), boxed, at
    /// the top right.
    fn legend(&mut self, legend: &str) {
        let w = self.w;
        let name: String = legend.chars().take(40).collect();
        let (bw, bh) = (name.len() * 8 + 34, 16);
        let (bx, by) = (self.x1.saturating_sub(bw + 4), self.y0 + 2);
        for x in bx..bx + bw {
            for y in by..by + bh {
                let edge = x == bx || x == bx + bw - 1 || y == by || y == by + bh - 1;
                self.px[y * w + x] = if edge { 0 } else { 255 };
            }
        }
        for x in bx + 4..bx + 22 {
            self.px[(by + bh / 2) * w + x] = 0;
        }
        text(&mut self.px, w, bx + 28, by + 4, &name);
    }

    /// A straight line from `a` to `b` (pixels), one dot per step along the longer side.
    fn line(&mut self, a: (usize, usize), b: (usize, usize)) {
        let (dx, dy) = (b.0 as f64 - a.0 as f64, b.1 as f64 - a.1 as f64);
        let n = dx.abs().max(dy.abs()).max(1.0) as usize;
        for i in 0..=n {
            let f = i as f64 / n as f64;
            let x = (a.0 as f64 + f * dx).round() as usize;
            let y = (a.1 as f64 + f * dy).round() as usize;
            self.dot(x, y);
        }
    }

    fn finish(self) -> (usize, usize, Vec<u8>) {
        (self.w, self.h, self.px)
    }
}

/// Draws `values` as a line (schedules) or bars (`bars`) on a white 560 x 240 canvas, with
/// axes, round-numbered ticks and their labels, the axes' labels and a legend.
pub fn draw(values: &[f64], bars: bool, axes: &Axes) -> (usize, usize, Vec<u8>) {
    let lo = values.iter().copied().fold(0.0f64, f64::min);
    let hi = values
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max)
        .max(lo + 1e-12);
    let mut c = Canvas::new(0.0, axes.x_max.max(1e-12), lo, hi);
    c.frame(axes.x_label, axes.y_label, bars);
    // The series.
    let n = values.len().max(1);
    let plot_w = c.x1 - c.x0;
    let base = c.y_of(0.0f64.max(lo));
    for x in 1..plot_w {
        let i = (x * n / plot_w).min(n - 1);
        let y = c.y_of(values[i]);
        let (a, b) = if bars {
            (y.min(base), y.max(base))
        } else {
            let prev = c.y_of(values[((x - 1) * n / plot_w).min(n - 1)]);
            (y.min(prev), y.max(prev))
        };
        for yy in a..=b {
            c.dot(c.x0 + x, yy);
        }
    }
    c.legend(&axes.legend);
    c.finish()
}

/// One labelled point of a [`draw_curve`] plot.
#[derive(Debug, Clone)]
pub struct CurvePoint {
    /// Where it is.
    pub x: f64,
    /// See `x`.
    pub y: f64,
    /// The text beside it (a strength, say).
    pub label: String,
}

/// Draws `points` as a curve: each a small square with its label beside it, joined in the
/// order given by straight lines (a sweep's trade-off curve, strength by strength), on the
/// canvas and axes [`draw`] uses. The axes span the points with a margin; non-finite points are
/// left out.
pub fn draw_curve(
    points: &[CurvePoint],
    x_label: &str,
    y_label: &str,
    legend: &str,
) -> (usize, usize, Vec<u8>) {
    let shown: Vec<&CurvePoint> = points
        .iter()
        .filter(|p| p.x.is_finite() && p.y.is_finite())
        .collect();
    let range = |v: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
        if !lo.is_finite() {
            return (0.0, 1.0);
        }
        // A margin, so no point sits on an axis; a single value gets a span around it.
        let pad = ((hi - lo) * 0.08)
            .max(lo.abs().max(hi.abs()) * 0.01)
            .max(1e-6);
        (lo - pad, hi + pad)
    };
    let (x_lo, x_hi) = range(&mut shown.iter().map(|p| p.x));
    let (y_lo, y_hi) = range(&mut shown.iter().map(|p| p.y));
    // Room at the top for the legend, so it hides no point.
    let y_hi = y_hi + (y_hi - y_lo) * 0.15;
    let mut c = Canvas::new(x_lo, x_hi, y_lo, y_hi);
    c.frame(x_label, y_label, false);
    let at: Vec<(usize, usize)> = shown.iter().map(|p| (c.x_of(p.x), c.y_of(p.y))).collect();
    for pair in at.windows(2) {
        c.line(pair[0], pair[1]);
    }
    for (i, (p, &(x, y))) in shown.iter().zip(&at).enumerate() {
        for dx in 0..5 {
            for dy in 0..5 {
                c.dot((x + dx).saturating_sub(2), (y + dy).saturating_sub(2));
            }
        }
        // Labels right of the point, or left of it near the right edge.
        let width = p.label.len() * 8;
        let lx = if x + 6 + width < c.x1 {
            x + 6
        } else {
            x.saturating_sub(6 + width)
        };
        // Above the point, and below it every other point, so neighbours' labels rarely meet.
        let ly = if i % 2 == 0 {
            y.saturating_sub(10)
        } else {
            y + 3
        };
        text(&mut c.px, c.w, lx, ly, &p.label);
    }
    c.legend(legend);
    c.finish()
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
    fn a_curve_plot_marks_and_joins_its_points() {
        let p = |x, y, label: &str| CurvePoint {
            x,
            y,
            label: label.into(),
        };
        let points = [p(0.30, 0.1, "0"), p(0.25, 0.5, "0.3"), p(0.10, 0.9, "0.6")];
        let (w, h, px) = draw_curve(&points, "CLAP", "mean p(C#)", "notes:C#");
        assert_eq!((w, h), (560, 240));
        let dark = |x0: usize, x1: usize, y0: usize, y1: usize| {
            (y0..y1)
                .filter(|y| (x0..x1).any(|x| px[y * w + x] == 0))
                .count()
        };
        // Axes, labels and legend as the other plots have them.
        assert!((24..200).all(|y| px[y * w + 64] == 0));
        assert!(dark(0, 58, 30, 200) > 0, "no y tick labels");
        assert!(dark(64, 544, 206, 214) > 0, "no x tick labels");
        // Each point is a filled square where the axes put it; the line between the first two
        // crosses the plot between them.
        let c = Canvas::new(0.0, 1.0, 0.0, 1.0);
        assert_eq!((c.x_of(0.0), c.x_of(1.0)), (64, 544));
        for (x, y) in [(0.30f64, 0.1f64), (0.10, 0.9)] {
            let (lo, hi) = (0.10 - 0.016, 0.30 + 0.016);
            let xp = 64 + ((x - lo) / (hi - lo) * 480.0).round() as usize;
            let (ylo, yhi) = (0.1 - 0.064, 0.9 + 0.064);
            let yhi = yhi + (yhi - ylo) * 0.15;
            let yp = 24 + ((1.0 - (y - ylo) / (yhi - ylo)) * 176.0).round() as usize;
            assert!(
                (yp - 1..=yp + 1).all(|yy| (xp - 1..=xp + 1).all(|xx| px[yy * w + xx] == 0)),
                "no mark at {x}, {y}"
            );
        }
        // Nothing drawn for no points, and no panic.
        let (_, _, empty) = draw_curve(&[], "x", "y", "none");
        assert!(empty.contains(&0));
    }

    #[test]
    fn sparkline_spans_the_range() {
        let s = sparkline(&[0.0, 1.0]);
        assert!(s.starts_with("▁█"));
    }
}
