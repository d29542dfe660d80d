//! `hirewire serve`'s Email Connect outbox settings (`--outbox-*`,
//! `HIREWIRE_OUTBOX_*`). Who has Email Connect (the rollout) is not set here.

use std::time::Duration;

use anyhow::bail;
use clap::Args;
use hirewire_server::outbox::{OutboxConfig, Pacing};

const MIB: u64 = 1024 * 1024;

#[derive(Args, Debug, Clone)]
pub struct OutboxArgs {
    /// Seconds a worker holds a claimed outgoing email before another worker may take it over (a crashed
    /// instance's email waits this long). Renewed when the provider call starts; the call is cut off at three
    /// quarters of it (then looked up before any resend), so even a short lease never lets an email be sent
    /// twice. Keep it above the provider timeout (30 s a request), or slow sends are cut off early.
    #[arg(long, env = "HIREWIRE_OUTBOX_LEASE_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub outbox_lease_secs: u64,
    /// Milliseconds an idle outbox worker waits before looking for due emails again (how late a scheduled email
    /// can go out at most, besides pacing).
    #[arg(long, env = "HIREWIRE_OUTBOX_POLL_INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub outbox_poll_interval_ms: u64,
    /// Provider attempts before an outgoing email is marked failed (lookups after an uncertain send count too).
    #[arg(long, env = "HIREWIRE_OUTBOX_MAX_ATTEMPTS", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub outbox_max_attempts: u32,
    /// Seconds before the first retry; the delay doubles per attempt up to --outbox-backoff-max-secs (a
    /// provider's Retry-After is honoured when longer).
    #[arg(long, env = "HIREWIRE_OUTBOX_BACKOFF_BASE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub outbox_backoff_base_secs: u64,
    /// Longest delay between retries, in seconds.
    #[arg(long, env = "HIREWIRE_OUTBOX_BACKOFF_MAX_SECS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub outbox_backoff_max_secs: u64,
    /// Emails sent per mailbox per --outbox-pacing-window-secs (Exchange Online allows about 30 a minute);
    /// 0 turns pacing off. An email over the pace waits, and the pages say so.
    #[arg(long, env = "HIREWIRE_OUTBOX_PACING_PER_WINDOW", default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub outbox_pacing_per_window: u32,
    /// The pacing window, in seconds.
    #[arg(long, env = "HIREWIRE_OUTBOX_PACING_WINDOW_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub outbox_pacing_window_secs: u64,
    /// Seconds before an email held back (Email Connect turned off for the sender, a permission missing) is
    /// looked at again.
    #[arg(long, env = "HIREWIRE_OUTBOX_HOLD_RECHECK_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub outbox_hold_recheck_secs: u64,
    /// Largest single attachment, in MiB (the compose page and the API refuse larger ones).
    #[arg(long, env = "HIREWIRE_OUTBOX_MAX_ATTACHMENT_MB", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=150))]
    pub outbox_max_attachment_mb: u64,
    /// Largest sum of one email's attachments, in MiB. Gmail takes messages up to 35 MB, about 25 MiB of
    /// attachments once encoded; Graph up to 150 MB.
    #[arg(long, env = "HIREWIRE_OUTBOX_MAX_TOTAL_ATTACHMENT_MB", default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=150))]
    pub outbox_max_total_attachment_mb: u64,
}

