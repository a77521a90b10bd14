//! Time schedules: pure functions of time that shape a steering strength.
//!
//! Time is in seconds, or in beats when the piece has a tempo. A schedule is a small expression
//! tree; evaluating it never touches the script interpreter, except for [`Schedule::custom`]
//! nodes, which the caller samples up front through the `ext` callback of
//! [`Schedule::eval_with`] (once per generation step, before the decoder runs).

use crate::seed::{splitmix64, unit_from_hash};
use std::f64::consts::TAU;
use std::fmt;
use std::sync::Arc;

/// A time-varying value, cheap to clone (shared expression tree).
///
/// Evaluating, printing, comparing and dropping a schedule recurse on the native stack once
/// per level of its tree, so callers that build trees from untrusted input (recipes) refuse
/// ones deeper than [`MAX_DEPTH`] (see [`Schedule::depth`]).
#[derive(Clone, PartialEq)]
pub struct Schedule {
    node: Arc<Node>,
    depth: usize,
}

/// The deepest schedule tree recipes may build: far more than any piece needs (a sum of 100
/// curves is 100 deep), far less than what overflows a thread's stack.
pub const MAX_DEPTH: usize = 1000;

/// How [`Schedule::keyframes`] interpolates between keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interp {
    /// Straight lines between keys.
    Linear,
    /// Smoothstep between keys (flat at every key, no overshoot).
    Smooth,
}

/// Binary operators of schedule arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
}

#[derive(Clone, PartialEq)]
enum Node {
    Const(f64),
    Linear {
        from: f64,
        to: f64,
        t0: f64,
        t1: f64,
    },
    ExpDecay {
        rate: f64,
    },
    Logistic {
        center: f64,
        width: f64,
    },
    Sine {
        period: f64,
        phase: f64,
    },
    Cosine {
        period: f64,
        phase: f64,
    },
    Square {
        period: f64,
        duty: f64,
    },
    Step {
        at: f64,
        value: f64,
    },
    Adsr {
        attack: f64,
        decay: f64,
        sustain: f64,
        release: f64,
        note_off: f64,
    },
    Keyframes {
        keys: Vec<(f64, f64)>,
        interp: Interp,
    },
    Noise {
        seed: u64,
        rate: f64,
    },
    Binary(Op, Schedule, Schedule),
    Clamp(Schedule, f64, f64),
    Shift(Schedule, f64),
    Stretch(Schedule, f64),
    Reverse(Schedule, f64),
    Seq(Vec<(Schedule, f64)>),
    Repeat(Schedule, f64),
    Crossfade {
        a: Schedule,
        b: Schedule,
        t0: f64,
        t1: f64,
    },
    Mix(Schedule, Schedule, Schedule),
    Custom {
        id: usize,
        label: String,
    },
    Knob {
        cc: usize,
        initial: f64,
    },
}

/// The frame rate the paper's per-step constants refer to (MusicGen's 50 Hz).
pub const PAPER_FRAME_RATE: f64 = 50.0;

/// A schedule could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// A user function failed or returned something that is not a number.
    #[error("schedule function `{label}` failed at t = {t}: {message}")]
    Custom {
        label: String,
        t: f64,
        message: String,
    },
    /// Arithmetic produced NaN or infinity (e.g. a division by a schedule that reaches 0).
    #[error("schedule `{schedule}` is not finite at t = {t}")]
    NotFinite { schedule: String, t: f64 },
}

fn smoothstep(x: f64) -> f64 {
    let x = x.clamp(0.0, 1.0);
    x * x * (3.0 - 2.0 * x)
}

/// 0 -> 1 ramp between t0 and t1; a step at t0 when t1 <= t0.
fn ramp(t: f64, t0: f64, t1: f64) -> f64 {
    if t1 <= t0 {
        return if t >= t0 { 1.0 } else { 0.0 };
    }
    ((t - t0) / (t1 - t0)).clamp(0.0, 1.0)
}

