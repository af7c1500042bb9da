//! The `wharf` binary's commands that read and print (declared by `main.rs`, not by the
//! library).

pub mod history;
pub mod inspect;
pub mod report;
