//! Shared by the concepts_* tests: which renderers to listen with.

#![allow(dead_code)]

use baton::concepts::{find_soundfont, Renderer, SoundFontLookup};

/// The model's sample rate, which the dataset uses by default.
pub const SR: u32 = 32000;

/// The General-MIDI SoundFont renderer, or `None` (with a message) when no SoundFont is
/// installed. With `BATON_REQUIRE_SOUNDFONT=1` (CI) a missing or broken SoundFont fails instead.
pub fn soundfont() -> Option<Renderer> {
    let required = std::env::var("BATON_REQUIRE_SOUNDFONT").is_ok_and(|v| v == "1");
    let path = match find_soundfont(None) {
        SoundFontLookup::NotFound => {
            assert!(
                !required,
                "BATON_REQUIRE_SOUNDFONT=1 but no SoundFont found: apt-get install -y \
                 timgm6mb-soundfont, or set BATON_SOUNDFONT"
            );
            eprintln!("skipping the SoundFont half of this test: no SoundFont installed");
            return None;
        }
        SoundFontLookup::Explicit(p)
        | SoundFontLookup::FromEnv(p)
        | SoundFontLookup::Standard(p) => p,
    };
    match Renderer::soundfont(&path, SR) {
        Ok(r) => Some(r),
        Err(e) => panic!("SoundFont {} does not load: {e}", path.display()),
    }
}

/// The built-in synthesizer, and the SoundFont when there is one.
pub fn renderers() -> Vec<Renderer> {
    let mut v = vec![Renderer::builtin(SR).expect("built-in synth")];
    v.extend(soundfont());
    v
}
