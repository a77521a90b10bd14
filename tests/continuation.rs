//! Continuing a clip and pieces longer than one window, against transformers
//! (tests/reference/continuation_reference.py on tiny-a): the clip's codes, the continued codes
//! (exact) and audio (within 1e-4), and a window-by-window piece built by hand in transformers
//! (exact), with and without a clip.

use std::path::PathBuf;

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
        };
        assert!(model
            .generate_piece(&["a"], &greedy(8, 3.0), &extent, None, &mut |_, _| {}, None)
            .is_err());
    }
}
