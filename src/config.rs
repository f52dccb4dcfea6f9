//! config.toml: serde structs, defaults, validation.