fn noise_value(seed: u64, knot: i64) -> f64 {
    unit_from_hash(splitmix64(seed ^ splitmix64(knot as u64)))
}

impl Schedule {
    fn new(node: Node) -> Self {
        let below = match &node {
            Node::Binary(_, a, b) | Node::Crossfade { a, b, .. } => a.depth.max(b.depth),
            Node::Mix(a, b, w) => a.depth.max(b.depth).max(w.depth),
            Node::Clamp(s, ..)
            | Node::Shift(s, _)
            | Node::Stretch(s, _)
            | Node::Reverse(s, _)
            | Node::Repeat(s, _) => s.depth,
            Node::Seq(parts) => parts.iter().map(|(s, _)| s.depth).max().unwrap_or(0),
            _ => 0,
        };
        Schedule {
            node: Arc::new(node),
            depth: below + 1,
        }
    }

    /// Levels of the expression tree (1 for a leaf such as `constant(1)`).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The same value at all times.
    pub fn constant(value: f64) -> Self {
        Self::new(Node::Const(value))
    }

    /// `from` until `t0`, a straight line to `to` at `t1`, then `to`.
    pub fn linear(from: f64, to: f64, t0: f64, t1: f64) -> Self {
        Self::new(Node::Linear { from, to, t0, t1 })
    }

    /// `rate ^ (t * 50)`: `rate` is the factor per 20 ms frame, the paper's convention
    /// (`exp_decay(0.998)` is its `0.998^t` with t in 50 Hz steps).
    pub fn exp_decay(rate: f64) -> Self {
        Self::new(Node::ExpDecay { rate })
    }

    /// `1 / (1 + exp(-(t - center) / width))`.
    pub fn logistic(center: f64, width: f64) -> Self {
        Self::new(Node::Logistic { center, width })
    }

    /// `(1 + sin(2 pi (t / period + phase))) / 2`: an LFO between 0 and 1; `phase` in cycles.
    pub fn sine(period: f64, phase: f64) -> Self {
        Self::new(Node::Sine { period, phase })
    }

    /// `(1 + cos(2 pi (t / period + phase))) / 2`: starts at 1; `phase` in cycles.
    pub fn cosine(period: f64, phase: f64) -> Self {
        Self::new(Node::Cosine { period, phase })
    }

    /// 1 during the first `duty` fraction of every period, else 0.
    pub fn square(period: f64, duty: f64) -> Self {
        Self::new(Node::Square { period, duty })
    }

    /// 0 before `at`, `value` from `at` on.
    pub fn step(at: f64, value: f64) -> Self {
        Self::new(Node::Step { at, value })
    }

    /// Envelope: 0 -> 1 over `attack`, down to `sustain` over `decay`, held until `note_off`,
    /// then to 0 over `release` (all times in the schedule's unit).
    pub fn adsr(attack: f64, decay: f64, sustain: f64, release: f64, note_off: f64) -> Self {
        Self::new(Node::Adsr {
            attack,
            decay,
            sustain,
            release,
            note_off,
        })
    }

    /// Interpolates `(time, value)` keys (sorted here); holds the first and last values outside.
    pub fn keyframes(mut keys: Vec<(f64, f64)>, interp: Interp) -> Self {
        keys.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self::new(Node::Keyframes { keys, interp })
    }

    /// Smooth seeded value noise in [0, 1): `rate` random knots per time unit, smoothstep between.
    pub fn noise(seed: u64, rate: f64) -> Self {
        Self::new(Node::Noise { seed, rate })
    }

    /// A value computed by the caller (a recipe's function of t), sampled through the `ext`
    /// callback of [`Schedule::eval_with`]; `id` identifies it to that callback.
    pub fn custom(id: usize, label: impl Into<String>) -> Self {
        Self::new(Node::Custom {
            id,
            label: label.into(),
        })
    }

