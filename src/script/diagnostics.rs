//! Recipe errors as miette reports: the message, the source (the recipe or the imported module
//! where the error happened) with the line and column marked, the call chain that led there, and
//! a hint where one helps (closest function names, the sandbox limits).

use std::collections::BTreeMap;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};
use rhai::{Engine, EvalAltResult, Position};

use super::{closest, VERBS};

/// A recipe error, ready for miette to render.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
#[diagnostic(code(baton::recipe))]
pub struct ScriptError {
    /// One-line description.
    pub message: String,
    #[source_code]
    source_code: NamedSource<String>,
    #[label(collection)]
    labels: Vec<LabeledSpan>,
    /// A hint, when there is one.
    #[help]
    pub help: Option<String>,
    /// Where the failing code was called from, in other files.
    #[related]
    related: Vec<ScriptError>,
    /// Source name, line and column (1-based) of the error, when known.
    pub location: Option<(String, usize, usize)>,
}

impl ScriptError {
    /// An error with no source location (unreadable file, internal failure).
    pub fn plain(message: impl Into<String>) -> Self {
        ScriptError {
            message: message.into(),
            source_code: NamedSource::new("", String::new()),
            labels: Vec::new(),
            help: None,
            related: Vec::new(),
            location: None,
        }
    }
}

/// Byte span of the token at a Rhai position (1-based line and character column).
fn span_at(text: &str, pos: Position) -> Option<SourceSpan> {
    let (line, col) = (pos.line()?, pos.position().unwrap_or(1));
    let start_of_line: usize = text
        .split_inclusive('\n')
        .take(line - 1)
        .map(str::len)
        .sum();
    let rest = text.get(start_of_line..)?;
    let offset = start_of_line
        + rest
            .char_indices()
            .nth(col.saturating_sub(1))
            .map_or(rest.len(), |(i, _)| i);
    let tail = text.get(offset..).unwrap_or("");
    let word = tail
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
        .map_or(tail.len(), |(i, _)| i);
    Some(SourceSpan::new(offset.into(), word.max(1).min(tail.len())))
}

struct Frame {
    source: String,
    pos: Position,
    note: String,
}

fn hint(err: &EvalAltResult, engine: &Engine) -> Option<String> {
    match err {
        EvalAltResult::ErrorTooManyOperations(..) => Some(
            "recipes run sandboxed with a limit on operations: is there an endless loop?".into(),
        ),
        // Only the run budget ends a run this way (see sandbox::Budget): its token is the reason.
        EvalAltResult::ErrorTerminated(reason, _) => Some(reason.to_string()),
        EvalAltResult::ErrorStackOverflow(..) => {
            Some("recipes run sandboxed with a limit on call depth: runaway recursion?".into())
        }
        EvalAltResult::ErrorDataTooLarge(..) => {
            Some("recipes run sandboxed with limits on string, array and map sizes".into())
        }
        EvalAltResult::ErrorTooManyModules(..) => {
            Some("recipes run sandboxed with a limit on imported modules".into())
        }
        EvalAltResult::ErrorFunctionNotFound(sig, _) => {
            let name = sig.split([' ', '(']).next().unwrap_or(sig);
            let usage: Vec<&str> = VERBS
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, u)| *u)
                .collect();
            if !usage.is_empty() {
                return Some(format!("usage: {}", usage.join("; ")));
            }
            let sigs = engine.gen_fn_signatures(false);
            let names: Vec<&str> = sigs
                .iter()
                .filter_map(|s| s.split('(').next())
                .chain(VERBS.iter().map(|(n, _)| *n))
                .collect();
            let near = closest(name, names, 3);
            (!near.is_empty()).then(|| format!("did you mean {}?", near.join(", ")))
        }
        EvalAltResult::ErrorModuleNotFound(..) => Some(
            "modules are NAME.rhai next to the recipe, or the built-in `schedules` and `theory`"
                .into(),
        ),
        _ => None,
    }
}

fn message(err: &EvalAltResult) -> String {
    match err {
        EvalAltResult::ErrorRuntime(d, _) if d.is_string() => d.to_string(),
        EvalAltResult::ErrorParsing(p, _) => format!("syntax error: {p}"),
        EvalAltResult::ErrorFunctionNotFound(sig, _) => {
            let (name, args) = sig.split_once(' ').unwrap_or((sig.as_str(), ""));
            if VERBS.iter().any(|(n, _)| *n == name) {
                format!("`{name}` cannot be called with {args}")
            } else {
                format!("unknown function `{name}` {args}")
            }
        }
        _ => {
            let text = err.to_string();
            let suffix = format!(" ({})", err.position());
            text.strip_suffix(&suffix).unwrap_or(&text).to_string()
        }
    }
}

/// Builds the report for an error of the recipe named `main` (sources: name -> text).
pub fn report(
    err: &EvalAltResult,
    main: &str,
    sources: &BTreeMap<String, String>,
    engine: &Engine,
) -> ScriptError {
    let mut frames = Vec::new();
    let mut source = main.to_string();
    let mut err = err;
    loop {
        match err {
            EvalAltResult::ErrorInModule(name, inner, pos) => {
                frames.push(Frame {
                    source: source.clone(),
                    pos: *pos,
                    note: format!("while importing `{name}`"),
                });
                source = name.clone();
                err = inner;
            }
            EvalAltResult::ErrorInFunctionCall(name, fn_source, inner, pos) => {
                frames.push(Frame {
                    source: source.clone(),
                    pos: *pos,
                    note: format!("in this call to `{name}`"),
                });
                if !fn_source.is_empty() {
                    source = fn_source.clone();
                }
                err = inner;
            }
            _ => break,
        }
    }
    let msg = message(err);
    let text = sources.get(&source).cloned().unwrap_or_default();
    let mut labels = Vec::new();
    let location = err
        .position()
        .line()
        .map(|l| (source.clone(), l, err.position().position().unwrap_or(1)));
    if let Some(span) = span_at(&text, err.position()) {
        labels.push(LabeledSpan::new_primary_with_span(
            Some("here".into()),
            span,
        ));
    }
    let mut related = Vec::new();
    for f in frames.iter().rev() {
        if f.source == source {
            if let Some(span) = span_at(&text, f.pos) {
                labels.push(LabeledSpan::new_with_span(Some(f.note.clone()), span));
            }
        } else {
            let other = sources.get(&f.source).cloned().unwrap_or_default();
            related.push(ScriptError {
                message: format!("called from {}", f.source),
                labels: span_at(&other, f.pos)
                    .map(|s| LabeledSpan::new_with_span(Some(f.note.clone()), s))
                    .into_iter()
                    .collect(),
                source_code: NamedSource::new(f.source.clone(), other),
                help: None,
                related: Vec::new(),
                location: f
                    .pos
                    .line()
                    .map(|l| (f.source.clone(), l, f.pos.position().unwrap_or(1))),
            });
        }
    }
    let mut help = hint(err, engine);
    // The same error is raised for `name::f()` with no `import ... as name` in scope: then the
    // position is at the name, not at an import's quoted path.
    if let EvalAltResult::ErrorModuleNotFound(name, pos) = err {
        let at_path = span_at(&text, *pos).is_some_and(|sp| text[sp.offset()..].starts_with('"'));
        if !at_path {
            help = Some(format!(
                "`{name}::` names no imported module: add `import \"NAME\" as {name};` before \
                 it (in the REPL an import stays only when it starts an input)"
            ));
        }
    }
    ScriptError {
        message: msg,
        source_code: NamedSource::new(source, text),
        labels,
        help,
        related,
        location,
    }
}