impl OutboxArgs {
    /// Refuses settings that contradict each other.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.outbox_backoff_base_secs > self.outbox_backoff_max_secs {
            bail!(
                "--outbox-backoff-base-secs ({}) must not exceed --outbox-backoff-max-secs ({})",
                self.outbox_backoff_base_secs,
                self.outbox_backoff_max_secs
            );
        }
        if self.outbox_max_attachment_mb > self.outbox_max_total_attachment_mb {
            bail!(
                "--outbox-max-attachment-mb ({}) must not exceed --outbox-max-total-attachment-mb ({})",
                self.outbox_max_attachment_mb,
                self.outbox_max_total_attachment_mb
            );
        }
        Ok(())
    }

    /// The outbox settings these flags give (who has Email Connect is not
    /// among them: it is the database flag, see `hirewire flags`).
    pub fn apply(&self) -> anyhow::Result<OutboxConfig> {
        self.check()?;
        let bytes = |mb: u64| usize::try_from(mb * MIB).unwrap_or(usize::MAX);
        Ok(OutboxConfig {
            lease: Duration::from_secs(self.outbox_lease_secs),
            poll_interval: Duration::from_millis(self.outbox_poll_interval_ms),
            max_attempts: self.outbox_max_attempts,
            backoff_base: Duration::from_secs(self.outbox_backoff_base_secs),
            backoff_max: Duration::from_secs(self.outbox_backoff_max_secs),
            pacing: (self.outbox_pacing_per_window > 0).then(|| Pacing {
                per_window: self.outbox_pacing_per_window,
                window: Duration::from_secs(self.outbox_pacing_window_secs),
            }),
            hold_recheck: Duration::from_secs(self.outbox_hold_recheck_secs),
            max_attachment_bytes: bytes(self.outbox_max_attachment_mb),
            max_total_attachment_bytes: bytes(self.outbox_max_total_attachment_mb),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        outbox: OutboxArgs,
    }

    fn parse(args: &[&str]) -> Result<OutboxConfig, String> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.outbox.apply().map_err(|e| e.to_string())
    }

    #[test]
    fn without_flags_the_settings_are_the_library_defaults() {
        let parsed = parse(&[]).unwrap();
        let default = OutboxConfig::default();
        assert_eq!(parsed.lease, default.lease);
        assert_eq!(parsed.poll_interval, default.poll_interval);
        assert_eq!(parsed.max_attempts, default.max_attempts);
        assert_eq!(parsed.backoff_base, default.backoff_base);
        assert_eq!(parsed.backoff_max, default.backoff_max);
        assert_eq!(parsed.pacing, default.pacing);
        assert_eq!(parsed.hold_recheck, default.hold_recheck);
        assert_eq!(parsed.max_attachment_bytes, default.max_attachment_bytes);
        assert_eq!(
            parsed.max_total_attachment_bytes,
            default.max_total_attachment_bytes
        );
    }

    #[test]
    fn every_setting_has_a_flag() {
        let c = parse(&[
            "--outbox-lease-secs=600",
            "--outbox-poll-interval-ms=250",
            "--outbox-max-attempts=3",
            "--outbox-backoff-base-secs=5",
            "--outbox-backoff-max-secs=60",
            "--outbox-pacing-per-window=10",
            "--outbox-pacing-window-secs=30",
            "--outbox-hold-recheck-secs=120",
            "--outbox-max-attachment-mb=3",
            "--outbox-max-total-attachment-mb=10",
        ])
        .unwrap();
        assert_eq!(c.lease, Duration::from_secs(600));
        assert_eq!(c.poll_interval, Duration::from_millis(250));
        assert_eq!(c.max_attempts, 3);
        assert_eq!(c.backoff_base, Duration::from_secs(5));
        assert_eq!(c.backoff_max, Duration::from_secs(60));
        assert_eq!(
            c.pacing,
            Some(Pacing {
                per_window: 10,
                window: Duration::from_secs(30)
            })
        );
        assert_eq!(c.hold_recheck, Duration::from_secs(120));
        assert_eq!(c.max_attachment_bytes, 3 * 1024 * 1024);
        assert_eq!(c.max_total_attachment_bytes, 10 * 1024 * 1024);
    }

    #[test]
    fn pacing_zero_turns_pacing_off() {
        assert_eq!(
            parse(&["--outbox-pacing-per-window=0"]).unwrap().pacing,
            None
        );
    }

    #[test]
    fn out_of_range_and_inconsistent_settings_are_refused() {
        for bad in [
            &["--outbox-lease-secs=0"][..],
            &["--outbox-poll-interval-ms=0"],
            &["--outbox-max-attempts=0"],
            &["--outbox-max-attachment-mb=0"],
            &["--outbox-max-total-attachment-mb=500"],
            &["--outbox-pacing-window-secs=0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} is refused");
        }
        let e = parse(&[
            "--outbox-backoff-base-secs=100",
            "--outbox-backoff-max-secs=10",
        ])
        .unwrap_err();
        assert!(e.contains("--outbox-backoff-base-secs"), "{e}");
        let e = parse(&[
            "--outbox-max-attachment-mb=30",
            "--outbox-max-total-attachment-mb=25",
        ])
        .unwrap_err();
        assert!(e.contains("--outbox-max-attachment-mb"), "{e}");
    }
}