    /// The value of knob `cc` (a MIDI controller, 0..=127; see [`super::knobs`]) when each step
    /// is generated, `initial` until the knob is first moved.
    pub fn knob(cc: usize, initial: f64) -> Result<Self, String> {
        if cc >= super::knobs::KNOBS {
            return Err(format!(
                "knob numbers are MIDI controllers, 0 to 127: got {cc}"
            ));
        }
        if !(0.0..=1.0).contains(&initial) {
            return Err(format!("a knob's initial value is 0 to 1: got {initial}"));
        }
        Ok(Self::new(Node::Knob { cc, initial }))
    }

    /// True when the schedule reads a knob: its value is only known as each step is made.
    pub fn has_knob(&self) -> bool {
        let mut found = false;
        self.visit(&mut |n| found |= matches!(n, Node::Knob { .. }));
        found
    }

    /// Pointwise `self op other`.
    pub fn binary(&self, op: Op, other: &Schedule) -> Self {
        Self::new(Node::Binary(op, self.clone(), other.clone()))
    }

    /// Limits values to `[lo, hi]`.
    pub fn clamp(&self, lo: f64, hi: f64) -> Self {
        Self::new(Node::Clamp(self.clone(), lo, hi))
    }

    /// Delays by `dt`: the new schedule at t is the old one at `t - dt`.
    pub fn shift(&self, dt: f64) -> Self {
        Self::new(Node::Shift(self.clone(), dt))
    }

    /// Slows down by `factor` (2 = twice as long): the new schedule at t is the old at `t / factor`.
    pub fn stretch(&self, factor: f64) -> Self {
        Self::new(Node::Stretch(self.clone(), factor))
    }

    /// Plays the first `length` backwards: the new schedule at t is the old at `length - t`.
    pub fn reverse(&self, length: f64) -> Self {
        Self::new(Node::Reverse(self.clone(), length))
    }

    /// Repeats the first `period` forever.
    pub fn repeat(&self, period: f64) -> Self {
        Self::new(Node::Repeat(self.clone(), period))
    }

    /// Plays each schedule for its duration, one after another, each starting from its own t = 0;
    /// the last one keeps playing past its duration.
    pub fn seq(parts: Vec<(Schedule, f64)>) -> Self {
        Self::new(Node::Seq(parts))
    }

    /// `a` until `t0`, an equal-gain linear crossfade to `b` at `t1`, then `b`.
    pub fn crossfade(a: &Schedule, b: &Schedule, t0: f64, t1: f64) -> Self {
        Self::new(Node::Crossfade {
            a: a.clone(),
            b: b.clone(),
            t0,
            t1,
        })
    }

    /// `(1 - w) a + w b`, with `w` itself a schedule.
    pub fn mix(a: &Schedule, b: &Schedule, w: &Schedule) -> Self {
        Self::new(Node::Mix(a.clone(), b.clone(), w.clone()))
    }

    /// True when the schedule holds a [`Schedule::custom`] node.
    pub fn has_custom(&self) -> bool {
        let mut found = false;
        self.visit(&mut |n| found |= matches!(n, Node::Custom { .. }));
        found
    }

    fn visit(&self, f: &mut dyn FnMut(&Node)) {
        f(&self.node);
        match &*self.node {
            Node::Binary(_, a, b) | Node::Crossfade { a, b, .. } => {
                a.visit(f);
                b.visit(f);
            }
            Node::Mix(a, b, w) => {
                a.visit(f);
                b.visit(f);
                w.visit(f);
            }
            Node::Clamp(s, ..)
            | Node::Shift(s, _)
            | Node::Stretch(s, _)
            | Node::Reverse(s, _)
            | Node::Repeat(s, _) => s.visit(f),
            Node::Seq(parts) => parts.iter().for_each(|(s, _)| s.visit(f)),
            _ => {}
        }
    }

    /// Value at time `t`, for schedules without [`Schedule::custom`] nodes (those read as NaN).
    pub fn eval(&self, t: f64) -> f64 {
        self.eval_with(t, &mut |_, _| Ok(f64::NAN))
            .unwrap_or(f64::NAN)
    }

