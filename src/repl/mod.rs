//! The REPL's logic, apart from the terminal: `:commands`, multi-line input, and what each
//! input answers. One [`Session`] lives for the whole REPL, so variables, functions, imports and
//! loaded models stay between lines; `baton repl` (src/cli/repl.rs) adds line editing and history.

use std::path::{Path, PathBuf};

use rhai::Dynamic;

use crate::files::folder_of;
use crate::script::{ScriptError, Session, VERBS};
use crate::steer::library::{library_table, list_library};

/// What the user typed, once complete.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Recipe code to run.
    Eval(String),
    /// Run a recipe file inside the session (`:load FILE`).
    Load(PathBuf),
    /// List the session's variables and imports (`:vars`).
    Vars,
    /// List the direction library, or the names starting with a prefix (`:library [PREFIX]`).
    Library(String),
    /// Forget every variable and function (`:clear`).
    Clear,
    /// Show the commands and verbs (`:help`).
    Help,
    /// Show one verb's signature (`:doc NAME`).
    Doc(String),
    /// Leave (`:quit`, `:q`, `:exit`, or end of input).
    Quit,
}

/// What `:doc NAME` says: the verb's line of [`VERBS`], or the verbs whose names start with or
/// contain `name` when none is called that.
pub fn doc(name: &str) -> String {
    let lines: Vec<&str> = VERBS
        .iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, line)| *line)
        .collect();
    if !lines.is_empty() {
        let mut out = lines.join("\n");
        for (_, example) in crate::script::EXAMPLES.iter().filter(|(n, _)| *n == name) {
            out.push_str(&format!("\nexample: {example}"));
        }
        return out;
    }
    let near: Vec<&str> = VERBS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| n.starts_with(name) || n.contains(name))
        .collect();
    if near.is_empty() {
        format!("no verb {name:?} (:help lists them)")
    } else {
        format!("no verb {name:?}; did you mean {}?", near.join(", "))
    }
}

/// REPL commands: name, argument and what it does.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    (":help", "", "this list, then every recipe verb"),
    (
        ":load",
        "FILE",
        "run a recipe file here; its variables stay",
    ),
    (":vars", "", "the variables and imports so far"),
    (
        ":library",
        "[PREFIX]",
        "the direction library: blocks, best block and score, classifier",
    ),
    (":doc", "NAME", "one verb's signature and what it does"),
    (":clear", "", "forget every variable and function"),
    (":quit", "", "leave (also Ctrl-D)"),
];

impl Command {
    /// Parses one complete input: a `:command`, or recipe code.
    pub fn parse(input: &str) -> Result<Command, String> {
        let trimmed = input.trim();
        let Some(rest) = trimmed.strip_prefix(':') else {
            return Ok(Command::Eval(input.to_string()));
        };
        let (name, arg) = rest
            .split_once(char::is_whitespace)
            .map_or((rest, ""), |(n, a)| (n, a.trim()));
        let no_arg = |c: Command| {
            if arg.is_empty() {
                Ok(c)
            } else {
                Err(format!(":{name} takes no argument"))
            }
        };
        match name {
            "help" | "h" | "?" => no_arg(Command::Help),
            "vars" => no_arg(Command::Vars),
            "library" | "lib" => Ok(Command::Library(arg.to_string())),
            "clear" => no_arg(Command::Clear),
            "quit" | "q" | "exit" => no_arg(Command::Quit),
            "doc" | "d" if arg.is_empty() => {
                Err(":doc needs a verb's name (:help lists them)".into())
            }
            "doc" | "d" => Ok(Command::Doc(arg.trim_start_matches('.').to_string())),
            "load" | "l" if arg.is_empty() => Err(":load needs a recipe file".into()),
            "load" | "l" => Ok(Command::Load(PathBuf::from(arg))),
            _ => Err(format!(
                "unknown command :{name} (commands: {})",
                COMMANDS.iter().map(|c| c.0).collect::<Vec<_>>().join(" ")
            )),
        }
    }
}

/// What an input answers.
#[derive(Debug)]
pub enum Reply {
    /// Nothing to show (a statement, or a value of `()`).
    Nothing,
    /// Text to show.
    Text(String),
    /// A recipe error, as a report pointing into the input.
    Error(Box<ScriptError>),
    /// The user is done.
    Quit,
}

