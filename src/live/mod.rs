//! Watch mode: re-run a recipe each time it, a module beside it, or a direction bundle changes.
//!
//! A run is a transaction (glicol's `update_with_code`): its renders go to staged files next to
//! their targets, and only when the whole recipe has run without an error are they renamed into
//! place. A recipe that fails (a typo mid-edit, a bad direction name) leaves every file from the
//! last good run as it was, and the error is shown.
//!
//! Re-running regenerates only what changed: a render whose request (model, prompt, length,
//! sampling, seed, directions, layer weights) and per-step steering coefficients equal those of
//! the file's last render, with the file untouched since, is skipped. So editing one piece of a
//! multi-piece recipe re-renders that piece alone.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{new_debouncer, DebounceEventResult};

use crate::files::{
    content_hash, folder_of, move_into_place, stamp, track_in_flight, untrack_in_flight,
};
use crate::probe::eval::{PooledWindow, Windowing};
use crate::probe::Pooling;
use crate::script::{
    run_file, CurveSampler, RecipeOptions, RecipeOutcome, RenderRequest, Rendered, Renderer,
    ScriptError,
};

/// Steps sampled past the piece's length when fingerprinting its plan: generation runs a few
/// steps longer than `seconds * frame_rate` (the codebook delays).
const FINGERPRINT_MARGIN_STEPS: usize = 8;

/// Size and modification time: how a file is recognised as the one baton last wrote.
type Stamp = (u64, SystemTime);

/// A render waiting for its run to succeed.
struct Pending {
    staged: PathBuf,
    out: PathBuf,
    fingerprint: u64,
}

/// A [`Renderer`] wrapper that stages every file and skips renders whose result is already on
/// disk. [`Staged::commit`] or [`Staged::rollback`] ends each run.
pub struct Staged<R> {
    inner: R,
    /// Fingerprint and stamp of each file as it was committed, by [`comparable`] path.
    committed: HashMap<PathBuf, (u64, Stamp)>,
    pending: Vec<Pending>,
    /// Renders skipped in the current run because their file already holds them.
    unchanged: usize,
}

impl<R: Renderer> Staged<R> {
    /// Wraps `inner`, which does the actual rendering.
    pub fn new(inner: R) -> Self {
        Staged {
            inner,
            committed: HashMap::new(),
            pending: Vec::new(),
            unchanged: 0,
        }
    }

    /// Moves this run's staged files into place and remembers what they hold. On an error the
    /// files moved before it stay moved; the error names them.
    pub fn commit(&mut self) -> Result<Vec<PathBuf>, String> {
        self.unchanged = 0;
        let mut moved = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        for (i, p) in pending.iter().enumerate() {
            if let Err(e) = move_into_place(&p.staged, &p.out) {
                for rest in &pending[i..] {
                    discard(&rest.staged);
                }
                let replaced: Vec<String> = moved
                    .iter()
                    .map(|m: &PathBuf| m.display().to_string())
                    .collect();
                return Err(format!(
                    "cannot move {} to {}: {e} (replaced before this: {})",
                    p.staged.display(),
                    p.out.display(),
                    if replaced.is_empty() {
                        "none".into()
                    } else {
                        replaced.join(", ")
                    }
                ));
            }
            if let Some(s) = stamp(&p.out) {
                self.committed
                    .insert(comparable(&p.out), (p.fingerprint, s));
            }
            moved.push(p.out.clone());
        }
        Ok(moved)
    }

    /// Deletes this run's staged files; the files of the last good run stay.
    pub fn rollback(&mut self) {
        self.unchanged = 0;
        for p in std::mem::take(&mut self.pending) {
            discard(&p.staged);
        }
    }

    /// The staged file standing in for `path` in the current run, if there is one.
    fn staged_for(&self, path: &Path) -> Option<&Path> {
        let key = comparable(path);
        self.pending
            .iter()
            .find(|p| comparable(&p.out) == key)
            .map(|p| p.staged.as_path())
    }
}

/// `path` with its folder resolved, so `out/a.wav` and `./out/a.wav` compare equal.
fn comparable(path: &Path) -> PathBuf {
    match (std::fs::canonicalize(folder_of(path)), path.file_name()) {
        (Ok(d), Some(name)) => d.join(name),
        _ => path.to_path_buf(),
    }
}

