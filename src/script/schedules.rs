//! Schedule verbs: time curves (`linear`, `exp_decay`, `sine`, `adsr`, `keyframes`, `noise`,
//! `curve(|t| ...)`, ...) and their algebra (`+ - * /` with numbers, `clamp`, `shift`, `seq`,
//! `crossfade`, `mix`, `min`/`max`, ...). Numbers may be written as integers or floats anywhere.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, NativeCallContext, INT};

use super::{fail, Host};
use crate::steer::schedule::MAX_DEPTH;
use crate::steer::{Interp, Schedule};

type Res<T> = Result<T, Box<EvalAltResult>>;

/// A number argument (integer or float).
pub(crate) fn num(v: &Dynamic, what: &str) -> Res<f64> {
    if let Ok(f) = v.as_float() {
        return Ok(f);
    }
    if let Ok(i) = v.as_int() {
        return Ok(i as f64);
    }
    fail(format!("{what} must be a number, not {}", v.type_name()))
}

/// A schedule argument: a schedule, or a number (a constant schedule).
pub(crate) fn sched(v: &Dynamic, what: &str) -> Res<Schedule> {
    if let Some(s) = v.clone().try_cast::<Schedule>() {
        return Ok(s);
    }
    num(v, what).map(Schedule::constant).or_else(|_| {
        fail(format!(
            "{what} must be a schedule or a number, not {}",
            v.type_name()
        ))
    })
}

fn positive(v: &Dynamic, what: &str) -> Res<f64> {
    let x = num(v, what)?;
    if x > 0.0 && x.is_finite() {
        Ok(x)
    } else {
        fail(format!("{what} must be positive, got {x}"))
    }
}

/// A length of time: zero or more.
fn duration(v: &Dynamic, what: &str) -> Res<f64> {
    let x = num(v, what)?;
    if x >= 0.0 && x.is_finite() {
        Ok(x)
    } else {
        fail(format!("{what} must be a time of 0 or more, got {x}"))
    }
}

/// A start and an end time, the end not before the start (equal times make a step).
fn span(t0: &Dynamic, t1: &Dynamic, verb: &str) -> Res<(f64, f64)> {
    let (a, b) = (
        num(t0, &format!("{verb}: start time"))?,
        num(t1, &format!("{verb}: end time"))?,
    );
    if !(a.is_finite() && b.is_finite()) {
        return fail(format!("{verb}: times must be finite, got {a} and {b}"));
    }
    if b < a {
        return fail(format!(
            "{verb}: end time {b} is before start time {a} (swap them, or swap the values to \
             go the other way)"
        ));
    }
    Ok((a, b))
}

/// A two-element array `[x, number]`; `shape` names the elements for messages.
fn pair(v: &Dynamic, what: &str, shape: &str) -> Res<(Dynamic, f64)> {
    let a = match v.clone().try_cast::<Array>() {
        Some(a) if a.len() == 2 => a,
        _ => return fail(format!("{what}: expected a list of {shape} pairs")),
    };
    Ok((a[0].clone(), num(&a[1], what)?))
}

fn keyframes(points: Array, interp: Interp) -> Res<Schedule> {
    if points.is_empty() {
        return fail("keyframes needs at least one [time, value] key");
    }
    let keys = points
        .iter()
        .map(|p| {
            let (t, v) = pair(p, "keyframes", "[time, value]")?;
            Ok((num(&t, "keyframes: time")?, v))
        })
        .collect::<Res<Vec<_>>>()?;
    Ok(Schedule::keyframes(keys, interp))
}

/// A schedule a recipe built, refused when deeper than [`MAX_DEPTH`]: evaluating a deeper tree
/// could overflow the native stack and abort the whole REPL or watch session.
pub(crate) fn bounded(s: Schedule) -> Res<Schedule> {
    if s.depth() > MAX_DEPTH {
        return fail(format!(
            "this schedule would be {} levels deep, more than the {MAX_DEPTH} a recipe may build \
             (a loop growing one schedule step by step?): use keyframes(...) or seq(...) for \
             many points, or combine the parts pairwise",
            s.depth()
        ));
    }
    Ok(s)
}

macro_rules! ops {
    ($engine:ident, $name:literal, $op:tt) => {
        $engine.register_fn($name, |a: Schedule, b: Schedule| bounded(a $op b));
        $engine.register_fn($name, |a: Schedule, b: f64| bounded(a $op b));
        $engine.register_fn($name, |a: f64, b: Schedule| bounded(a $op b));
        $engine.register_fn($name, |a: Schedule, b: INT| bounded(a $op (b as f64)));
        $engine.register_fn($name, |a: INT, b: Schedule| bounded((a as f64) $op b));
    };
}

