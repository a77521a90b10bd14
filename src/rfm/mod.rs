//! Recursive Feature Machines: kernel, fit loop, AGOP, hyperparameter search, eigen-directions,
//! metrics.
