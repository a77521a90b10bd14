//! A steering plan (a list of terms) and its evaluation into per-step, per-block vectors.

use std::collections::BTreeMap;
use std::fmt;

use candle_core::{DType, Device, Tensor};

use super::{Direction, LayerWeights, Schedule, SteerError};
use crate::model::ResidualHook;
use crate::seed::{splitmix64, unit_from_hash};

/// One concept pushed with a strength, a time schedule, layer weights and an optional gate.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// What is added (per block).
    pub direction: Direction,
    /// `eta0`: overall strength.
    pub strength: f64,
    /// `phi(t)`: how the strength moves over time.
    pub schedule: Schedule,
    /// `w_l`: how much each block gets.
    pub weights: LayerWeights,
    /// Gate probability for this term; `None` uses the plan's gate.
    pub gate: Option<f64>,
    /// What the strength is measured in.
    pub unit: StrengthUnit,
}

/// What a term's strength is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StrengthUnit {
    /// The direction's unit vectors as they are, as in the paper: how far a strength pushes
    /// depends on the model's residual scale, which differs between models and blocks.
    #[default]
    Absolute,
    /// Fractions of each block's typical output norm (recorded in the bundle when it was
    /// trained): at 0.1, a block of layer weight 1 is pushed by a tenth of its usual size (and
    /// one of weight `w` by `w` tenths), in any model.
    Residual,
}

impl StrengthUnit {
    /// The unit's name as flags and recipes spell it.
    pub fn name(self) -> &'static str {
        match self {
            StrengthUnit::Absolute => "absolute",
            StrengthUnit::Residual => "residual",
        }
    }
}

impl std::str::FromStr for StrengthUnit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "absolute" => Ok(StrengthUnit::Absolute),
            "residual" => Ok(StrengthUnit::Residual),
            other => Err(format!(
                "unknown strength unit `{other}` (expected absolute or residual)"
            )),
        }
    }
}

impl Term {
    /// The factor each block's unit direction gets per unit of strength: the layer weight `w_l`,
    /// times the block's residual norm for [`StrengthUnit::Residual`]. Blocks without a vector
    /// or with a zero weight are left out.
    pub fn block_weights(&self) -> Result<BTreeMap<usize, f64>, SteerError> {
        let d = &self.direction;
        self.weights
            .weights(d)
            .into_iter()
            .filter(|(l, w)| *w != 0.0 && d.vectors.contains_key(l))
            .map(|(l, w)| match self.unit {
                StrengthUnit::Absolute => Ok((l, w)),
                StrengthUnit::Residual => match d.residual_norms.get(&l) {
                    Some(&n) => Ok((l, w * n as f64)),
                    None if d.residual_norms.is_empty() => Err(SteerError::Mismatch(format!(
                        "direction `{}` has no residual norms, so its strength cannot be in \
                         residual units (it was trained before baton recorded them): run `baton \
                         features` and `baton train` again, or steer in absolute units",
                        d.name
                    ))),
                    None => Err(SteerError::Mismatch(format!(
                        "direction `{}` has no residual norm for block {l}, so its strength \
                         cannot be in residual units there",
                        d.name
                    ))),
                },
            })
            .collect()
    }
}

/// Above this absolute strength (or a tenth of it in residual units) a push is far past what
/// steering uses (the paper's strengths are 0.15 to 0.7, musicgen-small's residual norms 30 to
/// 100): it is allowed, but said, since it mostly turns the music into noise.
pub const EXTREME_STRENGTH: f64 = 100.0;