/// Deletes a staged file that will not be moved into place.
fn discard(staged: &Path) {
    let _ = std::fs::remove_file(staged);
    untrack_in_flight(staged);
}

/// Where a render for `out` waits for its run to succeed: a hidden file beside it.
fn staging_path(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned());
    out.with_file_name(format!(".{}.baton-staged", name.unwrap_or_default()))
}

/// Everything that decides a render's audio, hashed: the request without its output path,
/// and the plan's coefficient per term and step (schedules, gates and user curves included).
fn fingerprint(request: &RenderRequest, coefficients: &[Vec<f64>]) -> u64 {
    let mut h = DefaultHasher::new();
    let mut request = request.clone();
    request.out = PathBuf::new();
    crate::script::hash_debug(&mut h, &request);
    for term in coefficients {
        for c in term {
            c.to_bits().hash(&mut h);
        }
    }
    h.finish()
}

impl<R: Renderer> Renderer for Staged<R> {
    fn render(
        &mut self,
        request: &RenderRequest,
        curves: &mut CurveSampler<'_>,
    ) -> Result<Rendered, String> {
        let rate = self.inner.frame_rate(&request.model)?;
        let steps = (request.seconds * rate).ceil() as usize + FINGERPRINT_MARGIN_STEPS;
        let coefficients = request
            .plan
            .coefficients(steps, rate, curves)
            .map_err(|e| e.to_string())?;
        // A clip this run rendered is still staged: its take is what the piece continues, and
        // what the fingerprint must know of.
        let mut request = request.clone();
        let mut clip_take = None;
        if let Some(clip) = request.clip.as_mut() {
            if let Some(take) = self.staged_for(&clip.path) {
                clip.hash = content_hash(take).unwrap_or(0);
                clip_take = Some(take.to_path_buf());
            }
            // Its length follows from its contents, which the hash covers; a staged take's is
            // not known yet.
            clip.seconds = 0.0;
        }
        let request = &request;
        let fingerprint = fingerprint(request, &coefficients);
        // A second render to the same file in one run replaces the first.
        let key = comparable(&request.out);
        if let Some(i) = self.pending.iter().position(|p| comparable(&p.out) == key) {
            discard(&self.pending.remove(i).staged);
        }
        if let Some((f, s)) = self.committed.get(&key) {
            if *f == fingerprint && stamp(&request.out).as_ref() == Some(s) {
                self.unchanged += 1;
                return Ok(Rendered::Unchanged);
            }
        }
        let staged = staging_path(&request.out);
        let mut staged_request = request.clone();
        staged_request.out = staged.clone();
        if let (Some(clip), Some(take)) = (staged_request.clip.as_mut(), clip_take) {
            clip.path = take;
        }
        // Only a finished render waits for the commit: a failed one (which the recipe may
        // catch and go on) leaves nothing to move.
        self.inner.render(&staged_request, curves)?;
        track_in_flight(&staged);
        self.pending.push(Pending {
            staged,
            out: request.out.clone(),
            fingerprint,
        });
        Ok(Rendered::Staged)
    }

    fn play(
        &mut self,
        request: &RenderRequest,
        play: &crate::script::PlayOptions,
        curves: &mut CurveSampler<'_>,
    ) -> Result<String, String> {
        // Playing is not a file: nothing to stage.
        self.inner.play(request, play, curves)
    }

    fn stop(&mut self) -> Result<String, String> {
        self.inner.stop()
    }

    fn wait(&mut self) -> Result<String, String> {
        self.inner.wait()
    }

    fn playing(&mut self) -> Option<String> {
        self.inner.playing()
    }

    fn frame_rate(&mut self, model: &str) -> Result<f64, String> {
        self.inner.frame_rate(model)
    }

    fn staged(&self, path: &Path) -> Option<PathBuf> {
        self.staged_for(path).map(Path::to_path_buf)
    }

