//! `import "name" as m;` for recipes: a module is `name.rhai` next to the recipe, or one of the
//! built-in `stdlib/` modules (`schedules`, `theory`), compiled into the binary so recipes work
//! from any folder. Modules run under the same sandbox as the recipe.

use std::path::{Component, Path};
use std::sync::Arc;

use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position, Scope};

use super::Host;

/// The built-in modules: name and source.
pub const STDLIB: &[(&str, &str)] = &[
    ("schedules", include_str!("../../stdlib/schedules.rhai")),
    ("theory", include_str!("../../stdlib/theory.rhai")),
];

/// Finds and compiles imported modules, remembering their source for error reports.
pub(crate) struct Resolver {
    host: Arc<Host>,
}

impl Resolver {
    pub(crate) fn new(host: Arc<Host>) -> Self {
        Resolver { host }
    }

    fn source_of(&self, path: &str) -> Option<String> {
        let p = Path::new(path);
        let plain = !p.is_absolute() && p.components().all(|c| matches!(c, Component::Normal(_)));
        if plain {
            let file = self.host.recipe_dir().join(format!("{path}.rhai"));
            if let Ok(text) = std::fs::read_to_string(file) {
                return Some(text);
            }
        }
        STDLIB
            .iter()
            .find(|(name, _)| *name == path)
            .map(|(_, text)| text.to_string())
    }
}

impl ModuleResolver for Resolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Arc<Module>, Box<EvalAltResult>> {
        let Some(text) = self.source_of(path) else {
            return Err(Box::new(EvalAltResult::ErrorModuleNotFound(
                path.to_string(),
                pos,
            )));
        };
        if let Ok(mut s) = self.host.sources.lock() {
            s.insert(path.to_string(), text.clone());
        }
        let in_module = |e: Box<EvalAltResult>| {
            Box::new(EvalAltResult::ErrorInModule(path.to_string(), e, pos))
        };
        let mut ast = engine
            .compile(&text)
            .map_err(|e| in_module(Box::new(e.into())))?;
        ast.set_source(path);
        let module = Module::eval_ast_as_new(Scope::new(), &ast, engine).map_err(in_module)?;
        Ok(module.into())
    }
}
