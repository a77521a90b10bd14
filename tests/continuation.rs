//! Continuing a clip and pieces longer than one window, against transformers
//! (tests/reference/continuation_reference.py on tiny-a): the clip's codes, the continued codes
//! (exact) and audio (within 1e-4), and a window-by-window piece built by hand in transformers
//! (exact), with and without a clip.

use std::path::PathBuf;

use baton::files::Reader;
use baton::model::{passes, Extent, GenerateOptions, MusicGen, Pass, Sampling, Window};
use candle_core::{DType, Device, Tensor};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn tiny_a() -> MusicGen {
    let dir = fixtures().join("tiny-a");
    MusicGen::load(dir.to_str().unwrap(), &Device::Cpu, DType::F32).unwrap()
}

/// The reference file's tensors, read without a format tag (it is Python's).
fn reference() -> safetensors::SafeTensors<'static> {
    let bytes = std::fs::read(fixtures().join("continuation-a.safetensors")).unwrap();
    safetensors::SafeTensors::deserialize(Box::leak(bytes.into_boxed_slice())).unwrap()
}

fn i64s(st: &safetensors::SafeTensors, name: &str) -> (Vec<usize>, Vec<i64>) {
    let v = st.tensor(name).unwrap();
    let data = v
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (v.shape().to_vec(), data)
}

fn f32s(st: &safetensors::SafeTensors, name: &str) -> Vec<f32> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

const PROMPTS: [&str; 2] = ["a calm piano melody with soft strings", "loud drums"];

fn greedy(max_new_tokens: usize, guidance_scale: f64) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        sampling: Sampling::Greedy,
        guidance_scale,
        seed: 0,
        negative_prompt: None,
    }
}

fn flat(t: &Tensor) -> (Vec<usize>, Vec<i64>) {
    (
        t.dims().to_vec(),
        t.flatten_all().unwrap().to_vec1::<i64>().unwrap(),
    )
}

#[test]
fn a_clip_is_encoded_and_continued_as_transformers_does() {
    let model = tiny_a();
    let st = reference();
    let clip = f32s(&st, "clip");
    let codes = model.clip_codes(&clip).unwrap();
    let (shape, want) = i64s(&st, "clip.codes");
    assert_eq!(vec![codes.len(), codes[0].len()], shape);
    assert_eq!(codes.concat(), want, "clip codes");
    let k = model.num_codebooks();
    let extent = Extent {
        clip: Some(codes),
        window: None,
        ..Default::default()
    };
    for (name, scale) in [("cfg3", 3.0), ("cfg1", 1.0)] {
        let got = model
            .generate_piece(
                &PROMPTS,
                &greedy(8 + k - 1, scale),
                &extent,
                None,
                &mut |_, _| {},
                None,
            )
            .unwrap();
        assert_eq!(
            flat(&got),
            i64s(&st, &format!("cont.{name}.codes")),
            "{name}"
        );
        let audio = model.decode(&got).unwrap();
        let want = f32s(&st, &format!("cont.{name}.audio"));
        let got: Vec<f32> = audio.concat();
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "{name}: audio differs by {worst}");
    }
}

#[test]
fn long_pieces_follow_the_hand_built_window_chain() {
    let model = tiny_a();
    let st = reference();
    let k = model.num_codebooks();
    let window = Window {
        frames: 15,
        stride: 10,
    };
    let clip = model.clip_codes(&f32s(&st, "clip")).unwrap();
    for (name, clip, new) in [("long", None, 30), ("long_clip", Some(clip), 20)] {
        let extent = Extent {
            clip,
            window: Some(window),
            ..Default::default()
        };
        let mut last = (0, 0);
        let got = model
            .generate_piece(
                &PROMPTS,
                &greedy(new + k - 1, 3.0),
                &extent,
                None,
                &mut |done, total| last = (done, total),
                None,
            )
            .unwrap();
        assert_eq!(flat(&got), i64s(&st, &format!("{name}.codes")), "{name}");
        assert_eq!(last.0, last.1, "{name}: progress ends at the total");
    }
}

