//! A native Conclave participant: signaling, a str0m peer, and known media it can verify.
//! Powers `conclave bot` and the load generator.

pub mod bot;
pub mod clip;
pub mod doctor;
pub mod downlink;
pub mod join_url;
pub mod media_link;
pub mod meeting_links;
pub mod receive;
pub mod report;
pub mod tls;

pub use bot::{run, BotError, BotOptions};
pub use media_link::Transport;
pub use report::{LayerChange, ReceivedTrack, Report};
