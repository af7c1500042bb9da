//! Compiles a wharf sync into a timely dataflow by wiring the operators of
//! `wharf-operators`, and delivers its output through a [`destination::Destination`].

pub mod cluster;
pub mod delivery;
pub mod destination;
pub mod diff_run;
pub mod governor;
pub mod live;
pub mod reader;
pub mod run;