#[test]
fn windows_are_planned_as_audiocraft_extends() {
    let w = Some(Window {
        frames: 15,
        stride: 10,
    });
    let pass = |prompt_from, prompt_len, new| Pass {
        prompt_from,
        prompt_len,
        new,
    };
    assert_eq!(
        passes(0, 30, w),
        vec![pass(0, 0, 15), pass(10, 5, 10), pass(20, 5, 5)]
    );
    assert_eq!(
        passes(10, 20, w),
        vec![pass(0, 10, 5), pass(10, 5, 10), pass(20, 5, 5)]
    );
    // A piece that fits is one pass, as is any piece without a window.
    assert_eq!(passes(0, 12, w), vec![pass(0, 0, 12)]);
    assert_eq!(passes(3, 100, None), vec![pass(0, 3, 100)]);
}

#[test]
fn bad_clips_and_windows_are_refused() {
    let model = tiny_a();
    let k = model.num_codebooks();
    let limit_s = model.max_seconds();
    assert!(model.window(0.0, 0.1).is_err());
    assert!(
        model.window(0.3, 0.3).is_err(),
        "stride as long as the window"
    );
    assert!(model.window(0.3, -1.0).is_err());
    assert!(
        model.window(limit_s * 2.0, 1.0).is_err(),
        "longer than the model"
    );
    assert!(model.window(f64::NAN, 1.0).is_err());
    let err = model.window(0.1, 0.08).unwrap_err().to_string();
    assert!(err.contains("frames of context"), "{err}");
    let w = model.window(0.3, 0.2).unwrap();
    assert_eq!(
        w,
        Window {
            frames: 15,
            stride: 10
        }
    );
    // A clip as long as the window leaves no room.
    let extent = Extent {
        clip: Some(vec![vec![1; 15]; k]),
        window: Some(w),
        ..Default::default()
    };
    let err = model
        .generate_piece(
            &["a"],
            &greedy(20, 3.0),
            &extent,
            None,
            &mut |_, _| {},
            None,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("window must hold the clip"),
        "{err}"
    );
    // Ragged or empty clip codes.
    for clip in [vec![vec![1; 3]; k - 1], vec![Vec::new(); k]] {
        let extent = Extent {
            clip: Some(clip),
            window: None,
            ..Default::default()
        };
        assert!(model
            .generate_piece(&["a"], &greedy(8, 3.0), &extent, None, &mut |_, _| {}, None)
            .is_err());
    }
}

/// Runs baton with `args`; returns (success, stderr).
fn baton(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.success(), stderr)
}

