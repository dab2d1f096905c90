//! The TOML configuration: schema, defaults and validation.