/// What a list of blocks reads as in messages: `0, 1, 2`, or `none`.
fn block_names<'a>(blocks: impl IntoIterator<Item = &'a usize>) -> String {
    let names: Vec<String> = blocks.into_iter().map(usize::to_string).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

impl Term {
    /// Refuses a term that cannot steer: a non-finite strength or direction (a `scale(0/0)`, an
    /// overflowing product), or one that steers nothing at all (no blocks left, zero vectors,
    /// layer weights of 0 everywhere), which would render the unsteered take without a word.
    pub fn check(&self) -> Result<(), SteerError> {
        let d = &self.direction;
        if !self.strength.is_finite() {
            return Err(SteerError::BadInput(format!(
                "strength of `{}` is not finite",
                d.name
            )));
        }
        if let Some((l, _)) = d
            .vectors
            .iter()
            .find(|(_, v)| v.iter().any(|x| !x.is_finite()))
        {
            return Err(SteerError::BadInput(format!(
                "direction `{}` is not finite at block {l} (NaN or infinity: a scale of 0/0, \
                 or a product too large for 32-bit floats)",
                d.name
            )));
        }
        if d.vectors.is_empty() {
            return Err(SteerError::BadInput(format!(
                "direction `{}` steers nothing: it keeps no block",
                d.name
            )));
        }
        let weights = self.block_weights()?;
        if weights.is_empty() {
            return Err(SteerError::BadInput(format!(
                "direction `{}` steers nothing: layer weights {} give every one of its blocks \
                 ({}) weight 0",
                d.name,
                self.weights,
                block_names(d.vectors.keys())
            )));
        }
        let moving = weights
            .keys()
            .any(|l| d.vectors[l].iter().any(|x| *x != 0.0));
        if !moving {
            return Err(SteerError::BadInput(format!(
                "direction `{}` steers nothing: its vectors are zero at every weighted block ({})",
                d.name,
                block_names(weights.keys())
            )));
        }
        Ok(())
    }

    /// A warning when the strength is far past what steering uses ([`EXTREME_STRENGTH`]).
    pub fn warning(&self) -> Option<String> {
        let limit = match self.unit {
            StrengthUnit::Absolute => EXTREME_STRENGTH,
            StrengthUnit::Residual => EXTREME_STRENGTH / 10.0,
        };
        (self.strength.abs() > limit).then(|| {
            format!(
                "strength {} of `{}` is extreme (above {limit} in {} units; the paper steers at \
                 0.15 to 0.7): expect noise",
                self.strength,
                self.direction.name,
                self.unit.name()
            )
        })
    }
}

/// A list of terms plus what applies to all of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The terms, summed per block.
    pub terms: Vec<Term>,
    /// Gate probability of terms without their own (1 = always steer).
    pub gate: f64,
    /// Seed of the gate draws.
    pub seed: u64,
    /// Steer only the conditional half of a classifier-free-guidance batch.
    pub conditional_only: bool,
    /// Beats per minute: when set, schedules read time in beats instead of seconds.
    pub tempo: Option<f64>,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            terms: Vec::new(),
            gate: 1.0,
            seed: 0,
            conditional_only: false,
            tempo: None,
        }
    }
}

/// Whether the stochastic gate with probability `p` is open at `step`: a pure function of
/// `(seed, step, p)`, so every term with the same `p` shares one draw per step, and the same
/// seed always gives the same gate pattern.
pub fn gate_open(seed: u64, step: usize, p: f64) -> bool {
    if p >= 1.0 {
        return true;
    }
    if p <= 0.0 || p.is_nan() {
        return false;
    }
    let h = splitmix64(seed ^ splitmix64(step as u64 ^ splitmix64(p.to_bits())));
    unit_from_hash(h) < p
}

impl Plan {
    /// Schedule time of generation step `step`.
    pub fn time_of(&self, step: usize, frame_rate: f64) -> f64 {
        let seconds = step as f64 / frame_rate;
        match self.tempo {
            Some(bpm) => seconds * bpm / 60.0,
            None => seconds,
        }
    }

    /// The terms of both plans, with `self`'s gate, seed and options.
    pub fn merge(&self, other: &Plan) -> Plan {
        let mut p = self.clone();
        p.terms.extend(other.terms.iter().cloned());
        p
    }

