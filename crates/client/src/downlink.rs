//! An emulated downlink on the bot's receive path: a bottleneck (rate and queue), delay and
//! random loss between the socket and the bot's WebRTC stack, so that the SFU sees real
//! congestion and loss feedback (NACK, TWCC) from a bot on loopback.
//!
//! The emulation itself is str0m's sans-IO `str0m-netem`; this module only shapes datagrams
//! with their source address and lets the limit lift at a set time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m_netem::{Bitrate, DataSize, Input, Netem, NetemConfig, Output, Probability, RandomLoss};

/// How the bot's downlink behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DownlinkShape {
    /// Bottleneck rate; None for no rate limit.
    pub kbps: Option<u64>,
    /// Random loss, 0.0 to 1.0.
    pub loss: f32,
    /// One-way delay added to every datagram.
    pub delay: Duration,
    /// The rate limit lifts (loss and delay stay) this long after the bot starts.
    pub lift_after: Option<Duration>,
}

impl DownlinkShape {
    /// True when the shape changes nothing.
    pub fn is_clear(&self) -> bool {
        self.kbps.is_none() && self.loss == 0.0 && self.delay.is_zero()
    }

    fn config(&self, limited: bool, seed: u64) -> NetemConfig {
        let mut config = NetemConfig::new()
            .latency(self.delay)
            .loss(RandomLoss::new(Probability::new(self.loss)))
            .seed(seed);
        if let (Some(kbps), true) = (self.kbps, limited) {
            // About 200 ms of queue at the bottleneck rate, like a home router's buffer.
            let queue = (kbps as i64 * 1000 / 8 / 5).max(3_000);
            config = config.link(Bitrate::kbps(kbps), DataSize::bytes(queue));
        }
        config
    }
}

/// A datagram on its way through the emulated link.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub source: SocketAddr,
    pub data: Vec<u8>,
}

impl AsRef<[u8]> for Datagram {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// The emulated link: datagrams go in with the time, come out when the link delivers them.
pub struct Downlink {
    shape: DownlinkShape,
    netem: Netem<Datagram>,
    started: Instant,
    limited: bool,
    seed: u64,
    pushed: u64,
    delivered: u64,
}

impl Downlink {
    pub fn new(shape: DownlinkShape, now: Instant, seed: u64) -> Self {
        Downlink {
            netem: Netem::new(shape.config(true, seed)),
            shape,
            started: now,
            limited: true,
            seed,
            pushed: 0,
            delivered: 0,
        }
    }

    fn lift_if_due(&mut self, now: Instant) {
        if let (true, Some(after)) = (self.limited, self.shape.lift_after) {
            if now.saturating_duration_since(self.started) >= after {
                self.limited = false;
                self.netem.set_config(self.shape.config(false, self.seed));
            }
        }
    }

    /// Datagrams the link lost (dropped at random or at a full queue) so far.
    pub fn dropped(&self) -> u64 {
        self.pushed - self.delivered - self.netem.queue_len() as u64
    }

    /// A datagram arrived from the network.
    pub fn push(&mut self, now: Instant, datagram: Datagram) {
        self.lift_if_due(now);
        self.pushed += 1;
        self.netem.handle_input(Input::Packet(now, datagram));
    }

    /// Datagrams the link delivers by `now`, and when it next will.
    pub fn deliver(&mut self, now: Instant, out: &mut Vec<Datagram>) -> Option<Instant> {
        self.lift_if_due(now);
        self.netem.handle_input(Input::Timeout(now));
        let mut next = None;
        while let Some(output) = self.netem.poll_output() {
            match output {
                Output::Packet(datagram) => {
                    self.delivered += 1;
                    out.push(datagram);
                }
                Output::Timeout(at) => next = Some(at),
            }
        }
        let queued = self.netem.poll_timeout();
        if queued > now && queued < now + Duration::from_secs(3600) {
            next = Some(next.map_or(queued, |n: Instant| n.min(queued)));
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(len: usize) -> Datagram {
        Datagram {
            source: "127.0.0.1:9".parse().unwrap(),
            data: vec![0; len],
        }
    }

    /// Offers `kbps_in` for `seconds` in 10 ms steps and returns the delivered kbps.
    fn run(link: &mut Downlink, start: Instant, from_s: u64, seconds: u64, kbps_in: u64) -> u64 {
        let mut out = Vec::new();
        let step = Duration::from_millis(10);
        let per_step = (kbps_in * 1000 / 8 / 100) as usize;
        let mut delivered = 0;
        for i in 0..seconds * 100 {
            let now = start + Duration::from_secs(from_s) + step * i as u32;
            link.push(now, datagram(per_step));
            out.clear();
            link.deliver(now, &mut out);
            delivered += out.iter().map(|d| d.data.len() as u64).sum::<u64>();
        }
        delivered * 8 / 1000 / seconds
    }

    #[test]
    fn a_bottleneck_caps_the_rate_until_it_lifts() {
        let start = Instant::now();
        let shape = DownlinkShape {
            kbps: Some(300),
            loss: 0.0,
            delay: Duration::ZERO,
            lift_after: Some(Duration::from_secs(5)),
        };
        let mut link = Downlink::new(shape, start, 1);
        let limited = run(&mut link, start, 0, 4, 1000);
        assert!((250..=330).contains(&limited), "limited to {limited} kbps");
        let lifted = run(&mut link, start, 6, 3, 1000);
        assert!(lifted >= 900, "after the lift: {lifted} kbps");
    }

    #[test]
    fn random_loss_drops_about_its_share() {
        let start = Instant::now();
        let shape = DownlinkShape {
            kbps: None,
            loss: 0.05,
            delay: Duration::ZERO,
            lift_after: None,
        };
        let mut link = Downlink::new(shape, start, 7);
        let mut out = Vec::new();
        for i in 0..10_000u32 {
            let now = start + Duration::from_micros(u64::from(i) * 100);
            link.push(now, datagram(100));
            link.deliver(now, &mut out);
        }
        let lost = 10_000 - out.len();
        assert!((350..=650).contains(&lost), "lost {lost} of 10000");
        assert_eq!(link.dropped(), lost as u64);
        assert!(!shape.is_clear());
    }
}