/// A REPL over one session.
pub struct Repl {
    session: Session,
    inputs: usize,
}

impl Repl {
    /// A REPL over `session` (whose leading imports then stay for later lines).
    pub fn new(mut session: Session) -> Self {
        session.keep_imports();
        Repl { session, inputs: 0 }
    }

    /// Whether `input` (the lines so far, each ending in a newline) needs more lines before it
    /// can run: an open bracket or a trailing operator, or a `let` with no `;` yet, so a
    /// piece can be built over several lines (`let p = piece(..)` then `.steer(..)`). An
    /// empty line runs what there is; commands never wait.
    pub fn needs_more(&self, input: &str) -> bool {
        let code = input.trim();
        if code.is_empty() || code.starts_with(':') || input.ends_with("\n\n") {
            return false;
        }
        let open_let = (code.starts_with("let ") || code.starts_with("const "))
            && !code.contains(';')
            && !code.ends_with('}');
        open_let || self.session.is_incomplete(input)
    }

    /// Runs one complete input.
    /// Stops the piece playing in the background (Ctrl-C at an empty prompt): what it did, or
    /// `None` when nothing plays.
    pub fn stop_playing(&self) -> Option<String> {
        self.session.stop_playing()
    }

    pub fn handle(&mut self, input: &str) -> Reply {
        if input.trim().is_empty() {
            return Reply::Nothing;
        }
        let command = match Command::parse(input) {
            Ok(c) => c,
            Err(e) => return Reply::Text(e),
        };
        match command {
            Command::Eval(code) => {
                self.inputs += 1;
                let name = format!("input {}", self.inputs);
                let result = self.session.run(&name, &code);
                self.answer(result)
            }
            Command::Load(path) => match std::fs::read_to_string(&path) {
                Ok(source) => {
                    let name = path.display().to_string();
                    let result = self
                        .session
                        .run_in(&recipe_dir(Some(&path)), &name, &source);
                    self.answer(result.map(|_| Dynamic::UNIT))
                }
                Err(e) => Reply::Text(format!("cannot read {}: {e}", path.display())),
            },
            Command::Vars => Reply::Text(self.vars()),
            Command::Doc(name) => Reply::Text(doc(&name)),
            Command::Library(prefix) => Reply::Text(self.library(&prefix)),
            Command::Clear => {
                self.session.clear();
                Reply::Text("cleared: no variables, no functions (imports stay)".into())
            }
            Command::Help => Reply::Text(help()),
            Command::Quit => Reply::Quit,
        }
    }

    /// The audio files written since the last call (`render`s; plots are left out).
    pub fn take_rendered(&self) -> Vec<PathBuf> {
        self.session
            .take_outcome()
            .written
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav")))
            .collect()
    }

    fn answer(&self, result: Result<Dynamic, Box<ScriptError>>) -> Reply {
        match result {
            Ok(v) if v.is_unit() => Reply::Nothing,
            Ok(v) => Reply::Text(self.session.describe(&v)),
            Err(e) => Reply::Error(e),
        }
    }

    fn library(&self, prefix: &str) -> String {
        let dir = self.session.directions();
        if !dir.is_dir() {
            return format!(
                "no direction library at {} (baton repl --directions DIR)",
                dir.display()
            );
        }
        let entries = list_library(dir, prefix);
        if entries.is_empty() && prefix.is_empty() {
            return format!("{}: no bundles", dir.display());
        }
        if entries.is_empty() {
            return format!("{}: no bundles named {prefix}...", dir.display());
        }
        library_table(&entries)
    }

    fn vars(&self) -> String {
        let vars = self.session.variables();
        let imports = self.session.imports();
        let functions = self.session.functions();
        if vars.is_empty() && imports.is_empty() && functions.is_empty() {
            return "no variables yet".into();
        }
        let width = vars.iter().map(|(n, ..)| n.len()).max().unwrap_or(0);
        let ty_width = vars.iter().map(|(_, t, _)| t.len()).max().unwrap_or(0);
        let mut lines: Vec<String> = vars
            .iter()
            .map(|(name, ty, value)| format!("{name:width$}  {ty:ty_width$}  {value}"))
            .collect();
        if !functions.is_empty() {
            lines.push(format!("functions: {}", functions.join(", ")));
        }
        if !imports.is_empty() {
            lines.push(format!("imports: {}", imports.join(", ")));
        }
        lines.join("\n")
    }
}