    /// Every strength multiplied by `k`.
    pub fn scaled(&self, k: f64) -> Plan {
        let mut p = self.clone();
        p.terms.iter_mut().for_each(|t| t.strength *= k);
        p
    }

    /// Every schedule delayed by `dt`.
    pub fn shifted(&self, dt: f64) -> Plan {
        let mut p = self.clone();
        p.terms
            .iter_mut()
            .for_each(|t| t.schedule = t.schedule.shift(dt));
        p
    }

    /// Checks that every term fits a model of this shape and that the numbers are sane.
    pub fn validate(&self, num_layers: usize, hidden_size: usize) -> Result<(), SteerError> {
        let check_p = |p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(SteerError::BadInput(format!(
                    "gate probability {p} is not between 0 and 1"
                )))
            }
        };
        check_p(self.gate)?;
        if let Some(bpm) = self.tempo {
            if !(bpm > 0.0 && bpm.is_finite()) {
                return Err(SteerError::BadInput(format!("tempo {bpm} is not positive")));
            }
        }
        for t in &self.terms {
            let d = &t.direction;
            if d.hidden_size != hidden_size {
                return Err(SteerError::Mismatch(format!(
                    "direction `{}` has width {} but the model's residual stream is {hidden_size} wide \
                     (was it trained on another model?)",
                    d.name, d.hidden_size
                )));
            }
            if let Some((&l, _)) = d.vectors.iter().find(|(l, _)| **l >= num_layers) {
                return Err(SteerError::Mismatch(format!(
                    "direction `{}` steers block {l} but the model has {num_layers} blocks",
                    d.name
                )));
            }
            if let Some(p) = t.gate {
                check_p(p)?;
            }
            t.check()?;
        }
        Ok(())
    }

    /// Warnings about settings that are allowed but far outside what steering uses.
    pub fn warnings(&self) -> Vec<String> {
        self.terms.iter().filter_map(Term::warning).collect()
    }

    /// `eta0 * phi(t)` per term and step (`[term][step]`), for `steps` generation steps, before
    /// any gate. This is the only place schedules are evaluated; `ext` samples custom schedule
    /// nodes.
    pub fn strengths(
        &self,
        steps: usize,
        frame_rate: f64,
        ext: &mut dyn FnMut(usize, f64) -> Result<f64, String>,
    ) -> Result<Vec<Vec<f64>>, SteerError> {
        self.terms
            .iter()
            .map(|term| {
                (0..steps)
                    .map(|s| {
                        let phi = term.schedule.eval_with(self.time_of(s, frame_rate), ext)?;
                        Ok(term.strength * phi)
                    })
                    .collect()
            })
            .collect()
    }

    /// Gate probability of each term (its own, or the plan's).
    pub fn gates(&self) -> Vec<f64> {
        self.terms
            .iter()
            .map(|t| t.gate.unwrap_or(self.gate))
            .collect()
    }

    /// Whether a term with gate probability `p` steers batch item `row` at `step`: item `b` of
    /// a batch is gated as the plan seeded `seed + b` gates a lone generation, as the sampler
    /// seeds it.
    pub fn gate_open_for(&self, p: f64, step: usize, row: usize) -> bool {
        gate_open(self.seed.wrapping_add(row as u64), step, p)
    }

    /// `eta0 * phi(t) * b_t` per term and step (`[term][step]`) for a lone generation (batch
    /// item 0), for `steps` generation steps.
    pub fn coefficients(
        &self,
        steps: usize,
        frame_rate: f64,
        ext: &mut dyn FnMut(usize, f64) -> Result<f64, String>,
    ) -> Result<Vec<Vec<f64>>, SteerError> {
        let mut c = self.strengths(steps, frame_rate, ext)?;
        for (values, p) in c.iter_mut().zip(self.gates()) {
            for (s, v) in values.iter_mut().enumerate() {
                if !self.gate_open_for(p, s, 0) {
                    *v = 0.0;
                }
            }
        }
        Ok(c)
    }

    /// The vector added to each block at one step, given that step's coefficient per term:
    /// a plain-Rust reference of what [`PlanHook`] computes on the device.
    pub fn offsets_at(
        &self,
        coefficients: &[f64],
        num_layers: usize,
        hidden_size: usize,
    ) -> Result<Vec<Option<Vec<f32>>>, SteerError> {
        let mut out: Vec<Option<Vec<f32>>> = vec![None; num_layers];
        for (term, c) in self.terms.iter().zip(coefficients) {
            for (l, w) in term.block_weights()? {
                let (Some(q), Some(slot)) = (term.direction.vectors.get(&l), out.get_mut(l)) else {
                    continue;
                };
                let v = slot.get_or_insert_with(|| vec![0.0; hidden_size]);
                let k = c * w;
                v.iter_mut()
                    .zip(q)
                    .for_each(|(a, b)| *a = (*a as f64 + k * *b as f64) as f32);
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plan with {} term(s)", self.terms.len())?;
        if self.gate < 1.0 {
            write!(f, ", gate {}", self.gate)?;
        }
        if let Some(bpm) = self.tempo {
            write!(f, ", {bpm} bpm (schedules in beats)")?;
        }
        if self.conditional_only {
            write!(f, ", conditional half only")?;
        }
        for t in &self.terms {
            write!(
                f,
                "\n  {} x {} x {} [{}]",
                t.strength, t.schedule, t.direction.name, t.weights
            )?;
            if let Some(p) = t.gate {
                write!(f, " gate {p}")?;
            }
            if t.unit == StrengthUnit::Residual {
                write!(f, " in residual units")?;
            }
        }
        Ok(())
    }
}

/// The weighted directions of all terms, `[terms, blocks * hidden]`.
enum Weighted {
    /// On an accelerator: one small matrix product per step.
    Device(Tensor),
    /// On the CPU: a plain multiply-add per term, which beats a threaded matmul at this size.
    Host { rows: Vec<f32>, device: Device },
}

/// A plan compiled for one generation: the decoder-side [`ResidualHook`].
///
/// Holds the weighted directions of all terms as one `[terms, blocks * hidden]` matrix and the
/// per-step coefficients; each step costs one weighted sum of the rows (a `[rows, terms] x
/// [terms, blocks * hidden]` product on an accelerator) and a dtype cast, whatever the number of
/// terms. `rows` is 1 unless stochastic gates differ between the items of a batch at that step.
pub struct PlanHook {
    weighted: Weighted,
    /// `eta0 * phi(t)` per step and term, before the gates.
    strengths: Vec<Vec<f32>>,
    /// Batch item 0's coefficients per step and term: what a lone generation applies.
    coefficients: Vec<Vec<f32>>,
    gates: Vec<f64>,
    /// The plan's seed and options, without its terms.
    settings: Plan,
    active: Vec<bool>,
    hidden_size: usize,
    dtype: DType,
    current: Vec<Option<Tensor>>,
    nothing: Vec<Option<Tensor>>,
    /// Terms whose schedule reads a knob: (term, strength, schedule), evaluated again at each
    /// step as it is made.
    live: Vec<(usize, f64, Schedule)>,
    frame_rate: f64,
}

impl PlanHook {
    /// Evaluates the plan's schedules for `steps` steps and uploads its directions.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        plan: &Plan,
        steps: usize,
        frame_rate: f64,
        num_layers: usize,
        hidden_size: usize,
        device: &Device,
        dtype: DType,
        ext: &mut dyn FnMut(usize, f64) -> Result<f64, String>,
    ) -> Result<Self, SteerError> {
        plan.validate(num_layers, hidden_size)?;
        let per_term = plan.strengths(steps, frame_rate, ext)?;
        let m = plan.terms.len();
        let mut rows = vec![0f32; m * num_layers * hidden_size];
        let mut active = vec![false; num_layers];
        for (i, term) in plan.terms.iter().enumerate() {
            let row = &mut rows[i * num_layers * hidden_size..(i + 1) * num_layers * hidden_size];
            for (l, w) in term.block_weights()? {
                let Some(q) = term.direction.vectors.get(&l) else {
                    continue;
                };
                active[l] = true;
                let dst = &mut row[l * hidden_size..(l + 1) * hidden_size];
                dst.iter_mut()
                    .zip(q)
                    .for_each(|(a, b)| *a = (w * *b as f64) as f32);
            }
        }
        let weighted = if device.is_cpu() {
            Weighted::Host {
                rows,
                device: device.clone(),
            }
        } else {
            Weighted::Device(
                Tensor::from_vec(rows, (m.max(1), num_layers * hidden_size), device).or_else(
                    |_| Tensor::zeros((1, num_layers * hidden_size), DType::F32, device),
                )?,
            )
        };
        let strengths: Vec<Vec<f32>> = (0..steps)
            .map(|s| per_term.iter().map(|c| c[s] as f32).collect())
            .collect();
        let gates = plan.gates();
        let mut hook = PlanHook {
            weighted,
            coefficients: Vec::new(),
            strengths,
            gates,
            settings: Plan {
                terms: Vec::new(),
                ..plan.clone()
            },
            active,
            hidden_size,
            dtype,
            current: vec![None; num_layers],
            nothing: vec![None; num_layers],
            live: plan
                .terms
                .iter()
                .enumerate()
                .filter(|(_, t)| t.schedule.has_knob())
                .map(|(i, t)| (i, t.strength, t.schedule.clone()))
                .collect(),
            frame_rate,
        };
        hook.coefficients = (0..steps).map(|s| hook.coefficients_of(s, 0)).collect();
        Ok(hook)
    }

    /// Reads the knobs of live terms for `step`: their strengths become what the knobs say now.
    /// A term that also holds a recipe's function keeps the value sampled before generation
    /// (recipe functions cannot run inside the decoder loop).
    fn read_knobs(&mut self, step: usize) {
        if self.live.is_empty() || step >= self.strengths.len() {
            return;
        }
        let t = self.settings.time_of(step, self.frame_rate);
        for (i, strength, schedule) in &self.live {
            let value = schedule.eval_with(t, &mut |_, _| {
                Err("a recipe function is not read live".to_string())
            });
            if let Ok(v) = value {
                self.strengths[step][*i] = (strength * v) as f32;
            }
        }
        self.coefficients[step] = self.coefficients_of(step, 0);
    }

    /// Number of steps the hook was compiled for.
    pub fn steps(&self) -> usize {
        self.strengths.len()
    }

    /// Coefficient per term at `step` (`eta0 * phi * b`) for a lone generation, as the hook
    /// applies it.
    pub fn coefficients_at(&self, step: usize) -> Option<&[f32]> {
        self.coefficients.get(step).map(|c| c.as_slice())
    }

    /// Every step's coefficients (`[step][term]`) for a lone generation, as the hook applies
    /// them.
    pub fn coefficients(&self) -> &[Vec<f32>] {
        &self.coefficients
    }

    /// Batch item `row`'s coefficient per term at `step`: its strengths where its own gate
    /// draws are open.
    fn coefficients_of(&self, step: usize, row: usize) -> Vec<f32> {
        self.strengths[step]
            .iter()
            .zip(&self.gates)
            .map(|(v, &p)| {
                if self.settings.gate_open_for(p, step, row) {
                    *v
                } else {
                    0.0
                }
            })
            .collect()
    }
}

