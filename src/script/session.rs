//! A recipe session: one sandboxed engine and one scope that outlive a single run, so a REPL
//! can feed it line after line (variables, functions and imports stay) and a recipe file is
//! just one run of a fresh session.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, ParseErrorType, Position, Scope, AST};

use super::{build_engine, diagnostics, Host, RecipeOptions, RecipeOutcome, Renderer, ScriptError};

/// An engine, its scope, and the functions defined so far.
pub struct Session {
    host: Arc<Host>,
    engine: Engine,
    scope: Scope<'static>,
    /// Functions defined by earlier runs (statements are dropped once run).
    functions: AST,
    /// Whether leading imports stay for later runs (the REPL).
    keep_imports: bool,
    /// Aliases of modules imported for the rest of the session.
    imports: Vec<String>,
}

impl Session {
    /// The direction library folder names like `notes:C#` resolve in.
    pub fn directions(&self) -> &Path {
        &self.host.options.directions
    }

    /// A session whose relative bundle paths and user modules resolve in `recipe_dir`.
    pub fn new(recipe_dir: &Path, options: RecipeOptions, renderer: Box<dyn Renderer>) -> Self {
        let host = Arc::new(Host {
            options,
            recipe_dir: Mutex::new(recipe_dir.to_path_buf()),
            model: Mutex::new(None),
            curves: Mutex::new(Vec::new()),
            renderer: Mutex::new(renderer),
            written: Mutex::new(Vec::new()),
            run_outputs: Mutex::new(Vec::new()),
            budget: Default::default(),
            printed: Mutex::new(Vec::new()),
            sources: Mutex::new(BTreeMap::new()),
            bundles: Mutex::new(HashMap::new()),
            clap: Mutex::new(None),
        });
        let engine = build_engine(&host);
        Session {
            host,
            engine,
            scope: Scope::new(),
            functions: AST::empty(),
            keep_imports: false,
            imports: Vec::new(),
        }
    }

    /// Makes an `import "m" as a;` at the start of a run's source stay for later runs (a Rhai
    /// import otherwise ends with the run that made it): what a REPL wants, line after line.
    pub fn keep_imports(&mut self) {
        self.keep_imports = true;
    }

    /// Runs `source` (named `name` in error reports) in this session and returns the value of
    /// its last statement. Variables and functions it defines stay for later runs, and leading
    /// imports too after [`Session::keep_imports`].
    pub fn run(&mut self, name: &str, source: &str) -> Result<Dynamic, Box<ScriptError>> {
        if let Ok(mut s) = self.host.sources.lock() {
            s.insert(name.to_string(), source.to_string());
        }
        if let Ok(mut o) = self.host.run_outputs.lock() {
            o.clear();
        }
        self.host.budget.reset();
        let result = self.run_inner(name, source);
        result.map_err(|err| {
            let sources = self
                .host
                .sources
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default();
            Box::new(diagnostics::report(&err, name, &sources, &self.engine))
        })
    }

    /// [`Session::run`] with relative bundle paths and modules looked up in `dir` (a file
    /// loaded from another folder), and the session's own folder again afterwards.
    pub fn run_in(
        &mut self,
        dir: &Path,
        name: &str,
        source: &str,
    ) -> Result<Dynamic, Box<ScriptError>> {
        let own = self.host.recipe_dir();
        if let Ok(mut d) = self.host.recipe_dir.lock() {
            *d = dir.to_path_buf();
        }
        let result = self.run(name, source);
        if let Ok(mut d) = self.host.recipe_dir.lock() {
            *d = own;
        }
        result
    }