/// Where a REPL started with `recipe` looks up relative bundle paths and modules.
pub fn recipe_dir(recipe: Option<&Path>) -> PathBuf {
    recipe.map_or(Path::new("."), folder_of).to_path_buf()
}

/// The `:help` text: the commands, then every recipe verb.
pub fn help() -> String {
    let mut lines = vec!["commands:".to_string()];
    let usage = |name: &str, arg: &str| format!("{name} {arg}").trim_end().to_string();
    let width = COMMANDS
        .iter()
        .map(|(name, arg, _)| usage(name, arg).len())
        .max()
        .unwrap_or(0);
    for (name, arg, what) in COMMANDS {
        lines.push(format!("  {:<width$}  {what}", usage(name, arg)));
    }
    lines.push("recipe verbs (an expression's value is printed):".into());
    lines.extend(VERBS.iter().map(|(_, usage)| format!("  {usage}")));
    lines.join("\n")
}

/// Names worth completing: the commands and the recipe verbs.
pub fn completions() -> Vec<&'static str> {
    let mut names: Vec<&str> = COMMANDS.iter().map(|c| c.0).collect();
    names.extend(VERBS.iter().map(|v| v.0));
    names.sort_unstable();
    names.dedup();
    names
}

/// What completion knows besides the verbs: the session's names and the direction library.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// The session's variables and functions.
    pub session: Vec<String>,
    /// The direction library's names (`notes:C#`).
    pub library: Vec<String>,
}

/// Completions of `line` at `pos`: where the replaced text starts, and the candidates. In
/// context: file names after `:load` and inside a string, library names inside
/// `direction("` or `probe("`, else command, verb and session names.
pub fn complete(line: &str, pos: usize, known: &Known) -> (usize, Vec<String>) {
    let before = &line[..pos.min(line.len())];
    if let Some(arg) = before
        .strip_prefix(":load ")
        .or_else(|| before.strip_prefix(":l "))
    {
        let start = before.len() - arg.len();
        return (start, file_names(arg));
    }
    // Inside a string when an odd number of quotes come before the cursor.
    if before.matches('"').count() % 2 == 1 {
        let quote = before.rfind('"').unwrap_or(0);
        let typed = &before[quote + 1..];
        let call = before[..quote].trim_end();
        let candidates = if call.ends_with("direction(") || call.ends_with("probe(") {
            known
                .library
                .iter()
                .filter(|n| n.starts_with(typed))
                .cloned()
                .collect()
        } else {
            file_names(typed)
        };
        return (quote + 1, candidates);
    }
    let start = before
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == ':'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let word = &before[start..];
    if word.is_empty() {
        return (start, Vec::new());
    }
    let mut found: Vec<String> = completions()
        .into_iter()
        .map(str::to_string)
        .chain(known.session.iter().cloned())
        .filter(|n| n.starts_with(word))
        .collect();
    found.sort();
    found.dedup();
    (start, found)
}

/// Paths that complete `typed` (a folder part and a name prefix), folders ending in `/`.
fn file_names(typed: &str) -> Vec<String> {
    let (dir, prefix) = match typed.rfind('/') {
        Some(i) => (&typed[..=i], &typed[i + 1..]),
        None => ("", typed),
    };
    let Ok(entries) = std::fs::read_dir(if dir.is_empty() { "." } else { dir }) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if !name.starts_with(prefix) || (name.starts_with('.') && !prefix.starts_with('.')) {
                return None;
            }
            let slash = if e.path().is_dir() { "/" } else { "" };
            Some(format!("{dir}{name}{slash}"))
        })
        .collect();
    names.sort();
    names
}