    /// Value at time `t`; `ext(id, t)` supplies the value of custom node `id` at time `t`.
    pub fn eval_with(
        &self,
        t: f64,
        ext: &mut dyn FnMut(usize, f64) -> Result<f64, String>,
    ) -> Result<f64, ScheduleError> {
        let v = match &*self.node {
            Node::Const(v) => *v,
            Node::Linear { from, to, t0, t1 } => from + (to - from) * ramp(t, *t0, *t1),
            Node::ExpDecay { rate } => rate.powf(t * PAPER_FRAME_RATE),
            Node::Logistic { center, width } => 1.0 / (1.0 + (-(t - center) / width).exp()),
            Node::Sine { period, phase } => (1.0 + (TAU * (t / period + phase)).sin()) / 2.0,
            Node::Cosine { period, phase } => (1.0 + (TAU * (t / period + phase)).cos()) / 2.0,
            Node::Square { period, duty } => {
                if (t / period).rem_euclid(1.0) < *duty {
                    1.0
                } else {
                    0.0
                }
            }
            Node::Step { at, value } => {
                if t >= *at {
                    *value
                } else {
                    0.0
                }
            }
            Node::Adsr {
                attack,
                decay,
                sustain,
                release,
                note_off,
            } => adsr(t, *attack, *decay, *sustain, *release, *note_off),
            Node::Keyframes { keys, interp } => keyframes(t, keys, *interp),
            Node::Noise { seed, rate } => {
                let x = t * rate;
                let k = x.floor();
                let a = noise_value(*seed, k as i64);
                let b = noise_value(*seed, (k as i64).wrapping_add(1));
                a + (b - a) * smoothstep(x - k)
            }
            Node::Binary(op, a, b) => {
                let (x, y) = (a.eval_with(t, ext)?, b.eval_with(t, ext)?);
                match op {
                    Op::Add => x + y,
                    Op::Sub => x - y,
                    Op::Mul => x * y,
                    Op::Div => x / y,
                    Op::Min => x.min(y),
                    Op::Max => x.max(y),
                }
            }
            Node::Clamp(s, lo, hi) => s.eval_with(t, ext)?.max(*lo).min(*hi),
            Node::Shift(s, dt) => s.eval_with(t - dt, ext)?,
            Node::Stretch(s, k) => s.eval_with(t / k, ext)?,
            Node::Reverse(s, len) => s.eval_with(len - t, ext)?,
            Node::Repeat(s, period) => s.eval_with(t.rem_euclid(*period), ext)?,
            Node::Seq(parts) => {
                let mut start = 0.0;
                let mut chosen = None;
                for (i, (s, dur)) in parts.iter().enumerate() {
                    if t < start + dur || i + 1 == parts.len() {
                        chosen = Some((s, t - start));
                        break;
                    }
                    start += dur;
                }
                match chosen {
                    Some((s, local)) => s.eval_with(local, ext)?,
                    None => 0.0,
                }
            }
            Node::Crossfade { a, b, t0, t1 } => {
                let x = ramp(t, *t0, *t1);
                (1.0 - x) * a.eval_with(t, ext)? + x * b.eval_with(t, ext)?
            }
            Node::Mix(a, b, w) => {
                let w = w.eval_with(t, ext)?;
                (1.0 - w) * a.eval_with(t, ext)? + w * b.eval_with(t, ext)?
            }
            Node::Custom { id, label } => ext(*id, t).map_err(|message| ScheduleError::Custom {
                label: label.clone(),
                t,
                message,
            })?,
            Node::Knob { cc, initial } => super::knobs::get(*cc).unwrap_or(*initial),
        };
        if v.is_finite() {
            Ok(v)
        } else {
            Err(ScheduleError::NotFinite {
                schedule: self.to_string(),
                t,
            })
        }
    }

    /// Values at `n` evenly spaced times `0, dt, 2 dt, ...`.
    pub fn sample(
        &self,
        n: usize,
        dt: f64,
        ext: &mut dyn FnMut(usize, f64) -> Result<f64, String>,
    ) -> Result<Vec<f64>, ScheduleError> {
        (0..n).map(|i| self.eval_with(i as f64 * dt, ext)).collect()
    }
}

