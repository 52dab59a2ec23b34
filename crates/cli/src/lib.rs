//! The `secrets-store` command line: `demo`, `validate`, `mount` and `status`. Each subcommand is a library
//! function so tests drive it without a process.

pub mod demo;
pub mod local;
pub mod mount;
pub mod status;
pub mod validate;