impl ResidualHook for PlanHook {
    fn offsets(&mut self, step: usize, batch: usize) -> candle_core::Result<&[Option<Tensor>]> {
        self.read_knobs(step);
        // Past the planned length (or with every gate closed) nothing is added.
        let Some(lone) = self.coefficients.get(step) else {
            return Ok(&self.nothing);
        };
        let mut per_row = vec![lone.clone()];
        if batch > 1 && self.gates.iter().any(|&p| p < 1.0) {
            per_row.extend((1..batch).map(|b| self.coefficients_of(step, b)));
            // Items whose draws agree at this step share one vector.
            if per_row.iter().all(|c| *c == per_row[0]) {
                per_row.truncate(1);
            }
        }
        if per_row.iter().flatten().all(|x| *x == 0.0) {
            return Ok(&self.nothing);
        }
        let (rows, terms) = (per_row.len(), per_row[0].len());
        let shape = (rows, self.active.len(), self.hidden_size);
        let all = match &self.weighted {
            Weighted::Device(w) => {
                let c: Vec<f32> = per_row.concat();
                Tensor::from_vec(c, (rows, terms), w.device())?
                    .matmul(w)?
                    .reshape(shape)?
            }
            Weighted::Host {
                rows: weighted,
                device,
            } => {
                let width = shape.1 * shape.2;
                let mut sums = vec![0f32; rows * width];
                for (c, sum) in per_row.iter().zip(sums.chunks_exact_mut(width)) {
                    for (k, row) in c.iter().zip(weighted.chunks_exact(width)) {
                        if *k != 0.0 {
                            sum.iter_mut().zip(row).for_each(|(a, b)| *a += k * b);
                        }
                    }
                }
                Tensor::from_vec(sums, shape, device)?
            }
        }
        .to_dtype(self.dtype)?;
        for (l, slot) in self.current.iter_mut().enumerate() {
            *slot = match (self.active[l], rows) {
                (false, _) => None,
                (true, 1) => Some(all.get(0)?.get(l)?),
                // One vector per batch item: `[batch, 1, hidden]`.
                (true, _) => Some(all.narrow(1, l, 1)?.contiguous()?),
            };
        }
        Ok(&self.current)
    }

