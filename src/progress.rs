//! Progress bars: the generation bar shared by `baton render` and recipe renders (decoder steps
//! with the speed and the real-time factor so far), and the counting bar of the dataset stages.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// Block characters from lowest to highest, one per eighth of a range.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// `values` as a line of block characters on the scale `lo..hi` (the middle bar when the range
/// is empty): the sparklines of `plot` and of a playing piece's status.
pub fn bars(values: &[f64], lo: f64, hi: f64) -> String {
    values
        .iter()
        .map(|v| {
            let x = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
            BARS[((x * 7.0).round().max(0.0) as usize).min(7)]
        })
        .collect()
}

/// A bar counting `len` `unit`s (`clips`, `files`) after `message`, with elapsed time and ETA;
/// hidden when `visible` is false.
pub fn counter(len: usize, unit: &str, message: String, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    let template = format!(
        "{{msg}} {{wide_bar}} {{pos}}/{{len}} {unit} [{{elapsed_precise}} < {{eta_precise}}]"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar
}

/// A progress bar over decoder steps that reports steps/s and the real-time factor.
pub struct GenerationProgress {
    bar: ProgressBar,
    start: Instant,
    frame_rate: f64,
    /// Steps at which each window of a long piece ends (empty: one pass).
    window_ends: Vec<usize>,
}

impl GenerationProgress {
    /// A bar for `total_steps` decoder steps at `frame_rate` frames per second of audio; hidden
    /// when `visible` is false.
    pub fn new(total_steps: usize, frame_rate: f64, visible: bool) -> Self {
        let bar = if visible {
            ProgressBar::new(total_steps as u64)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed}<{eta}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        GenerationProgress {
            bar,
            start: Instant::now(),
            frame_rate,
            window_ends: Vec::new(),
        }
    }

    /// Shows which window of a long piece is being generated, given each window's steps.
    pub fn with_windows(mut self, window_steps: &[usize]) -> Self {
        if window_steps.len() > 1 {
            self.window_ends = window_steps
                .iter()
                .scan(0, |end, s| {
                    *end += s;
                    Some(*end)
                })
                .collect();
        }
        self
    }

    /// Records that `done` steps are finished (the `on_step` callback of `MusicGen::generate`).
    pub fn step(&self, done: usize) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let audio_s = (done as f64 / self.frame_rate).max(1e-9);
        self.bar.set_position(done as u64);
        let window = match self.window_ends.iter().position(|&end| done < end) {
            Some(i) => format!("window {}/{}, ", i + 1, self.window_ends.len()),
            None if !self.window_ends.is_empty() => {
                format!("window {0}/{0}, ", self.window_ends.len())
            }
            None => String::new(),
        };
        self.bar.set_message(format!(
            "{window}{:.1} steps/s, RTF {:.2}",
            done as f64 / secs,
            secs / audio_s
        ));
    }

    /// Leaves the finished bar on screen.
    pub fn finish(&self) {
        self.bar.finish();
    }

    /// Removes the bar from the screen.
    pub fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
    }
}
