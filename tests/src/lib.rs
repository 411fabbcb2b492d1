//! Helpers for the end-to-end tests: start `spindle server`, run kubectl against it.