    fn run_inner(&mut self, name: &str, source: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        let mut source = source.to_string();
        if self.keep_imports {
            let imports = leading_imports(&source);
            for import in &imports {
                let module = self.engine.module_resolver().resolve(
                    &self.engine,
                    Some(name),
                    &import.path,
                    import.position,
                )?;
                self.engine
                    .register_static_module(import.alias.as_str(), module);
                if !self.imports.contains(&import.alias) {
                    self.imports.push(import.alias.clone());
                }
            }
            // The modules are in place: blank the statements (keeping every other line and
            // column where it was) so they do not run again. Last first: a blank may be shorter
            // in bytes than a statement with a multi-byte path, which would move later spans.
            for import in imports.iter().rev() {
                let blank: String = source[import.span.clone()]
                    .chars()
                    .map(|c| if c == '\n' { c } else { ' ' })
                    .collect();
                source.replace_range(import.span.clone(), &blank);
            }
        }
        let mut ast = self.engine.compile_with_scope(&self.scope, &source)?;
        ast.set_source(name);
        let program = self.functions.merge(&ast);
        let value = self
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut self.scope, &program);
        // Keep the functions even when a later statement failed: they were defined.
        self.functions = program.clone_functions_only();
        value
    }

    /// Whether `source` compiles in this session (its syntax, and the operators it uses).
    pub fn compiles(&self, source: &str) -> bool {
        self.engine.compile_with_scope(&self.scope, source).is_ok()
    }

    /// Whether `source` is an unfinished input (an open block, string or call): a REPL then
    /// reads another line instead of reporting an error.
    pub fn is_incomplete(&self, source: &str) -> bool {
        match self.engine.compile_with_scope(&self.scope, source) {
            Ok(_) => false,
            Err(e) => {
                let at_end = source.trim_end().lines().count() <= e.position().line().unwrap_or(0)
                    || matches!(*e.0, ParseErrorType::UnexpectedEOF);
                at_end
                    && matches!(
                        *e.0,
                        ParseErrorType::UnexpectedEOF
                            | ParseErrorType::MissingToken(..)
                            | ParseErrorType::UnknownOperator(_)
                    )
            }
        }
    }

    /// How a value prints in a recipe (`print(value)`), through the registered `to_string`.
    pub fn describe(&self, value: &Dynamic) -> String {
        FnPtr::new("to_string")
            .ok()
            .and_then(|f| {
                f.call::<String>(&self.engine, &self.functions, (value.clone(),))
                    .ok()
            })
            .unwrap_or_else(|| value.to_string())
    }

    /// The session's variables: name, type and value (as `print` shows it, its first line cut
    /// to 60 characters), in the order they were made.
    pub fn variables(&self) -> Vec<(String, String, String)> {
        let mut vars: Vec<(String, String, String)> = self
            .scope
            .iter_raw()
            .map(|(name, _, value)| {
                let shown = self.describe(value);
                let mut first = shown.lines().next().unwrap_or("").to_string();
                if first.chars().count() > 60 || shown.lines().nth(1).is_some() {
                    first = first.chars().take(59).collect::<String>() + "…";
                }
                (
                    name.to_string(),
                    self.engine.map_type_name(value.type_name()).to_string(),
                    first,
                )
            })
            .collect();
        // The scope lists the newest first.
        vars.reverse();
        vars
    }

    /// The functions the session's inputs defined, as `name(params)`.
    pub fn functions(&self) -> Vec<String> {
        self.functions
            .iter_functions()
            .map(|f| format!("{}({})", f.name, f.params.join(", ")))
            .collect()
    }

    /// Names of every function the engine has registered (the recipe verbs, operators and
    /// conversions among them).
    pub fn registered(&self) -> Vec<String> {
        self.engine
            .gen_fn_signatures(false)
            .iter()
            .filter_map(|s| s.split('(').next().map(str::to_string))
            .collect()
    }

    /// Aliases of the modules imported for the whole session.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// Stops the piece playing in the background, if any: what it did, or `None`.
    pub fn stop_playing(&self) -> Option<String> {
        let mut renderer = self.host.renderer.try_lock().ok()?;
        renderer.playing()?;
        renderer.stop().ok()
    }

    /// Forgets every variable and function (imports and loaded models stay).
    pub fn clear(&mut self) {
        self.scope.clear();
        self.functions = AST::empty();
    }

    /// What the runs so far wrote and printed; the next call starts empty.
    pub fn take_outcome(&self) -> RecipeOutcome {
        let written = self
            .host
            .written
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        let printed = self
            .host
            .printed
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        RecipeOutcome { written, printed }
    }
}

/// One `import "path" as alias;` statement.
struct Import {
    path: String,
    alias: String,
    /// Byte range of the whole statement.
    span: std::ops::Range<usize>,
    /// Where the path is, for "module not found" reports.
    position: Position,
}