/// The codes of a `--save-codes` file, `[codebooks * frames]` flat.
fn saved_codes(path: &std::path::Path) -> Vec<i64> {
    let r = Reader::open(path, "codes/1").unwrap();
    let (_, _, bytes) = r.raw("codes").unwrap();
    bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn the_render_verb_continues_clips_and_extends_pieces_as_the_reference() {
    let st = reference();
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.wav");
    baton::audio::write_wav(
        &clip,
        &f32s(&st, "clip"),
        32000,
        baton::audio::SampleFormat::Float32,
    )
    .unwrap();
    let model = fixtures().join("tiny-a");
    let k = 4;
    let run = |name: &str, extra: &[&str]| -> Vec<Vec<i64>> {
        let out = dir.path().join(format!("{name}/"));
        let codes = dir.path().join(format!("{name}-codes/"));
        let mut args = vec![
            "render",
            "--prompt",
            PROMPTS[0],
            "--prompt",
            PROMPTS[1],
            "--greedy",
            "--cfg",
            "3",
            "--model",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--save-codes",
            codes.to_str().unwrap(),
        ];
        args.extend(extra);
        let (ok, stderr) = baton(&args);
        assert!(ok, "{name}: {stderr}");
        (1..=2)
            .map(|i| saved_codes(&codes.join(format!("prompt-{i}.safetensors"))))
            .collect()
    };
    let per_item = |name: &str| -> Vec<Vec<i64>> {
        let (shape, data) = i64s(&st, name);
        data.chunks(shape[1] * shape[2])
            .map(<[i64]>::to_vec)
            .collect()
    };
    let tokens = (8 + k - 1).to_string();
    let clip_arg = clip.to_str().unwrap();
    assert_eq!(
        run(
            "cont",
            &["--continue", clip_arg, "--max-new-tokens", &tokens]
        ),
        per_item("cont.cfg3.codes")
    );
    let window = ["--window", "0.3", "--extend-stride", "0.2"];
    let tokens = (30 + k - 1).to_string();
    let mut long = vec!["--max-new-tokens", tokens.as_str()];
    long.extend(window);
    assert_eq!(run("long", &long), per_item("long.codes"));
    // --seconds is the new part's length: 0.4 s is 20 frames after the clip's 10.
    let mut long_clip = vec!["--continue", clip_arg, "--seconds", "0.4"];
    long_clip.extend(window);
    assert_eq!(run("long_clip", &long_clip), per_item("long_clip.codes"));
}

#[test]
fn bad_continuations_fail_before_the_model_loads() {
    let dir = tempfile::tempdir().unwrap();
    let silent = dir.path().join("silent.wav");
    baton::audio::write_wav(
        &silent,
        &[0.0; 3200],
        16000,
        baton::audio::SampleFormat::Pcm16,
    )
    .unwrap();
    let empty = dir.path().join("empty.wav");
    std::fs::write(&empty, b"").unwrap();
    let model = fixtures().join("tiny-a");
    let model = model.to_str().unwrap();
    let out = dir.path().join("x.wav");
    let out = out.to_str().unwrap();
    for (extra, needle) in [
        (vec!["--continue", silent.to_str().unwrap()], "is silent"),
        (vec!["--continue", empty.to_str().unwrap()], "cannot read"),
        (vec!["--continue", "missing.wav"], "cannot read"),
        (vec!["--window", "0"], "positive"),
        (
            vec!["--window", "2", "--extend-stride", "3"],
            "shorter than the window",
        ),
        (vec!["--extend-stride", "-1"], "positive"),
    ] {
        let mut args = vec!["render", "--prompt", "a", "--model", model, "--out", out];
        args.extend(&extra);
        let (ok, stderr) = baton(&args);
        assert!(!ok, "{extra:?}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
        assert!(
            !stderr.contains("loading"),
            "{extra:?}: the model loaded first"
        );
    }
    // A window longer than the model's, and a clip longer than the window, are settled by the
    // model's config, before its weights load.
    let clip = dir.path().join("clip.wav");
    let tone: Vec<f32> = (0..32000).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
    baton::audio::write_wav(&clip, &tone, 32000, baton::audio::SampleFormat::Pcm16).unwrap();
    // A copy of tiny-a whose weights cannot load: the errors below come before any load.
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for f in std::fs::read_dir(fixtures().join("tiny-a")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), broken.join(f.file_name())).unwrap();
    }
    std::fs::write(broken.join("model.safetensors"), b"not weights").unwrap();
    let model = broken.to_str().unwrap();
    for (extra, needle) in [
        (vec!["--max-new-tokens", "2"], "must be at least 6"),
        (vec!["--window", "100"], "does not fit this model"),
        (
            vec!["--continue", clip.to_str().unwrap(), "--window", "0.5"],
            "must hold the clip",
        ),
    ] {
        let mut args = vec!["render", "--prompt", "a", "--model", model, "--out", out];
        args.extend(&extra);
        let (ok, stderr) = baton(&args);
        assert!(!ok && stderr.contains(needle), "{extra:?}: {stderr}");
        assert!(
            !stderr.contains("loading"),
            "{extra:?}: the model loaded first"
        );
    }
    assert!(!std::path::Path::new(out).exists());
}

