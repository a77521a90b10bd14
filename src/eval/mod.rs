//! Metrics on generated audio, sweeps and plots.
