//! Owns the offline signature verification tests.
