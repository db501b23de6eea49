//! The binary ruleset format (see `FORMAT.md`).
