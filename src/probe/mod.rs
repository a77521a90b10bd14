//! Probes: audio -> EnCodec codes -> decoder hidden states -> pooled features, probe training and
//! direction bundle files.
