//! Generation as a stream on the tiny checkpoints: frames taken step by step equal the whole
//! piece's codes, a steering change mid-piece leaves what came before it alone, an endless piece
//! runs past its window, and audio decoded as frames arrive equals the whole decode.

use std::path::PathBuf;

use baton::model::{
    Extent, GenerateOptions, MusicGen, PieceStream, ResidualHook, Sampling, Window,
};
use candle_core::{DType, Device, Tensor};

fn tiny(name: &str) -> MusicGen {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    MusicGen::load(dir.to_str().unwrap(), &Device::Cpu, DType::F32).unwrap()
}

fn options(max_new_tokens: usize, sampling: Sampling) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        sampling,
        guidance_scale: 3.0,
        seed: 5,
        negative_prompt: None,
    }
}

const TOP_K: Sampling = Sampling::TopK {
    k: 20,
    temperature: 1.0,
};

/// Adds `strength` times a fixed vector to every block from step `from` on.
struct Push {
    from: usize,
    strength: f32,
    vectors: Vec<Option<Tensor>>,
    none: Vec<Option<Tensor>>,
}

impl Push {
    fn new(model: &MusicGen, from: usize, strength: f32) -> Self {
        let h = model.hidden_size();
        let v: Vec<f32> = (0..h).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
        let v = (Tensor::from_vec(v, h, &Device::Cpu).unwrap() * strength as f64).unwrap();
        Push {
            from,
            strength,
            vectors: vec![Some(v); model.num_layers()],
            none: vec![None; model.num_layers()],
        }
    }
}

impl ResidualHook for Push {
    fn offsets(&mut self, step: usize, _batch: usize) -> candle_core::Result<&[Option<Tensor>]> {
        Ok(if step >= self.from && self.strength != 0.0 {
            &self.vectors
        } else {
            &self.none
        })
    }
}

/// Steps `stream` to its end, taking frames every `every` steps; returns what was taken,
/// `[batch][k][frames]`.
fn drain(stream: &mut PieceStream, every: usize) -> Vec<Vec<Vec<i64>>> {
    let mut got: Vec<Vec<Vec<i64>>> = Vec::new();
    let mut steps = 0;
    loop {
        let more = stream.step(None).unwrap();
        steps += 1;
        if !more || steps % every == 0 {
            let frames = stream.take_frames().unwrap();
            if got.is_empty() {
                got = frames;
            } else {
                for (item, new) in got.iter_mut().zip(frames) {
                    for (row, ids) in item.iter_mut().zip(new) {
                        row.extend(ids);
                    }
                }
            }
        }
        if !more {
            return got;
        }
    }
}

#[test]
fn frames_taken_as_they_complete_equal_the_whole_piece() {
    let model = tiny("tiny-a");
    let k = model.num_codebooks();
    let window = Window {
        frames: 15,
        stride: 10,
    };
    let clip: Vec<Vec<i64>> = (0..k)
        .map(|cb| (0..6).map(|f| ((f * 5 + cb * 3) % 60) as i64).collect())
        .collect();
    let cases = [
        (Extent::default(), Sampling::Greedy, 1),
        (Extent::default(), TOP_K, 3),
        (
            Extent {
                window: Some(window),
                ..Default::default()
            },
            TOP_K,
            7,
        ),
        (
            Extent {
                clip: Some(clip),
                window: Some(window),
                ..Default::default()
            },
            TOP_K,
            2,
        ),
    ];
    for (extent, sampling, every) in cases {
        let opts = options(40 + k - 1, sampling);
        let prompts = ["a", "b c"];
        let whole = model
            .generate_piece(&prompts, &opts, &extent, None, &mut |_, _| {}, None)
            .unwrap();
        let whole: Vec<Vec<Vec<i64>>> = whole.to_vec3().unwrap();
        let mut stream = PieceStream::new(&model, &prompts, &opts, &extent, None, None).unwrap();
        assert_eq!(
            stream.take_frames().unwrap()[0][0].len(),
            0,
            "no frame before a step"
        );
        let got = drain(&mut stream, every);
        let clip = extent.clip.as_ref().map_or(0, |c| c[0].len());
        for (item, want) in got.iter().zip(&whole) {
            for (row, want_row) in item.iter().zip(want) {
                assert_eq!(
                    row,
                    &want_row[clip..],
                    "{extent:?} {sampling:?} every {every}"
                );
            }
        }
        assert!(stream.is_finished());
        assert_eq!(stream.steps_done(), stream.total_steps().unwrap());
        assert_eq!(stream.frames_taken(), 40);
    }
}

#[test]
fn the_first_frame_is_out_after_codebooks_steps() {
    let model = tiny("tiny-a");
    let k = model.num_codebooks();
    let mut stream = PieceStream::new(
        &model,
        &["a"],
        &options(30, Sampling::Greedy),
        &Extent::default(),
        None,
        None,
    )
    .unwrap();
    for step in 1..=k {
        stream.step(None).unwrap();
        let n = stream.take_frames().unwrap()[0][0].len();
        // The delay pattern holds a frame back k - 1 steps.
        assert_eq!(n, usize::from(step == k), "after step {step}");
    }
}

