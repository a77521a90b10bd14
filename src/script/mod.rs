//! The Rhai engine for recipes: registered types and functions, sandbox, diagnostics.
