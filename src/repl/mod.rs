//! The interactive recipe REPL (rustyline) with `:commands`.