impl Repl {
    /// The session's variables and functions, by name (for completion).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .session
            .variables()
            .into_iter()
            .map(|(name, ..)| name)
            .collect();
        names.extend(
            self.session
                .functions()
                .into_iter()
                .filter_map(|f| f.split('(').next().map(str::to_string)),
        );
        // The members of the modules imported for the session: `alias::name`.
        names.extend(
            self.session
                .registered()
                .into_iter()
                .filter(|n| n.contains("::")),
        );
        names
    }

    /// The direction library's names.
    pub fn library_names(&self) -> Vec<String> {
        crate::steer::library::library_names(self.session.directions())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{DryRun, RecipeOptions};

    #[test]
    fn an_imported_modules_members_complete_after_its_alias() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("moves.rhai"),
            "fn swell(a) { a }\nfn sway() { 1 }\n",
        )
        .unwrap();
        let options = RecipeOptions {
            echo: false,
            ..RecipeOptions::default()
        };
        let session = Session::new(dir.path(), options, Box::new(DryRun::default()));
        let mut r = Repl::new(session);
        assert!(!matches!(
            r.handle("import \"moves\" as mv;"),
            Reply::Error(_)
        ));
        let known = Known {
            session: r.names(),
            library: Vec::new(),
        };
        let (start, found) = complete("mv::sw", 6, &known);
        assert_eq!(start, 0);
        assert_eq!(found, ["mv::sway", "mv::swell"]);
    }

    #[test]
    fn completion_follows_the_context() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("takes")).unwrap();
        std::fs::write(dir.path().join("takes/intro.rhai"), "").unwrap();
        let known = Known {
            session: vec!["swell".into(), "pad".into()],
            library: vec!["notes:C".into(), "notes:C#".into(), "chords:maj".into()],
        };
        // Verbs and the session's names.
        assert_eq!(
            complete("let x = sw", 10, &known),
            (8, vec!["swell".to_string()])
        );
        assert!(complete("pi", 2, &known).1.contains(&"piece".to_string()));
        // Library names inside direction(" and probe(".
        let line = "let d = direction(\"notes:C";
        let (start, found) = complete(line, line.len(), &known);
        assert_eq!(&line[..start], "let d = direction(\"");
        assert_eq!(found, ["notes:C", "notes:C#"]);
        // File names after :load and in other strings.
        let folder = format!("{}/ta", dir.path().display());
        let (_, found) = complete(&format!(":load {folder}"), 6 + folder.len(), &known);
        assert_eq!(found, [format!("{}/takes/", dir.path().display())]);
        let line = format!("render(p, \"{}/takes/in", dir.path().display());
        let (_, found) = complete(&line, line.len(), &known);
        assert_eq!(
            found,
            [format!("{}/takes/intro.rhai", dir.path().display())]
        );
    }

    fn repl() -> (Repl, DryRun) {
        let dry = DryRun::default();
        let options = RecipeOptions {
            echo: false,
            ..RecipeOptions::default()
        };
        let session = Session::new(Path::new("."), options, Box::new(dry.clone()));
        (Repl::new(session), dry)
    }

    fn text(r: Reply) -> String {
        match r {
            Reply::Text(t) => t,
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[test]
    fn the_library_command_lists_bundles_with_their_best_block() {
        let lib = tempfile::tempdir().unwrap();
        std::fs::create_dir(lib.path().join("notes")).unwrap();
        crate::probe::DirectionBundle {
            concept: "notes".into(),
            target: "C#".into(),
            model: "tiny".into(),
            hidden_size: 2,
            num_layers: 3,
            metric: "auc".into(),
            pooling: "mean".into(),
            scores: std::collections::BTreeMap::from([(0, 0.6), (2, 0.9)]),
            directions: std::collections::BTreeMap::from([
                (0, vec![1.0, 0.0]),
                (2, vec![0.0, 1.0]),
            ]),
            residual_norms: Default::default(),
            method: "rfm".into(),
        }
        .write(&lib.path().join("notes/C#.safetensors"))
        .unwrap();
        let at = |dir: &Path| {
            let options = RecipeOptions {
                echo: false,
                directions: dir.to_path_buf(),
                ..RecipeOptions::default()
            };
            Repl::new(Session::new(
                Path::new("."),
                options,
                Box::new(DryRun::default()),
            ))
        };
        let mut r = at(lib.path());
        let table = text(r.handle(":library"));
        assert!(
            table.contains("notes:C#") && table.contains("2 (auc 0.900)"),
            "{table}"
        );
        assert!(text(r.handle(":lib chords")).contains("no bundles named chords"));
        let mut none = at(&lib.path().join("missing"));
        assert!(text(none.handle(":library")).starts_with("no direction library"));
        let mut empty = at(&lib.path().join("notes/.."));
        std::fs::remove_file(lib.path().join("notes/C#.safetensors")).unwrap();
        assert!(text(empty.handle(":library")).ends_with(": no bundles"));
        assert_eq!(
            Command::parse(":lib notes"),
            Ok(Command::Library("notes".into()))
        );
    }

    #[test]
    fn help_covers_every_registered_verb() {
        let (r, _) = repl();
        let listed: std::collections::HashSet<&str> = VERBS.iter().map(|(n, _)| *n).collect();
        // A property (`get$name`) is listed as `.name` on the line of what has it.
        let property_listed = |p: &str| {
            VERBS.iter().any(|(_, line)| {
                line.match_indices(&format!(".{p}")).any(|(i, m)| {
                    !line[i + m.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
                })
            })
        };
        let mut missing: Vec<String> = r
            .session
            .registered()
            .into_iter()
            .filter(|n| n.starts_with(|c: char| c.is_ascii_lowercase()))
            .filter(|n| !matches!(n.as_str(), "to_string" | "to_debug"))
            .filter(|n| match n.strip_prefix("get$") {
                Some(p) => !property_listed(p),
                None => !listed.contains(n.as_str()),
            })
            .collect();
        missing.sort();
        missing.dedup();
        assert!(missing.is_empty(), "not in help: {missing:?}");
    }

    #[test]
    fn every_verb_has_an_example_that_compiles() {
        let (r, _) = repl();
        for (name, _) in VERBS {
            let examples: Vec<&str> = crate::script::EXAMPLES
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, e)| *e)
                .collect();
            assert!(!examples.is_empty(), "no example for {name}");
            for e in examples {
                assert!(
                    e.contains(name),
                    "the example of {name} does not use it: {e}"
                );
                assert!(
                    r.session.compiles(e),
                    "the example of {name} does not compile: {e}"
                );
            }
        }
    }

    #[test]
    fn doc_shows_one_verb_or_the_names_near_it() {
        assert!(doc("cfg").starts_with("piece.cfg(scale)"));
        assert!(
            doc("cfg").contains("example: let p = piece("),
            "{}",
            doc("cfg")
        );
        assert!(doc("top_k").contains("piece.top_k(k)"));
        assert!(doc("pla").contains("play, playing"), "{}", doc("pla"));
        assert!(doc("zzz").starts_with("no verb"));
        assert_eq!(Command::parse(":doc .cfg"), Ok(Command::Doc("cfg".into())));
        assert!(Command::parse(":doc").is_err());
    }

    #[test]
    fn commands_parse() {
        assert_eq!(Command::parse(" :q "), Ok(Command::Quit));
        assert_eq!(
            Command::parse(":load a b.rhai"),
            Ok(Command::Load("a b.rhai".into()))
        );
        assert!(Command::parse(":load").is_err());
        assert!(Command::parse(":vars x").is_err());
        assert!(Command::parse(":nope").unwrap_err().contains(":load"));
        assert_eq!(
            Command::parse("let a = 1;"),
            Ok(Command::Eval("let a = 1;".into()))
        );
    }

    #[test]
    fn a_session_builds_up_and_renders() {
        let (mut r, dry) = repl();
        assert!(matches!(
            r.handle("let s = linear(0.0, 1.0, 0.0, 2.0);"),
            Reply::Nothing
        ));
        assert_eq!(text(r.handle("s.value(1.0)")), "0.5");
        assert!(r.needs_more("let p = piece(\"lofi\",\n"));
        assert!(r.needs_more("let p = piece(\"lofi\", 2.0)\n"));
        assert!(!r.needs_more("let p = piece(\"lofi\", 2.0)\n\n"));
        assert!(!r.needs_more("let p = piece(\"lofi\", 2.0);\n"));
        assert!(!r.needs_more("s.value(1.0)\n"));
        assert!(!r.needs_more("let x = 1; x\n"));
        assert!(!r.needs_more("let x = 1; // a note\n"));
        assert!(!r.needs_more(":vars\n"));
        assert!(matches!(
            r.handle("let p = piece(\"lofi\",\n 2.0).steer_none_yet;"),
            Reply::Error(_)
        ));
        assert!(matches!(
            r.handle("let p = piece(\"lofi\", 2.0);"),
            Reply::Nothing
        ));
        assert!(matches!(r.handle("render(p, \"a.wav\")"), Reply::Nothing));
        assert_eq!(dry.log().requests.len(), 1);
        assert_eq!(r.take_rendered(), vec![PathBuf::from("./a.wav")]);
        assert!(r.take_rendered().is_empty());
        assert_eq!(dry.log().requests[0].prompt, "lofi");
        let vars = text(r.handle(":vars"));
        assert!(
            vars.contains("s  Schedule") && vars.contains("p  Piece"),
            "{vars}"
        );
        assert!(text(r.handle(":clear")).starts_with("cleared"));
        assert!(matches!(r.handle("s"), Reply::Error(_)));
        assert!(matches!(r.handle(":quit"), Reply::Quit));
    }

    #[test]
    fn errors_name_the_input_they_come_from() {
        let (mut r, _) = repl();
        let _ = r.handle("let a = 1;");
        let Reply::Error(e) = r.handle("a +\n nosuch()") else {
            panic!("expected an error")
        };
        assert_eq!(e.location, Some(("input 2".into(), 2, 2)));
    }

    #[test]
    fn load_runs_a_file_into_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lib.rhai");
        std::fs::write(&file, "let swell = linear(0.0, 1.0, 0.0, 4.0);").unwrap();
        let (mut r, _) = repl();
        assert!(matches!(
            r.handle(&format!(":load {}", file.display())),
            Reply::Nothing
        ));
        assert_eq!(text(r.handle("swell.value(2.0)")), "0.5");
        assert!(text(r.handle(":load /no/such.rhai")).starts_with("cannot read"));
        // A loaded file's imports resolve beside it, not in the REPL's folder.
        std::fs::write(dir.path().join("helpers.rhai"), "fn half(x) { x / 2.0 }").unwrap();
        std::fs::write(
            dir.path().join("uses.rhai"),
            "import \"helpers\" as h;\nlet halved = h::half(3.0);",
        )
        .unwrap();
        let load = format!(":load {}", dir.path().join("uses.rhai").display());
        assert!(matches!(r.handle(&load), Reply::Nothing));
        assert_eq!(text(r.handle("halved")), "1.5");
    }

    #[test]
    fn a_retrained_bundle_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("notes");
        std::fs::create_dir_all(&lib).unwrap();
        let write = |score: f64| {
            crate::probe::DirectionBundle {
                concept: "notes".into(),
                target: "X".into(),
                model: "tiny".into(),
                hidden_size: 2,
                num_layers: 1,
                metric: "auc".into(),
                pooling: "mean".into(),
                scores: [(0, score)].into(),
                directions: [(0, vec![1.0, 0.0])].into(),
                residual_norms: Default::default(),
                method: "rfm".into(),
            }
            .write(&lib.join("X.safetensors"))
            .unwrap();
        };
        write(0.5);
        let options = RecipeOptions {
            directions: dir.path().to_path_buf(),
            echo: false,
            ..RecipeOptions::default()
        };
        let session = Session::new(Path::new("."), options, Box::new(DryRun::default()));
        let mut r = Repl::new(session);
        assert_eq!(text(r.handle("probe(\"notes:X\").best_score")), "0.5");
        // A longer score makes the file longer, so the change shows even on coarse file clocks.
        write(0.123_456_789_012_345_6);
        assert_eq!(
            text(r.handle("probe(\"notes:X\").best_score")),
            "0.1234567890123456"
        );
    }

    #[test]
    fn help_lists_commands_and_verbs() {
        let h = help();
        assert!(h.contains(":load FILE") && h.contains("piece(prompt, seconds)"));
        assert!(completions().contains(&"crossfade") && completions().contains(&":vars"));
        // every command's description starts in the same column
        let columns: Vec<usize> = COMMANDS
            .iter()
            .map(|(_, _, what)| {
                let line = h.lines().find(|l| l.ends_with(what)).expect("listed");
                line.len() - what.len()
            })
            .collect();
        assert!(columns.windows(2).all(|w| w[0] == w[1]), "{h}");
    }
}