#[test]
fn a_steering_change_mid_piece_leaves_the_codes_before_it_alone() {
    let model = tiny("tiny-a");
    let k = model.num_codebooks();
    let opts = options(60 + k - 1, TOP_K);
    let extent = Extent {
        window: Some(Window {
            frames: 25,
            stride: 15,
        }),
        ..Default::default()
    };
    let run = |change_at: Option<usize>| {
        let mut plain = Push::new(&model, 0, 0.0);
        let mut loud = Push::new(&model, 0, 40.0);
        let mut stream = PieceStream::new(&model, &["a"], &opts, &extent, None, None).unwrap();
        let mut done_before = 0;
        loop {
            let changed = change_at.is_some_and(|at| stream.steps_done() >= at);
            if !changed {
                done_before = stream.frames_done();
            }
            let hook: &mut dyn ResidualHook = if changed { &mut loud } else { &mut plain };
            if !stream.step(Some(hook)).unwrap() {
                break;
            }
        }
        (
            stream.codes().unwrap().to_vec3::<i64>().unwrap(),
            done_before,
        )
    };
    let (unchanged, _) = run(None);
    // The change comes at piece step 30 and 34 (in the second window, whose delay pattern
    // holds its first frame back k - 1 steps): the frames completed before it are kept, the
    // rest follow the new steering.
    for at in [30, 34] {
        let (changed, kept) = run(Some(at));
        assert!(kept >= 25, "{kept}");
        for (a, b) in unchanged[0].iter().zip(&changed[0]) {
            assert_eq!(a[..kept], b[..kept], "change at {at}");
        }
        assert_ne!(unchanged, changed, "the change at {at} did nothing");
    }
}

#[test]
fn an_endless_piece_runs_past_its_window() {
    let model = tiny("tiny-a");
    let k = model.num_codebooks();
    let extent = Extent {
        window: Some(Window {
            frames: 12,
            stride: 8,
        }),
        endless: true,
        ..Default::default()
    };
    let mut stream =
        PieceStream::new(&model, &["a"], &options(0, TOP_K), &extent, None, None).unwrap();
    assert_eq!(stream.total_steps(), None);
    let mut frames = 0;
    for _ in 0..200 {
        assert!(stream.step(None).unwrap());
        frames += stream.take_frames().unwrap()[0][0].len();
    }
    assert!(!stream.is_finished());
    // Five or more windows of 8 new frames (12 in the first), each adding k - 1 steps.
    assert!(frames > 5 * 12, "{frames} frames in 200 steps");
    assert_eq!(frames, stream.frames_taken());
    let codes = stream.codes().unwrap();
    assert_eq!(codes.dims(), &[1, k, frames]);
    // Without a window an endless piece is refused, and a whole one is never returned.
    let no_window = Extent {
        endless: true,
        ..Default::default()
    };
    assert!(PieceStream::new(&model, &["a"], &options(0, TOP_K), &no_window, None, None).is_err());
    assert!(model
        .generate_piece(
            &["a"],
            &options(0, TOP_K),
            &extent,
            None,
            &mut |_, _| {},
            None
        )
        .is_err());
}

/// Codes `[batch][k][frames]` spread over the codebook.
fn some_codes(model: &MusicGen, batch: usize, frames: usize) -> Vec<Vec<Vec<i64>>> {
    let size = model.config().audio_encoder.codebook_size as i64;
    (0..batch)
        .map(|b| {
            (0..model.num_codebooks())
                .map(|cb| {
                    (0..frames)
                        .map(|f| ((f * 13 + cb * 7 + b * 31 + f * f) as i64) % size)
                        .collect()
                })
                .collect()
        })
        .collect()
}

#[test]
fn audio_decoded_as_frames_arrive_equals_the_whole_decode() {
    for name in ["tiny-a", "tiny-b"] {
        let model = tiny(name);
        let k = model.num_codebooks();
        let frames = 47;
        let codes = some_codes(&model, 2, frames);
        let flat: Vec<i64> = codes.iter().flatten().flatten().copied().collect();
        let whole = model
            .decode(&Tensor::from_vec(flat, (2, k, frames), &Device::Cpu).unwrap())
            .unwrap();
        for chunks in [vec![1], vec![3, 1, 7], vec![10], vec![47]] {
            let mut stream = model.decode_stream().unwrap();
            let mut got = vec![Vec::new(); 2];
            let (mut at, mut i) = (0, 0);
            while at < frames {
                let n = chunks[i % chunks.len()].min(frames - at);
                let part: Vec<Vec<Vec<i64>>> = codes
                    .iter()
                    .map(|item| item.iter().map(|row| row[at..at + n].to_vec()).collect())
                    .collect();
                let audio = stream.push(&part).unwrap();
                at += n;
                i += 1;
                // Audio lags the codes by the codec's look-ahead, no more.
                let heard = audio[0].len() + got[0].len();
                let spf = model.samples_per_frame();
                assert!(
                    heard >= at.saturating_sub(stream.lag_frames()) * spf,
                    "{name}"
                );
                for (g, a) in got.iter_mut().zip(audio) {
                    g.extend(a);
                }
            }
            for (g, a) in got.iter_mut().zip(stream.finish().unwrap()) {
                g.extend(a);
            }
            for (g, w) in got.iter().zip(&whole) {
                assert_eq!(g.len(), w.len(), "{name} {chunks:?}");
                let err = g
                    .iter()
                    .zip(w)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                let peak = w.iter().map(|x| x.abs()).fold(0f32, f32::max);
                assert!(
                    err <= 1e-4 * peak.max(1.0),
                    "{name} {chunks:?}: {err} (peak {peak})"
                );
            }
        }
    }
}