fn adsr(t: f64, a: f64, d: f64, s: f64, r: f64, off: f64) -> f64 {
    let held = |t: f64| {
        if t < 0.0 {
            0.0
        } else if t < a {
            t / a
        } else if t < a + d {
            1.0 - (1.0 - s) * (t - a) / d
        } else {
            s
        }
    };
    if t < off {
        held(t)
    } else {
        let level = held(off);
        if r <= 0.0 {
            0.0
        } else {
            level * (1.0 - (t - off) / r).max(0.0)
        }
    }
}

fn keyframes(t: f64, keys: &[(f64, f64)], interp: Interp) -> f64 {
    let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
        return 0.0;
    };
    if t <= first.0 {
        return first.1;
    }
    if t >= last.0 {
        return last.1;
    }
    // Within 1..len - 1 whatever t is (a NaN time compares false everywhere).
    let i = keys
        .partition_point(|k| k.0 <= t)
        .clamp(1, keys.len().saturating_sub(1).max(1));
    if keys.len() < 2 {
        return first.1;
    }
    let ((t0, v0), (t1, v1)) = (keys[i - 1], keys[i]);
    let x = ramp(t, t0, t1);
    let x = match interp {
        Interp::Linear => x,
        Interp::Smooth => smoothstep(x),
    };
    v0 + (v1 - v0) * x
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.node {
            Node::Const(v) => write!(f, "{v}"),
            Node::Linear { from, to, t0, t1 } => write!(f, "linear({from}, {to}, {t0}, {t1})"),
            Node::ExpDecay { rate } => write!(f, "exp_decay({rate})"),
            Node::Logistic { center, width } => write!(f, "logistic({center}, {width})"),
            Node::Sine { period, phase } => write!(f, "sine({period}, {phase})"),
            Node::Cosine { period, phase } => write!(f, "cosine({period}, {phase})"),
            Node::Square { period, duty } => write!(f, "square({period}, {duty})"),
            Node::Step { at, value } => write!(f, "at({at}, {value})"),
            Node::Adsr {
                attack,
                decay,
                sustain,
                release,
                note_off,
            } => write!(
                f,
                "adsr({attack}, {decay}, {sustain}, {release}, {note_off})"
            ),
            Node::Keyframes { keys, interp } => {
                write!(f, "keyframes([")?;
                for (i, (t, v)) in keys.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "[{t}, {v}]")?;
                }
                match interp {
                    Interp::Linear => write!(f, "])"),
                    Interp::Smooth => write!(f, "], \"smooth\")"),
                }
            }
            Node::Noise { seed, rate } => write!(f, "noise({seed}, {rate})"),
            Node::Binary(op, a, b) => match op {
                Op::Add => write!(f, "({a} + {b})"),
                Op::Sub => write!(f, "({a} - {b})"),
                Op::Mul => write!(f, "{a} * {b}"),
                Op::Div => write!(f, "{a} / {b}"),
                Op::Min => write!(f, "min({a}, {b})"),
                Op::Max => write!(f, "max({a}, {b})"),
            },
            Node::Clamp(s, lo, hi) => write!(f, "clamp({s}, {lo}, {hi})"),
            Node::Shift(s, dt) => write!(f, "shift({s}, {dt})"),
            Node::Stretch(s, k) => write!(f, "stretch({s}, {k})"),
            Node::Reverse(s, len) => write!(f, "reverse({s}, {len})"),
            Node::Repeat(s, p) => write!(f, "repeat({s}, {p})"),
            Node::Seq(parts) => {
                write!(f, "seq(")?;
                for (i, (s, d)) in parts.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{s} for {d}")?;
                }
                write!(f, ")")
            }
            Node::Crossfade { a, b, t0, t1 } => write!(f, "crossfade({a}, {b}, {t0}, {t1})"),
            Node::Mix(a, b, w) => write!(f, "mix({a}, {b}, {w})"),
            Node::Custom { label, .. } => write!(f, "{label}"),
            Node::Knob { cc, initial } => write!(f, "knob({cc}, {initial})"),
        }
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({self})")
    }
}