    fn pooled(
        &mut self,
        model: &str,
        audio: &Path,
        layers: &[usize],
        pooling: Pooling,
        windowing: Option<Windowing>,
    ) -> Result<Vec<PooledWindow>, String> {
        // A clip rendered earlier in this run is read from its staged file.
        let audio = self.staged_for(audio).unwrap_or(audio).to_path_buf();
        self.inner.pooled(model, &audio, layers, pooling, windowing)
    }
}

/// How one run of the recipe went.
#[derive(Debug)]
pub enum RunReport {
    /// The recipe ran to the end; its files are in place.
    Done {
        /// Files rendered (or re-rendered) by this run.
        rendered: Vec<PathBuf>,
        /// Renders skipped because their file already held them.
        unchanged: usize,
        /// Everything the run printed, `rendered ...` and `unchanged ...` lines included.
        outcome: RecipeOutcome,
        /// How long the run took.
        took: Duration,
    },
    /// The recipe failed; the previous run's files are untouched.
    Failed(Box<ScriptError>),
    /// The recipe ran, but a file could not be moved into place (the message names the files
    /// moved before it).
    MoveFailed(String),
}

/// A recipe and the renderer that keeps its models loaded between runs.
pub struct Live<R> {
    recipe: PathBuf,
    options: RecipeOptions,
    renderer: Arc<Mutex<Staged<R>>>,
}

impl<R: Renderer + 'static> Live<R> {
    /// Watches `recipe`, rendering with `renderer`.
    pub fn new(recipe: &Path, options: RecipeOptions, renderer: R) -> Self {
        Live {
            recipe: recipe.to_path_buf(),
            options,
            renderer: Arc::new(Mutex::new(Staged::new(renderer))),
        }
    }

    /// Runs the recipe once, as a transaction.
    pub fn run_once(&self) -> RunReport {
        let start = Instant::now();
        let result = run_file(
            &self.recipe,
            self.options.clone(),
            Box::new(self.renderer.clone()),
        );
        let Ok(mut staged) = self.renderer.lock() else {
            return RunReport::Failed(Box::new(ScriptError::plain(
                "the renderer panicked in an earlier run",
            )));
        };
        let unchanged = staged.unchanged;
        match result {
            Ok(outcome) => match staged.commit() {
                Ok(rendered) => RunReport::Done {
                    rendered,
                    unchanged,
                    outcome,
                    took: start.elapsed(),
                },
                Err(e) => RunReport::MoveFailed(e),
            },
            Err(e) => {
                staged.rollback();
                RunReport::Failed(e)
            }
        }
    }

    /// The folders whose changes re-run the recipe: the recipe's own (it and its modules),
    /// and the direction library when it exists.
    fn watched(&self) -> Vec<(PathBuf, RecursiveMode)> {
        let dir = folder_of(&self.recipe).to_path_buf();
        let mut watched = vec![(dir, RecursiveMode::NonRecursive)];
        if self.options.directions.is_dir() {
            watched.push((self.options.directions.clone(), RecursiveMode::Recursive));
        }
        watched
    }

    /// Runs the recipe now and again after every change, telling `report` what happens, until
    /// `report` returns `false` or watching fails. Saves that land within `debounce` of each
    /// other make one run.
    pub fn watch(
        &self,
        debounce: Duration,
        mut report: impl FnMut(WatchEvent) -> bool,
    ) -> Result<(), String> {
        let (tx, rx) = mpsc::channel::<DebounceEventResult>();
        let mut debouncer =
            new_debouncer(debounce, tx).map_err(|e| format!("cannot watch files: {e}"))?;
        let mut contents = HashMap::new();
        for (path, mode) in self.watched() {
            debouncer
                .watcher()
                .watch(&path, mode)
                .map_err(|e| format!("cannot watch {}: {e}", path.display()))?;
            for file in relevant_files(&path, mode) {
                contents.insert(comparable(&file), content_hash(&file));
            }
        }
        if !report(WatchEvent::Ran(self.run_once())) {
            return Ok(());
        }
        for events in rx {
            // A watcher hiccup (e.g. a full event queue) loses events, not the session.
            let events = match events {
                Ok(events) => events,
                Err(e) => {
                    if !report(WatchEvent::Missed(e.to_string())) {
                        break;
                    }
                    continue;
                }
            };
            // Reading a file is an event too (each run reads the recipe), and saving the same
            // text changes nothing: only new contents, or a file appearing or vanishing, count.
            let mut changed: Vec<PathBuf> = events
                .iter()
                .filter(|e| relevant(&e.path))
                .filter(|e| {
                    let now = content_hash(&e.path);
                    contents.insert(comparable(&e.path), now) != Some(now)
                })
                .map(|e| e.path.clone())
                .collect();
            changed.dedup();
            if changed.is_empty() {
                continue;
            }
            if !report(WatchEvent::Changed(changed)) || !report(WatchEvent::Ran(self.run_once())) {
                break;
            }
        }
        Ok(())
    }
}

