//! Watch mode: file-watch reload of a recipe as a transaction, incremental regeneration.