    fn conditional_only(&self) -> bool {
        self.settings.conditional_only
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_knob_is_read_as_each_step_is_made() {
        // Knob 101 is this test's alone (the table is one per process).
        let cc = 101;
        let plan = Plan {
            terms: vec![Term {
                direction: super::super::direction::tests::dir(
                    "d",
                    "auc",
                    &[(0, 1.0, vec![0.6, 0.8])],
                ),
                strength: 2.0,
                schedule: Schedule::knob(cc, 1.0).unwrap(),
                weights: Default::default(),
                gate: None,
                unit: Default::default(),
            }],
            ..Plan::default()
        };
        let mut hook = PlanHook::new(
            &plan,
            10,
            50.0,
            8,
            2,
            &Device::Cpu,
            DType::F32,
            &mut |_, _| Ok(0.0),
        )
        .unwrap();
        let block0 = |hook: &mut PlanHook, step| -> Option<Vec<f32>> {
            let offsets = hook.offsets(step, 1).unwrap();
            offsets[0]
                .as_ref()
                .map(|t| t.flatten_all().unwrap().to_vec1().unwrap())
        };
        // Unset: the initial value (full strength).
        let full = block0(&mut hook, 0).unwrap();
        // Turned to a quarter between two steps: the next step is steered a quarter as hard.
        super::super::knobs::set(cc, 0.25);
        let quarter = block0(&mut hook, 1).unwrap();
        for (q, f) in quarter.iter().zip(&full) {
            assert!((q - f * 0.25).abs() < 1e-6, "{q} vs {f}");
        }
        assert_eq!(hook.coefficients_at(1), Some(&[0.5f32][..]));
        // Turned down: nothing is added.
        super::super::knobs::set(cc, 0.0);
        assert_eq!(block0(&mut hook, 2), None);
    }
}
