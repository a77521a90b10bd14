//! `baton repl [RECIPE]`: explore directions and schedules line by line. One session for the
//! whole REPL, so models load once; line editing, history and completion come from rustyline.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use baton::repl::{complete, recipe_dir, Known, Repl, Reply};
use baton::script::Session;
use clap::Args;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use super::recipe::{PlayArgs, RecipeFlags};

/// Arguments of `baton repl`.
#[derive(Args, Debug)]
pub struct ReplArgs {
    /// A recipe to run first; its variables stay in the session.
    pub recipe: Option<PathBuf>,
    /// History file (default ~/.baton_history; `none` keeps no history).
    #[arg(long, env = "BATON_HISTORY")]
    pub history: Option<String>,
    #[command(flatten)]
    pub play: PlayArgs,
    #[command(flatten)]
    pub flags: RecipeFlags,
}

/// Completes in context (see [`baton::repl::complete`]); what it knows of the session is
/// refreshed after each input.
struct Names(Arc<Mutex<Known>>);

impl Completer for Names {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let known = self.0.lock().map(|k| k.clone()).unwrap_or_default();
        let (start, found) = complete(line, pos, &known);
        Ok((
            start,
            found
                .into_iter()
                .map(|n| Pair {
                    display: n.clone(),
                    replacement: n,
                })
                .collect(),
        ))
    }
}

impl Hinter for Names {
    type Hint = String;
}

impl Highlighter for Names {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Validator for Names {}

impl Helper for Names {}

fn history_path(arg: Option<&str>) -> Option<PathBuf> {
    match arg {
        Some("none") => None,
        Some(path) => Some(PathBuf::from(path)),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".baton_history")),
    }
}

fn show(reply: Reply) -> bool {
    match reply {
        Reply::Nothing => {}
        Reply::Text(t) => println!("{t}"),
        Reply::Error(e) => eprintln!("{:?}", miette::Report::new(*e)),
        Reply::Quit => return false,
    }
    true
}

/// Runs `baton repl` until `:quit` or end of input.
pub fn run(args: ReplArgs) -> miette::Result<()> {
    let options = args.flags.options()?;
    let _midi = super::play::connect_midi(args.play.midi.as_deref())?;
    let mut renderer = args.flags.renderer()?;
    if let Some(player) = args.play.stream_player()? {
        renderer = renderer.with_player(player);
    }
    let session = Session::new(
        &recipe_dir(args.recipe.as_deref()),
        options,
        Box::new(renderer),
    );
    let mut repl = Repl::new(session);
    let playback = args.play.playback()?;
    let answer = |repl: &Repl, reply: Reply| {
        let go_on = show(reply);
        if let Some(p) = &playback {
            let takes = repl.take_rendered();
            if !takes.is_empty() {
                p.play(takes);
            }
        }
        go_on
    };
    if let Some(recipe) = &args.recipe {
        let load = format!(":load {}", recipe.display());
        let reply = repl.handle(&load);
        if !answer(&repl, reply) {
            return Ok(());
        }
    }
    let mut editor: Editor<Names, DefaultHistory> =
        Editor::new().map_err(|e| miette::miette!("cannot start the line editor: {e}"))?;
    let known = Arc::new(Mutex::new(Known {
        session: repl.names(),
        library: repl.library_names(),
    }));
    editor.set_helper(Some(Names(known.clone())));
    let history = history_path(args.history.as_deref());
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!("baton repl: recipe code runs as you type it; :help lists commands and verbs");
    let mut input = String::new();
    // Whether an input failed (a piped session then exits non-zero), and Ctrl-Cs in a row at
    // an empty prompt.
    let (mut failed, mut interrupts) = (false, 0);
    loop {
        let prompt = if input.is_empty() {
            "baton> "
        } else {
            "  ...> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                input.push_str(&line);
                input.push('\n');
                if repl.needs_more(&input) {
                    continue;
                }
                let _ = editor.add_history_entry(input.trim_end());
                // Saved at once: a second Ctrl-C mid-input still ends the process.
                if let Some(h) = &history {
                    let _ = editor.save_history(h);
                }
                // While it runs, Ctrl-C stops the input (a render, a loop), not the session.
                let listening = baton::interrupt::listen();
                let reply = repl.handle(&input);
                drop(listening);
                input.clear();
                failed |= matches!(reply, Reply::Error(_));
                interrupts = 0;
                if let Ok(mut k) = known.lock() {
                    *k = Known {
                        session: repl.names(),
                        library: repl.library_names(),
                    };
                }
                if !answer(&repl, reply) {
                    break;
                }
            }
            // Ctrl-C at the prompt: drops the unfinished input, as in a shell; else stops the
            // piece playing; else, twice in a row, leaves.
            Err(ReadlineError::Interrupted) => {
                if !input.is_empty() {
                    input.clear();
                } else if let Some(said) = repl.stop_playing() {
                    println!("{said}");
                } else if interrupts > 0 {
                    break;
                } else {
                    interrupts += 1;
                    println!("(Ctrl-C again, or Ctrl-D, to leave)");
                }
            }
            Err(ReadlineError::Eof) => {
                // Input ended mid-statement: run what there is, so its error shows.
                if !input.trim().is_empty() {
                    let reply = repl.handle(&input);
                    failed |= matches!(reply, Reply::Error(_));
                    answer(&repl, reply);
                }
                break;
            }
            Err(e) => return Err(miette::miette!("cannot read input: {e}")),
        }
    }
    // Piped input (a script of REPL lines) tells its caller that something failed.
    if failed && !std::io::stdin().is_terminal() {
        return Err(miette::miette!("an input failed (see above)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustyline::history::DefaultHistory;

    #[test]
    fn completion_starts_after_the_last_separator_whatever_its_width() {
        let names = Names(Arc::new(Mutex::new(Known::default())));
        let history = DefaultHistory::new();
        let ctx = Context::new(&history);
        for line in ["let x = «pi", "let x = pi", "pi"] {
            let (start, found) = names.complete(line, line.len(), &ctx).unwrap();
            assert_eq!(&line[start..], "pi", "{line}");
            assert_eq!(found.len(), 1);
            assert_eq!(found[0].replacement, "piece");
        }
    }
}