/// Records, for each write, how many steps had been taken.
struct Recorder {
    steps_at_write: Vec<usize>,
    samples: Vec<f32>,
    finished: Option<bool>,
    steps: std::rc::Rc<std::cell::Cell<usize>>,
}

impl Recorder {
    /// A sink that reads the step count from `steps` at each write.
    fn new(steps: &std::rc::Rc<std::cell::Cell<usize>>) -> Self {
        Recorder {
            steps_at_write: Vec::new(),
            samples: Vec::new(),
            finished: None,
            steps: steps.clone(),
        }
    }
}

impl baton::perform::Sink for Recorder {
    fn write(&mut self, samples: &[f32]) -> Result<(), baton::perform::PerformError> {
        self.steps_at_write.push(self.steps.get());
        self.samples.extend_from_slice(samples);
        Ok(())
    }

    fn finish(&mut self, stopped: bool) -> Result<(), baton::perform::PerformError> {
        self.finished = Some(stopped);
        Ok(())
    }
}

#[test]
fn a_performance_sends_audio_before_the_piece_is_generated_and_equals_the_render() {
    let model = tiny("tiny-a");
    let k = model.num_codebooks();
    let opts = options(100 + k - 1, TOP_K);
    let extent = Extent {
        window: Some(Window {
            frames: 40,
            stride: 25,
        }),
        ..Default::default()
    };
    let steps = std::rc::Rc::new(std::cell::Cell::new(0));
    let mut sink = Recorder::new(&steps);
    // The concept read at every step: block 1's output projected on its first axis.
    let mut direction = vec![0.0; model.hidden_size()];
    direction[0] = 1.0;
    let listen = baton::perform::Listen {
        block: 1,
        direction,
    };
    let mut readings = Vec::new();
    let report = baton::perform::perform(
        &model,
        "a",
        &opts,
        &extent,
        None,
        Some(&listen),
        &mut [&mut sink],
        10,
        &mut || false,
        &mut |p| {
            steps.set(p.steps);
            readings.push(p.reading);
        },
    )
    .unwrap();
    let codes = model
        .generate_piece(&["a"], &opts, &extent, None, &mut |_, _| {}, None)
        .unwrap();
    let whole = model.decode(&codes).unwrap().remove(0);
    assert_eq!(sink.samples.len(), whole.len());
    let err = sink
        .samples
        .iter()
        .zip(&whole)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-4, "{err}");
    let total = report.steps;
    assert_eq!(
        total,
        model
            .pass_steps(&extent, opts.max_new_tokens)
            .iter()
            .sum::<usize>()
    );
    // The first audio left after a chunk and the codec's look-ahead, long before the end.
    let first = sink.steps_at_write[0];
    assert!(
        first < total / 4,
        "first audio after {first} of {total} steps"
    );
    assert!(sink.steps_at_write.len() > 5);
    assert_eq!(sink.finished, Some(false));
    assert!(!report.stopped);
    assert_eq!(readings.len(), total);
    let read: Vec<f64> = readings.iter().map(|r| r.unwrap()).collect();
    assert!(read.iter().all(|r| r.is_finite()));
    assert!(
        read.iter().any(|r| *r != read[0]),
        "the reading never moves"
    );
}

#[test]
fn a_stopped_performance_finishes_its_sinks() {
    let model = tiny("tiny-a");
    let extent = Extent {
        window: Some(Window {
            frames: 40,
            stride: 25,
        }),
        endless: true,
        ..Default::default()
    };
    let steps = std::rc::Rc::new(std::cell::Cell::new(0));
    let mut sink = Recorder::new(&steps);
    let mut asked = 0;
    let report = baton::perform::perform(
        &model,
        "a",
        &options(0, TOP_K),
        &extent,
        None,
        None,
        &mut [&mut sink],
        10,
        &mut || {
            asked += 1;
            asked > 300
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(report.stopped);
    assert_eq!(report.steps, 300);
    assert_eq!(sink.finished, Some(true));
    // Everything generated was decoded and sent, the last frames included.
    let frames = sink.samples.len() / model.samples_per_frame();
    assert_eq!(sink.samples.len() % model.samples_per_frame(), 0);
    assert!(frames > 200, "{frames}");
}
