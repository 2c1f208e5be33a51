//! `conclave serve --test-lie KIND` (cargo feature `insecure-test-hooks` only): the server's
//! own listener is a `conclave bot` run in this process, whose report goes to
//! `--test-lie-report`. See `server::test_lie` for the lies.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use server::test_lie::{LieKind, TestLie};
use tracing::{info, warn};

#[derive(clap::Args, Debug)]
pub struct TestLieArgs {
    /// TESTS ONLY: lie to smuggle a listener into every meeting a host opens: host-link,
    /// invitation, cohost-admitted, cohost-role or forged-invite.
    #[arg(long, value_name = "KIND")]
    test_lie: Option<String>,
    /// Where the listener writes its report (the JSON of `conclave bot --report`).
    #[arg(long, value_name = "PATH")]
    test_lie_report: Option<PathBuf>,
    /// How long the listener stays, in seconds.
    #[arg(long, default_value_t = 15.0)]
    test_lie_duration: f64,
}

impl TestLieArgs {
    pub fn start(&self) -> Result<Option<Arc<TestLie>>> {
        let Some(kind) = &self.test_lie else {
            return Ok(None);
        };
        let kind: LieKind = kind.parse().map_err(anyhow::Error::msg)?;
        if !(self.test_lie_duration.is_finite() && self.test_lie_duration > 0.0) {
            anyhow::bail!("--test-lie-duration must be a positive number of seconds");
        }
        warn!(
            ?kind,
            "THIS SERVER LIES (test hook): it will try to smuggle a listener into meetings"
        );
        let report = self.test_lie_report.clone();
        let duration = Duration::from_secs_f64(self.test_lie_duration);
        let spawn = Arc::new(move |join: String, name: String| {
            let report = report.clone();
            tokio::spawn(async move {
                info!(%join, "test lie: the server's listener joins");
                let options = client::BotOptions::new(join, name, duration);
                let json = match client::run(options).await {
                    Ok(report) => serde_json::to_string_pretty(&report),
                    Err(e) => Ok(serde_json::json!({ "error": e.to_string() }).to_string()),
                };
                if let (Some(path), Ok(json)) = (report, json) {
                    // Written whole, then renamed, so a reader never sees half a report.
                    let partial = path.with_extension("partial");
                    if std::fs::write(&partial, json + "\n").is_err()
                        || std::fs::rename(&partial, &path).is_err()
                    {
                        warn!(path = %path.display(), "test lie: cannot write the listener's report");
                    }
                }
            });
        });
        Ok(Some(Arc::new(TestLie::new(kind, spawn))))
    }
}
