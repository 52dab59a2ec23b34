//! The `secrets-store` command line: `demo`, `validate` and `mount`. Each subcommand is a library
//! function so tests drive it without a process.

pub mod demo;
pub mod local;
pub mod mount;
pub mod validate;
