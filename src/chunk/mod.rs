//! Content below the layer (bundle format version 2): layers split into tar metadata and file
//! payloads (`tarsplit`), payloads cut where their content says (`cdc`), each layer's exact
//! rebuild written down as a recipe (`recipe`), worked out once per layer and cached in the
//! store (`analyze`).
pub mod analyze;
pub mod cdc;
pub mod recipe;
pub mod tarsplit;