/// Registers the schedule type and verbs.
pub(crate) fn register(engine: &mut Engine, host: &Arc<Host>) {
    engine.register_type_with_name::<Schedule>("Schedule");
    engine.register_fn("to_string", |s: &mut Schedule| s.to_string());
    engine.register_fn("to_debug", |s: &mut Schedule| format!("Schedule({s})"));

    engine.register_fn("constant", |v: Dynamic| -> Res<Schedule> {
        Ok(Schedule::constant(num(&v, "constant")?))
    });
    engine.register_fn(
        "linear",
        |from: Dynamic, to: Dynamic, t0: Dynamic, t1: Dynamic| -> Res<Schedule> {
            let (t0, t1) = span(&t0, &t1, "linear")?;
            Ok(Schedule::linear(
                num(&from, "linear: from")?,
                num(&to, "linear: to")?,
                t0,
                t1,
            ))
        },
    );
    engine.register_fn("knob", |cc: INT| -> Res<Schedule> {
        let cc = usize::try_from(cc).map_err(|_| format!("knob: no knob {cc} (0 to 127)"))?;
        Ok(Schedule::knob(cc, 0.0).map_err(|e| format!("knob: {e}"))?)
    });
    engine.register_fn("knob", |cc: INT, initial: Dynamic| -> Res<Schedule> {
        let cc = usize::try_from(cc).map_err(|_| format!("knob: no knob {cc} (0 to 127)"))?;
        let initial = num(&initial, "knob: initial value")?;
        Ok(Schedule::knob(cc, initial).map_err(|e| format!("knob: {e}"))?)
    });
    engine.register_fn("rise", |t0: Dynamic, t1: Dynamic| -> Res<Schedule> {
        let (t0, t1) = span(&t0, &t1, "rise")?;
        Ok(Schedule::linear(0.0, 1.0, t0, t1))
    });
    engine.register_fn("fall", |t0: Dynamic, t1: Dynamic| -> Res<Schedule> {
        let (t0, t1) = span(&t0, &t1, "fall")?;
        Ok(Schedule::linear(1.0, 0.0, t0, t1))
    });
    engine.register_fn("exp_decay", |rate: Dynamic| -> Res<Schedule> {
        let r = num(&rate, "exp_decay: rate")?;
        if !(r > 0.0 && r.is_finite()) {
            return fail(format!(
                "exp_decay: rate per 20 ms frame must be positive, got {r}"
            ));
        }
        Ok(Schedule::exp_decay(r))
    });
    engine.register_fn("logistic", |c: Dynamic, w: Dynamic| -> Res<Schedule> {
        Ok(Schedule::logistic(
            num(&c, "logistic: center")?,
            positive(&w, "logistic: width")?,
        ))
    });
    engine.register_fn("sine", |p: Dynamic| -> Res<Schedule> {
        Ok(Schedule::sine(positive(&p, "sine: period")?, 0.0))
    });
    engine.register_fn("sine", |p: Dynamic, ph: Dynamic| -> Res<Schedule> {
        Ok(Schedule::sine(
            positive(&p, "sine: period")?,
            num(&ph, "sine: phase")?,
        ))
    });
    engine.register_fn("cosine", |p: Dynamic| -> Res<Schedule> {
        Ok(Schedule::cosine(positive(&p, "cosine: period")?, 0.0))
    });
    engine.register_fn("cosine", |p: Dynamic, ph: Dynamic| -> Res<Schedule> {
        Ok(Schedule::cosine(
            positive(&p, "cosine: period")?,
            num(&ph, "cosine: phase")?,
        ))
    });
    engine.register_fn("square", |p: Dynamic| -> Res<Schedule> {
        Ok(Schedule::square(positive(&p, "square: period")?, 0.5))
    });
    engine.register_fn("square", |p: Dynamic, duty: Dynamic| -> Res<Schedule> {
        Ok(Schedule::square(
            positive(&p, "square: period")?,
            num(&duty, "square: duty")?,
        ))
    });
    engine.register_fn("step", |t0: Dynamic| -> Res<Schedule> {
        Ok(Schedule::step(num(&t0, "step: time")?, 1.0))
    });
    engine.register_fn("at", |t0: Dynamic, v: Dynamic| -> Res<Schedule> {
        Ok(Schedule::step(num(&t0, "at: time")?, num(&v, "at: value")?))
    });
    engine.register_fn(
        "adsr",
        |a: Dynamic, d: Dynamic, s: Dynamic, r: Dynamic, off: Dynamic| -> Res<Schedule> {
            Ok(Schedule::adsr(
                duration(&a, "adsr: attack")?,
                duration(&d, "adsr: decay")?,
                num(&s, "adsr: sustain")?,
                duration(&r, "adsr: release")?,
                num(&off, "adsr: note-off time")?,
            ))
        },
    );
    engine.register_fn("keyframes", |points: Array| {
        keyframes(points, Interp::Linear)
    });
    engine.register_fn("keyframes", |points: Array, how: &str| -> Res<Schedule> {
        let interp = match how {
            "linear" => Interp::Linear,
            "smooth" => Interp::Smooth,
            _ => {
                return fail(format!(
                    "keyframes: `{how}` is not \"linear\" or \"smooth\""
                ))
            }
        };
        keyframes(points, interp)
    });
    engine.register_fn("noise", |seed: INT, rate: Dynamic| -> Res<Schedule> {
        Ok(Schedule::noise(
            seed as u64,
            positive(&rate, "noise: rate")?,
        ))
    });
    let h = host.clone();
    engine.register_fn("curve", move |f: FnPtr| -> Res<Schedule> {
        let mut curves = h.curves.lock().map_err(|_| "curve table poisoned")?;
        let label = if f.fn_name().starts_with("anon$") {
            format!("curve#{}", curves.len())
        } else {
            format!("curve({})", f.fn_name())
        };
        curves.push(f);
        Ok(Schedule::custom(curves.len() - 1, label))
    });

    ops!(engine, "+", +);
    ops!(engine, "-", -);
    ops!(engine, "*", *);
    ops!(engine, "/", /);
    engine.register_fn("-", |a: Schedule| bounded(-a));
    for (name, op) in [
        ("min", crate::steer::schedule::Op::Min),
        ("max", crate::steer::schedule::Op::Max),
    ] {
        engine.register_fn(name, move |a: Schedule, b: Schedule| {
            bounded(a.binary(op, &b))
        });
        engine.register_fn(name, move |a: Schedule, b: Dynamic| -> Res<Schedule> {
            bounded(a.binary(op, &sched(&b, name)?))
        });
        engine.register_fn(name, move |a: Dynamic, b: Schedule| -> Res<Schedule> {
            bounded(sched(&a, name)?.binary(op, &b))
        });
    }
    engine.register_fn(
        "clamp",
        |s: Schedule, lo: Dynamic, hi: Dynamic| -> Res<Schedule> {
            bounded(s.clamp(num(&lo, "clamp: low")?, num(&hi, "clamp: high")?))
        },
    );
    engine.register_fn("shift", |s: Schedule, dt: Dynamic| -> Res<Schedule> {
        bounded(s.shift(num(&dt, "shift: time")?))
    });
    engine.register_fn("delay", |s: Schedule, dt: Dynamic| -> Res<Schedule> {
        bounded(s.shift(num(&dt, "delay: time")?))
    });
    engine.register_fn("stretch", |s: Schedule, k: Dynamic| -> Res<Schedule> {
        bounded(s.stretch(positive(&k, "stretch: factor")?))
    });
    engine.register_fn("reverse", |s: Schedule, len: Dynamic| -> Res<Schedule> {
        bounded(s.reverse(num(&len, "reverse: length")?))
    });
    engine.register_fn("repeat", |s: Schedule, p: Dynamic| -> Res<Schedule> {
        bounded(s.repeat(positive(&p, "repeat: period")?))
    });
    engine.register_fn("seq", |parts: Array| -> Res<Schedule> {
        if parts.is_empty() {
            return fail("seq needs at least one [schedule, duration] pair");
        }
        let parts = parts
            .iter()
            .map(|p| {
                let (s, d) = pair(p, "seq", "[schedule, duration]")?;
                Ok((sched(&s, "seq: part")?, d))
            })
            .collect::<Res<Vec<_>>>()?;
        bounded(Schedule::seq(parts))
    });
    engine.register_fn(
        "crossfade",
        |a: Dynamic, b: Dynamic, t0: Dynamic, t1: Dynamic| -> Res<Schedule> {
            bounded(Schedule::crossfade(
                &sched(&a, "crossfade: from")?,
                &sched(&b, "crossfade: to")?,
                num(&t0, "crossfade: start")?,
                num(&t1, "crossfade: end")?,
            ))
        },
    );
    engine.register_fn(
        "mix",
        |a: Dynamic, b: Dynamic, w: Dynamic| -> Res<Schedule> {
            bounded(Schedule::mix(
                &sched(&a, "mix: first")?,
                &sched(&b, "mix: second")?,
                &sched(&w, "mix: weight")?,
            ))
        },
    );
    // Reading a schedule in a recipe (for checks and prints), user curves called as they are
    // when rendering.
    let h = host.clone();
    engine.register_fn(
        "value",
        move |ctx: NativeCallContext, s: &mut Schedule, t: Dynamic| -> Res<f64> {
            let t = num(&t, "value: time")?;
            super::with_curves(&h, &ctx, |curves| {
                s.eval_with(t, curves).map_err(|e| e.to_string().into())
            })
        },
    );
}