/// The `import "path" as alias;` statements that open `source`.
fn leading_imports(source: &str) -> Vec<Import> {
    let mut found = Vec::new();
    let mut at = source.len() - source.trim_start().len();
    loop {
        let rest = &source[at..];
        let Some(after) = rest.strip_prefix("import") else {
            break;
        };
        let after = after.trim_start();
        let path_at = source.len() - after.len();
        let Some(quoted) = after.strip_prefix('"') else {
            break;
        };
        let Some((path, after)) = quoted.split_once('"') else {
            break;
        };
        let Some(after) = after.trim_start().strip_prefix("as") else {
            break;
        };
        let after = after.trim_start();
        let alias: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let Some(after) = after[alias.len()..].trim_start().strip_prefix(';') else {
            break;
        };
        if alias.is_empty() {
            break;
        }
        let end = source.len() - after.len();
        let before = &source[..path_at];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        found.push(Import {
            path: path.to_string(),
            alias,
            span: at..end,
            position: Position::new(line as u16, column as u16),
        });
        at = end + (after.len() - after.trim_start().len());
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::DryRun;

    fn session() -> Session {
        let options = RecipeOptions {
            echo: false,
            ..RecipeOptions::default()
        };
        Session::new(Path::new("."), options, Box::new(DryRun::default()))
    }

    #[test]
    fn variables_functions_and_imports_outlive_a_run() {
        let mut s = session();
        s.keep_imports();
        let _ = s.run("in:1", "let a = 2; fn twice(x) { 2 * x }").unwrap();
        let _ = s.run("in:2", "import \"schedules\" as sch;").unwrap();
        let v = s.run("in:3", "twice(a) + 1").unwrap();
        assert_eq!(v.as_int().unwrap(), 5);
        let v = s
            .run("in:4", "sch::swell(0.0, 1.0, 2.0).value(1.0)")
            .unwrap();
        assert!(v.as_float().unwrap() > 0.0);
        assert_eq!(s.imports(), ["sch"]);
        let _ = s.run("in:5", "let z = \"x\";").unwrap();
        let names: Vec<String> = s.variables().into_iter().map(|(n, ..)| n).collect();
        assert_eq!(names, ["a", "z"], "in the order they were made");
        assert_eq!(
            s.variables()[0],
            ("a".to_string(), "i64".to_string(), "2".to_string())
        );
        assert_eq!(s.functions(), ["twice(x)"]);
        s.clear();
        assert!(s.run("in:6", "a").is_err());
    }

    #[test]
    fn errors_point_at_the_input_that_failed() {
        let mut s = session();
        let _ = s.run("in:1", "let a = 1;").unwrap();
        let err = s.run("in:2", "let b = a +\n  nosuch(1);").unwrap_err();
        let (name, line, _) = err.location.clone().unwrap();
        assert_eq!((name.as_str(), line), ("in:2", 2));
        // The session goes on after an error.
        assert_eq!(s.run("in:3", "a").unwrap().as_int().unwrap(), 1);
    }

    #[test]
    fn unfinished_input_is_told_apart_from_a_mistake() {
        let s = session();
        assert!(s.is_incomplete("let p = piece(\"x\","));
        assert!(s.is_incomplete("fn f(x) {"));
        assert!(s.is_incomplete("let s = linear(0.0,"));
        assert!(!s.is_incomplete("let a = 1;"));
        assert!(!s.is_incomplete("let = 3;"));
    }

    #[test]
    fn values_print_as_recipes_print_them() {
        let mut s = session();
        let v = s.run("in:1", "linear(0.0, 1.0, 0.0, 2.0)").unwrap();
        assert_eq!(s.describe(&v), "linear(0, 1, 0, 2)");
        assert_eq!(s.describe(&Dynamic::from(3_i64)), "3");
    }

    #[test]
    fn leading_imports_are_found() {
        let src = "import \"schedules\" as s;\n import \"theory\"  as  t ; let x = 1;";
        let found = leading_imports(src);
        let pairs: Vec<_> = found
            .iter()
            .map(|i| (i.path.as_str(), i.alias.as_str()))
            .collect();
        assert_eq!(pairs, vec![("schedules", "s"), ("theory", "t")]);
        assert_eq!(&src[found[1].span.clone()], "import \"theory\"  as  t ;");
        assert_eq!(found[1].position, Position::new(2, 9));
        assert!(leading_imports("let x = 1; import \"a\" as b;").is_empty());
        assert!(leading_imports("import \"a\";").is_empty());
    }

    #[test]
    fn a_kept_import_runs_its_module_once_and_reports_where_it_failed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("noisy.rhai"),
            "print(\"module loaded\");\nfn f() { 1 }",
        )
        .unwrap();
        std::fs::write(dir.path().join("chœur.rhai"), "fn g() { 2 }").unwrap();
        for keep in [false, true] {
            let options = RecipeOptions {
                echo: false,
                ..RecipeOptions::default()
            };
            let mut s = Session::new(dir.path(), options, Box::new(DryRun::default()));
            if keep {
                s.keep_imports();
            }
            let v = s
                .run(
                    "in:1",
                    "import \"chœur\" as c;\nimport \"noisy\" as n;\nn::f() + c::g()",
                )
                .unwrap();
            assert_eq!(v.as_int().unwrap(), 3);
            assert_eq!(
                s.take_outcome().printed,
                vec!["module loaded"],
                "keep {keep}"
            );
            let err = s
                .run("in:2", "let a = 1;\nimport \"nosuch\" as q;")
                .unwrap_err();
            assert_eq!(err.location.as_ref().map(|l| l.1), Some(2), "keep {keep}");
            let err = s.run("in:3", "import \"nosuch\" as q;").unwrap_err();
            assert_eq!(
                err.location.as_ref().map(|l| (l.1, l.2)),
                Some((1, 8)),
                "keep {keep}"
            );
        }
    }
}
