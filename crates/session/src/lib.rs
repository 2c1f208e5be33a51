//! A participant's side of a Conclave meeting, with no IO: server messages and the passing of
//! time go in, messages to send and media keys come out. The native bot (`client`) and the
//! browser (through wasm) run the same code, so the two can never disagree about who commits,
//! who is admitted or which keys a frame needs.

pub mod group;

pub use group::{E2eeReport, GroupSession, LinkSecrets, Opened, Unopened};