/// What [`Live::watch`] reports.
#[derive(Debug)]
pub enum WatchEvent {
    /// These files changed; a run follows.
    Changed(Vec<PathBuf>),
    /// A run ended.
    Ran(RunReport),
    /// The watcher lost events (a full queue, say): a change may have been missed.
    Missed(String),
}

/// The files under `dir` whose changes count (see [`relevant`]).
fn relevant_files(dir: &Path, mode: RecursiveMode) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if mode == RecursiveMode::Recursive {
                found.extend(relevant_files(&path, mode));
            }
        } else if relevant(&path) {
            found.push(path);
        }
    }
    found
}

/// Whether a changed file can change what the recipe renders: a recipe or module, or a
/// direction bundle. Audio written by the run itself (and its staged files) is not.
fn relevant(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'));
    !hidden
        && path
            .extension()
            .is_some_and(|e| e == "rhai" || e == "safetensors")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::DryRun;

    /// Writes a file per render (its prompt and seed), counting renders; "reads" audio as a
    /// constant state, remembering which files it was given.
    #[derive(Default)]
    struct Scribe {
        renders: usize,
        read: Vec<PathBuf>,
        /// Write WAV files (a tenth of the seed, held) instead of text.
        wav: bool,
        /// Per render continuing a clip: the clip's first sample as it was read.
        continued: Vec<f32>,
    }

    impl Renderer for Scribe {
        fn render(
            &mut self,
            request: &RenderRequest,
            curves: &mut CurveSampler<'_>,
        ) -> Result<Rendered, String> {
            DryRun::default().render(request, curves)?;
            if request.prompt == "fails" {
                return Err("this render fails".into());
            }
            self.renders += 1;
            if let Some(dir) = request.out.parent() {
                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            }
            if let Some(clip) = &request.clip {
                let (audio, _) =
                    crate::audio::read_wav_mono(&clip.path).map_err(|e| e.to_string())?;
                self.continued.push(audio[0]);
            }
            if self.wav {
                let level = request.seed as f32 / 10.0;
                crate::audio::write_wav(&request.out, &[level; 64], 32000, Default::default())
                    .map_err(|e| e.to_string())?;
                return Ok(Rendered::Written);
            }
            let text = format!("{} {}", request.prompt, request.seed);
            std::fs::write(&request.out, text).map_err(|e| e.to_string())?;
            Ok(Rendered::Written)
        }

        fn pooled(
            &mut self,
            _model: &str,
            audio: &Path,
            layers: &[usize],
            _pooling: Pooling,
            _windowing: Option<Windowing>,
        ) -> Result<Vec<PooledWindow>, String> {
            std::fs::metadata(audio).map_err(|e| format!("{}: {e}", audio.display()))?;
            self.read.push(audio.to_path_buf());
            Ok(vec![PooledWindow {
                start: 0.0,
                end: 1.0,
                blocks: layers.iter().map(|_| vec![7.0; 4]).collect(),
            }])
        }
    }

    fn live(dir: &Path, recipe: &str) -> Live<Scribe> {
        let path = dir.join("piece.rhai");
        std::fs::write(&path, recipe).unwrap();
        let options = RecipeOptions {
            out_dir: dir.join("out"),
            echo: false,
            ..RecipeOptions::default()
        };
        Live::new(&path, options, Scribe::default())
    }

    fn renders(live: &Live<Scribe>) -> usize {
        live.renderer.lock().unwrap().inner.renders
    }

    const TWO_PIECES: &str = r#"
        render(piece("a", 1.0).seed(1), "a.wav");
        render(piece("b", 1.0).seed(2).steer(direction("x.safetensors"), 0.5 * linear(0.0, 1.0, 0.0, 1.0)), "b.wav");
    "#;

    fn with_bundle(dir: &Path) {
        let unit = |i: usize| (0..4).map(|j| f32::from(u8::from(i == j))).collect();
        crate::probe::DirectionBundle {
            concept: "x".into(),
            target: "y".into(),
            model: "tiny".into(),
            hidden_size: 4,
            num_layers: 2,
            metric: "auc".into(),
            pooling: "mean".into(),
            scores: [(0, 0.6), (1, 0.9)].into(),
            directions: [(0, unit(0)), (1, unit(1))].into(),
            residual_norms: Default::default(),
            method: "rfm".into(),
        }
        .write(&dir.join("x.safetensors"))
        .unwrap();
    }

    #[test]
    fn a_piece_continues_the_take_its_run_is_putting_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let recipe = |seed: u64| {
            format!(
                r#"render(piece("a", 1.0).seed({seed}), "a.wav");
                   render(piece("b", 1.0).seed(2).continue_from("a.wav"), "b.wav");"#
            )
        };
        let l = live(dir.path(), &recipe(1));
        l.renderer.lock().unwrap().inner.wav = true;
        assert!(matches!(l.run_once(), RunReport::Done { .. }), "first run");
        assert_eq!(l.renderer.lock().unwrap().inner.continued, vec![0.1]);
        // A new take of "a": "b" continues it, though its own settings did not change.
        std::fs::write(&l.recipe, recipe(5)).unwrap();
        assert!(matches!(l.run_once(), RunReport::Done { .. }), "second run");
        assert_eq!(l.renderer.lock().unwrap().inner.continued, vec![0.1, 0.5]);
        assert_eq!(renders(&l), 4);
        // Nothing changed: neither is rendered again.
        assert!(matches!(l.run_once(), RunReport::Done { .. }), "third run");
        assert_eq!(renders(&l), 4);
    }

    #[test]
    fn a_failed_run_leaves_the_last_good_files() {
        let dir = tempfile::tempdir().unwrap();
        with_bundle(dir.path());
        let l = live(dir.path(), TWO_PIECES);
        assert!(matches!(l.run_once(), RunReport::Done { .. }));
        let a = dir.path().join("out/a.wav");
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "a 1");
        // The edit renders a new "a" and then fails: "a" must not change.
        std::fs::write(
            &l.recipe,
            "render(piece(\"a\", 1.0).seed(9), \"a.wav\");\nnosuch();",
        )
        .unwrap();
        let RunReport::Failed(err) = l.run_once() else {
            panic!("the run should fail")
        };
        assert_eq!(err.location.as_ref().map(|l| l.1), Some(2));
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "a 1");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            2,
            "staged files left behind: {leftovers:?}"
        );
        // Fixed, it goes through.
        std::fs::write(&l.recipe, "render(piece(\"a\", 1.0).seed(9), \"a.wav\");").unwrap();
        assert!(matches!(l.run_once(), RunReport::Done { .. }));
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "a 9");
    }

    #[test]
    fn only_changed_pieces_are_rendered_again() {
        let dir = tempfile::tempdir().unwrap();
        with_bundle(dir.path());
        let l = live(dir.path(), TWO_PIECES);
        l.run_once();
        assert_eq!(renders(&l), 2);
        l.run_once();
        assert_eq!(renders(&l), 2, "nothing changed, nothing rendered");
        // A schedule change in "b" only.
        std::fs::write(
            &l.recipe,
            TWO_PIECES.replace("0.0, 1.0, 0.0, 1.0", "0.0, 1.0, 0.0, 0.5"),
        )
        .unwrap();
        let RunReport::Done { rendered, .. } = l.run_once() else {
            panic!("run failed")
        };
        assert_eq!(renders(&l), 3);
        assert_eq!(rendered, vec![dir.path().join("out/b.wav")]);
        // A user curve whose body changes is noticed through its sampled values.
        let curve = |k: &str| {
            format!("render(piece(\"a\", 1.0).seed(1).steer(direction(\"x.safetensors\"), curve(|t| {k} * t)), \"a.wav\");")
        };
        std::fs::write(&l.recipe, curve("0.5")).unwrap();
        l.run_once();
        std::fs::write(&l.recipe, curve("0.5")).unwrap();
        l.run_once();
        assert_eq!(renders(&l), 4);
        std::fs::write(&l.recipe, curve("0.25")).unwrap();
        l.run_once();
        assert_eq!(renders(&l), 5);
        // A file changed or removed behind baton's back is rendered again.
        std::fs::remove_file(dir.path().join("out/a.wav")).unwrap();
        l.run_once();
        assert_eq!(renders(&l), 6);
    }

    #[test]
    fn a_render_error_the_recipe_catches_does_not_break_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let l = live(
            dir.path(),
            r#"render(piece("a", 1.0), "a.wav");
               try { render(piece("fails", 1.0), "b.wav"); } catch (e) { print(e); }"#,
        );
        let RunReport::Done { rendered, .. } = l.run_once() else {
            panic!("the run should succeed")
        };
        assert_eq!(rendered, vec![dir.path().join("out/a.wav")]);
        assert!(!dir.path().join("out/b.wav").exists());
        // And the next run is not poisoned by it.
        assert!(matches!(l.run_once(), RunReport::Done { unchanged: 1, .. }));
    }

    #[test]
    fn a_take_rendered_in_this_run_is_read_from_its_staged_file() {
        let dir = tempfile::tempdir().unwrap();
        with_bundle(dir.path());
        // The first run: out/a.wav does not exist yet under its own name.
        let take = dir.path().join("out/a.wav");
        let l = live(
            dir.path(),
            &format!(
                "render(piece(\"a\", 1.0), \"a.wav\");\n\
                 print(probe(\"x.safetensors\").project({:?}).projection);",
                take.display().to_string()
            ),
        );
        let RunReport::Done { outcome, .. } = l.run_once() else {
            panic!("the run should succeed")
        };
        assert_eq!(outcome.printed.last().map(String::as_str), Some("7.0"));
        let read = l.renderer.lock().unwrap().inner.read.clone();
        assert_eq!(read.len(), 1);
        assert!(
            read[0].to_string_lossy().ends_with(".a.wav.baton-staged"),
            "{read:?}"
        );
    }

    #[test]
    fn clap_reads_a_take_of_this_run_from_its_staged_file() {
        let dir = tempfile::tempdir().unwrap();
        let take = dir.path().join("out/a.wav");
        let recipe = dir.path().join("piece.rhai");
        std::fs::write(
            &recipe,
            format!(
                "render(piece(\"a\", 1.0).seed(3), \"a.wav\");\n\
                 print(clap({:?}, \"a tune\"));",
                take.display().to_string()
            ),
        )
        .unwrap();
        let clap_model = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clap/tiny-a");
        let options = RecipeOptions {
            out_dir: dir.path().join("out"),
            echo: false,
            clap_model: clap_model.into(),
            ..RecipeOptions::default()
        };
        let l = Live::new(&recipe, options, Scribe::default());
        l.renderer.lock().unwrap().inner.wav = true;
        let RunReport::Done { outcome, .. } = l.run_once() else {
            panic!("the run should succeed")
        };
        let got: f64 = outcome.printed.last().unwrap().parse().unwrap();
        // The take, now in place, scores the same.
        let clap = crate::eval::clap::Clap::load(clap_model, &candle_core::Device::Cpu).unwrap();
        let (x, rate) = crate::audio::read_wav_mono(&take).unwrap();
        let want = crate::eval::clap::cosine(
            &clap.embed_audio(&x, rate).unwrap(),
            &clap.embed_text("a tune").unwrap(),
        );
        assert_eq!(got, want as f64);
    }

    #[test]
    fn own_outputs_do_not_retrigger() {
        assert!(relevant(Path::new("dir/piece.rhai")));
        assert!(relevant(Path::new("lib/notes/C.safetensors")));
        assert!(!relevant(Path::new("out/a.wav")));
        assert!(!relevant(Path::new("out/.a.wav.baton-staged")));
        assert!(!relevant(Path::new("dir/.piece.rhai.swp")));
    }
}