#[test]
fn recipes_continue_clips_and_takes_they_rendered() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures().join("tiny-a");
    let model = model.to_str().unwrap();
    let out = dir.path().join("out");
    let recipe = dir.path().join("r.rhai");
    std::fs::write(
        &recipe,
        r#"render(piece("loud drums", 0.2).greedy(), "intro.wav");
           let next = piece("loud drums", 0.16).greedy().continue_from("intro.wav");
           print(next);
           render(next, "next.wav");
           render(piece("loud drums", 0.16).greedy().window(2.0, 1.0)
                    .continue_from("intro.wav", #{steer_from: "clip"}), "other.wav");"#,
    )
    .unwrap();
    let (ok, stderr) = baton(&[
        "render",
        recipe.to_str().unwrap(),
        "--model",
        model,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    // The same continuation through the render verb gives the same audio.
    let cli = dir.path().join("cli.wav");
    let (ok, stderr) = baton(&[
        "render",
        "--prompt",
        "loud drums",
        "--greedy",
        "--seconds",
        "0.16",
        "--model",
        model,
        "--continue",
        out.join("intro.wav").to_str().unwrap(),
        "--out",
        cli.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let read = |p: &std::path::Path| baton::audio::read_wav_mono(p).unwrap().0;
    let next = read(&out.join("next.wav"));
    assert_eq!(next.len(), (10 + 8) * 640, "clip and new frames");
    assert_eq!(next, read(&cli));
    // Unsteered, where the schedule counts from makes no difference.
    assert_eq!(read(&out.join("other.wav")), next);
    // Bad options are recipe errors.
    std::fs::write(
        &recipe,
        r#"let p = piece("a", 1.0).continue_from("missing.wav");"#,
    )
    .unwrap();
    let (ok, stderr) = baton(&[
        "render",
        recipe.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("not found"), "{stderr}");
}

/// Records the steps the decoder asks offsets for, and adds nothing.
struct StepLog {
    steps: Vec<usize>,
    none: Vec<Option<Tensor>>,
}

impl baton::model::ResidualHook for StepLog {
    fn offsets(&mut self, step: usize, _batch: usize) -> candle_core::Result<&[Option<Tensor>]> {
        self.steps.push(step);
        Ok(&self.none)
    }
}

#[test]
fn steering_sees_the_piece_steps_across_windows_and_never_the_clip() {
    let model = tiny_a();
    let k = model.num_codebooks();
    let clip = model.clip_codes(&f32s(&reference(), "clip")).unwrap();
    let extent = Extent {
        clip: Some(clip),
        window: Some(Window {
            frames: 15,
            stride: 10,
        }),
        ..Default::default()
    };
    let mut log = StepLog {
        steps: Vec::new(),
        none: vec![None; model.num_layers()],
    };
    let new = 20;
    model
        .generate_piece(
            &PROMPTS,
            &greedy(new + k - 1, 3.0),
            &extent,
            Some(&mut log),
            &mut |_, _| {},
            None,
        )
        .unwrap();
    // Three windows adding 5, 10 and 5 frames: each asks from the piece's frame it starts at,
    // for its new frames plus the delay pattern's k - 1 steps; the clip's frames never ask.
    let mut want = Vec::new();
    for (start, frames) in [(0, 5), (5, 10), (15, 5)] {
        want.extend(start..start + frames + k - 1);
    }
    assert_eq!(log.steps, want);
}

#[test]
fn a_continuation_can_steer_away_from_a_negative_prompt() {
    let model = tiny_a();
    let k = model.num_codebooks();
    let clip = model.clip_codes(&f32s(&reference(), "clip")).unwrap();
    let c = clip[0].len();
    let extent = Extent {
        clip: Some(clip.clone()),
        window: None,
        ..Default::default()
    };
    let run = |negative: Option<&str>| {
        let options = GenerateOptions {
            negative_prompt: negative.map(str::to_string),
            ..greedy(8 + k - 1, 3.0)
        };
        let codes = model
            .generate_piece(&PROMPTS, &options, &extent, None, &mut |_, _| {}, None)
            .unwrap();
        codes.to_vec3::<i64>().unwrap()
    };
    let plain = run(None);
    let away = run(Some("loud drums"));
    for item in [&plain, &away] {
        assert_eq!(
            item[0].iter().map(|r| r[..c].to_vec()).collect::<Vec<_>>(),
            clip
        );
    }
    assert_ne!(plain, away, "the negative prompt changed nothing");
}

#[test]
fn a_stereo_clip_at_another_rate_is_mixed_and_resampled() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("stereo16k.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 16000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&clip, spec).unwrap();
    for i in 0..3200 {
        let v = ((i as f32 * 0.07).sin() * 8000.0) as i16;
        w.write_sample(v).unwrap();
        w.write_sample(-v / 2).unwrap();
    }
    w.finalize().unwrap();
    let out = dir.path().join("out.wav");
    let model = fixtures().join("tiny-a");
    let (ok, stderr) = baton(&[
        "render",
        "--prompt",
        "a",
        "--greedy",
        "--max-new-tokens",
        "11",
        "--model",
        model.to_str().unwrap(),
        "--continue",
        clip.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    // 0.2 s of clip is 10 frames at 32 kHz, then 8 new frames, 640 samples each.
    let (audio, rate) = baton::audio::read_wav_mono(&out).unwrap();
    assert_eq!((audio.len(), rate), ((10 + 8) * 640, 32000));
}