impl From<f64> for Schedule {
    fn from(v: f64) -> Self {
        Schedule::constant(v)
    }
}

macro_rules! schedule_op {
    ($trait:ident, $method:ident, $op:expr) => {
        impl std::ops::$trait<Schedule> for Schedule {
            type Output = Schedule;
            fn $method(self, rhs: Schedule) -> Schedule {
                self.binary($op, &rhs)
            }
        }
        impl std::ops::$trait<f64> for Schedule {
            type Output = Schedule;
            fn $method(self, rhs: f64) -> Schedule {
                self.binary($op, &Schedule::constant(rhs))
            }
        }
        impl std::ops::$trait<Schedule> for f64 {
            type Output = Schedule;
            fn $method(self, rhs: Schedule) -> Schedule {
                Schedule::constant(self).binary($op, &rhs)
            }
        }
    };
}
schedule_op!(Add, add, Op::Add);
schedule_op!(Sub, sub, Op::Sub);
schedule_op!(Mul, mul, Op::Mul);
schedule_op!(Div, div, Op::Div);

impl std::ops::Neg for Schedule {
    type Output = Schedule;
    fn neg(self) -> Schedule {
        Schedule::constant(0.0).binary(Op::Sub, &self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_plays_parts_in_local_time() {
        let s = Schedule::seq(vec![
            (Schedule::linear(0.0, 1.0, 0.0, 2.0), 2.0),
            (Schedule::linear(1.0, 0.0, 0.0, 4.0), 4.0),
        ]);
        assert!((s.eval(1.0) - 0.5).abs() < 1e-12);
        assert!((s.eval(4.0) - 0.5).abs() < 1e-12);
        assert_eq!(s.eval(10.0), 0.0);
    }

    #[test]
    fn custom_nodes_are_sampled_through_the_callback() {
        let s = 2.0 * Schedule::custom(7, "|t| t * t");
        let mut calls = vec![];
        let v = s
            .eval_with(3.0, &mut |id, t| {
                calls.push((id, t));
                Ok(t * t)
            })
            .unwrap();
        assert_eq!(v, 18.0);
        assert_eq!(calls, vec![(7, 3.0)]);
        assert!(s.has_custom());
        assert!(!Schedule::constant(1.0).has_custom());
    }

    #[test]
    fn depth_counts_the_longest_path() {
        let leaf = Schedule::constant(1.0);
        assert_eq!(leaf.depth(), 1);
        let mut s = leaf.clone();
        for _ in 0..MAX_DEPTH - 1 {
            s = s + 0.5;
        }
        assert_eq!(s.depth(), MAX_DEPTH);
        assert_eq!(Schedule::mix(&leaf, &s, &leaf).depth(), MAX_DEPTH + 1);
        assert_eq!(
            Schedule::seq(vec![(leaf, 1.0), (s.clone(), 1.0)]).depth(),
            MAX_DEPTH + 1
        );
        // The deepest tree recipes may build evaluates, prints and drops on a test thread's
        // stack.
        assert!((s.eval(0.0) - (1.0 + 0.5 * (MAX_DEPTH - 1) as f64)).abs() < 1e-9);
        assert!(s.to_string().len() > MAX_DEPTH);
        drop(s);
    }

    #[test]
    fn a_nan_time_is_an_error_not_a_panic() {
        let k = Schedule::keyframes(vec![(0.0, 0.0), (1.0, 1.0)], Interp::Linear);
        assert!(k.eval_with(f64::NAN, &mut |_, _| Ok(0.0)).is_err());
    }

    #[test]
    fn division_by_zero_is_an_error() {
        let s = Schedule::constant(1.0) / Schedule::linear(1.0, 0.0, 0.0, 1.0);
        assert!(s.eval_with(1.0, &mut |_, _| Ok(0.0)).is_err());
    }
}
