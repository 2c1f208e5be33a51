//! Which simulcast layer each subscriber gets of each video track: pure functions of the
//! subscriber's bandwidth estimate, how it shows each tile, who spoke last and what the
//! publishers send. No IO, no clock of its own.

use std::time::{Duration, Instant};

/// A simulcast layer: 0 is the smallest a publisher sends.
pub(crate) type Layer = u8;

/// What publishers are asked to send when nothing was measured yet, by layer (about 180p,
/// 360p and 720p VP8).
const NOMINAL_BPS: [u64; 3] = [150_000, 500_000, 1_500_000];

/// The layer for a RID. Browsers and bots name layers q(uarter), h(alf) and f(ull), the
/// convention LiveKit and most SFUs share; numbered and l/m names are accepted as well.
/// Unknown names rank after these, in the order the publisher's SDP lists them.
pub(crate) fn rid_rank(rid: &str) -> Option<Layer> {
    match rid {
        "q" | "l" | "0" | "low" => Some(0),
        "h" | "m" | "1" | "mid" => Some(1),
        "f" | "2" | "high" => Some(2),
        _ => None,
    }
}

/// The largest layer a tile `height` CSS pixels tall needs (of `layers` the publisher sends):
/// a 180p layer up to 240 px, 360p up to 480 px, 720p above.
pub(crate) fn layer_for_height(height: u32, layers: usize) -> Layer {
    let wanted: Layer = match height {
        0..240 => 0,
        240..480 => 1,
        _ => 2,
    };
    wanted.min(top_layer(layers))
}

pub(crate) fn top_layer(layers: usize) -> Layer {
    u8::try_from(layers.saturating_sub(1)).unwrap_or(u8::MAX)
}

/// Bits per second arriving on one layer, over windows of one second.
#[derive(Debug, Clone, Default)]
pub(crate) struct RateMeter {
    window_start: Option<Instant>,
    window_bytes: u64,
    rate_bps: Option<u64>,
    last_packet: Option<Instant>,
}

const RATE_WINDOW: Duration = Duration::from_secs(1);
/// A layer silent this long is not being sent (paused, or the publisher's own uplink
/// estimate dropped it).
const LAYER_SILENCE: Duration = Duration::from_millis(1500);

impl RateMeter {
    pub fn record(&mut self, now: Instant, bytes: usize) {
        self.last_packet = Some(now);
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            let micros = elapsed.as_micros().max(1) as u64;
            self.rate_bps = Some(self.window_bytes * 8 * 1_000_000 / micros);
            self.window_start = Some(now);
            self.window_bytes = 0;
        }
        self.window_bytes += bytes as u64;
    }

    /// Whether packets arrive on this layer now.
    pub fn live(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|at| now.saturating_duration_since(at) < LAYER_SILENCE)
    }

    /// The last measured rate, or what such a layer nominally costs.
    pub fn rate_or_nominal(&self, layer: Layer) -> u64 {
        self.rate_bps
            .filter(|r| *r > 0)
            .unwrap_or(NOMINAL_BPS[usize::from(layer.min(2))])
    }
}

/// One video track as the allocator sees it for one subscriber.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TrackDemand {
    /// The cost of each layer in bits per second; `None` for a layer that cannot be had
    /// (the publisher does not send it and nobody paused it).
    pub layer_bps: Vec<Option<u64>>,
    /// The largest layer the subscriber's tile needs; `None` when the tile is not shown.
    pub max_layer: Option<Layer>,
    /// Lower goes first: screen shares, then the most recent speakers, then the rest.
    pub priority: u32,
}

impl TrackDemand {
    /// What `layer` costs, if it can be had.
    fn bps(&self, layer: Layer) -> Option<u64> {
        self.layer_bps.get(usize::from(layer)).copied().flatten()
    }
}

/// Chooses a layer per candidate. Featured tracks (screen shares and recent speakers: any
/// priority below [`UNFEATURED`]) come first: each gets its smallest layer, then each is raised
/// in priority order as far as its tile needs and `budget_bps` allows. Then the rest get their
/// smallest layer while `thumbnail_budget_bps` lasts, and are raised with what is left. The
/// first shown track always gets at least its smallest layer, so a subscriber never goes all
/// dark. Returns the layer per candidate (`None`: forward nothing).
///
/// Two budgets because thumbnails and upgrades trust the estimate differently: the caller
/// keeps a floor under the thumbnail budget (see `SfuConfig::thumbnail_floor_bps`).
pub(crate) fn allocate(
    budget_bps: u64,
    thumbnail_budget_bps: u64,
    candidates: &[TrackDemand],
) -> Vec<Option<Layer>> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by_key(|i| candidates[*i].priority);
    let (featured, rest): (Vec<usize>, Vec<usize>) = order
        .iter()
        .partition(|i| candidates[**i].priority < UNFEATURED);
    let mut budget = Budget {
        upgrades: budget_bps,
        thumbnails: thumbnail_budget_bps,
        first: true,
    };
    let mut chosen: Vec<Option<Layer>> = vec![None; candidates.len()];
    for group in [&featured, &rest] {
        for &i in group {
            chosen[i] = budget.thumbnail(&candidates[i]);
        }
        for &i in group {
            chosen[i] = chosen[i].map(|at| budget.raise(&candidates[i], at));
        }
    }
    chosen
}

/// Priorities from here on are not featured.
pub(crate) const UNFEATURED: u32 = u32::MAX;

struct Budget {
    upgrades: u64,
    thumbnails: u64,
    first: bool,
}

impl Budget {
    fn thumbnail(&mut self, c: &TrackDemand) -> Option<Layer> {
        c.max_layer?;
        let (layer, bps) = lowest(c)?;
        if bps > self.thumbnails && !self.first {
            return None;
        }
        self.first = false;
        self.thumbnails = self.thumbnails.saturating_sub(bps);
        self.upgrades = self.upgrades.saturating_sub(bps);
        Some(layer)
    }

    fn raise(&mut self, c: &TrackDemand, mut at: Layer) -> Layer {
        let Some(max) = c.max_layer else {
            return at;
        };
        let mut at_bps = c.bps(at).unwrap_or(0);
        for layer in at + 1..=max {
            let Some(bps) = c.bps(layer) else {
                continue;
            };
            let extra = bps.saturating_sub(at_bps);
            if extra > self.upgrades {
                break;
            }
            self.upgrades -= extra;
            self.thumbnails = self.thumbnails.saturating_sub(extra);
            at = layer;
            at_bps = bps;
        }
        at
    }
}

fn lowest(c: &TrackDemand) -> Option<(Layer, u64)> {
    c.layer_bps
        .iter()
        .enumerate()
        .find_map(|(i, bps)| bps.map(|b| (u8::try_from(i).unwrap_or(u8::MAX), b)))
}

/// Whether a subscriber keeps the layers it was given (`previous`) rather than take the fresh
/// choice (`chosen`, made with headroom): yes while every previous layer is still wanted and
/// available, the fresh choice shows and raises nothing new, and what flows still fits
/// `budget_bps` with its thumbnails within `thumbnail_budget_bps` (a single track always may
/// flow). So tracks appear and layers go up with headroom, and disappear or go down only when
/// they no longer fit: an estimate wobbling around a cost does not switch it back and forth.
pub(crate) fn keep_previous(
    previous: &[Option<Layer>],
    chosen: &[Option<Layer>],
    demands: &[TrackDemand],
    budget_bps: u64,
    thumbnail_budget_bps: u64,
) -> bool {
    let still_valid = previous.iter().zip(demands).all(|(layer, d)| {
        layer.is_none_or(|l| d.max_layer.is_some_and(|max| l <= max) && d.bps(l).is_some())
    });
    // `None` (not shown) orders below every layer.
    let nothing_new = chosen.iter().zip(previous).all(|(c, p)| c <= p);
    if !still_valid || !nothing_new {
        return false;
    }
    let shown = || previous.iter().zip(demands).filter(|(l, _)| l.is_some());
    if shown().count() <= 1 {
        return true;
    }
    let cost: u64 = shown().filter_map(|(l, d)| d.bps((*l)?)).sum();
    let thumbnails: u64 = shown().filter_map(|(_, d)| lowest(d).map(|(_, b)| b)).sum();
    thumbnails <= thumbnail_budget_bps && cost <= budget_bps.max(thumbnails)
}

/// What the subscriber would receive if its budget were unlimited: what it asks its
/// bandwidth estimator to probe for.
pub(crate) fn wanted_bps(candidates: &[TrackDemand]) -> u64 {
    candidates
        .iter()
        .filter_map(|c| {
            let max = c.max_layer?;
            c.layer_bps
                .iter()
                .take(usize::from(max) + 1)
                .rev()
                .find_map(|b| *b)
                .or_else(|| lowest(c).map(|(_, b)| b))
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three(max: Option<Layer>, priority: u32) -> TrackDemand {
        TrackDemand {
            layer_bps: vec![Some(150_000), Some(500_000), Some(1_500_000)],
            max_layer: max,
            priority,
        }
    }

    #[test]
    fn enough_budget_gives_every_tile_what_it_needs() {
        let c = [three(Some(2), 0), three(Some(0), 1), three(None, 2)];
        assert_eq!(
            allocate(10_000_000, 10_000_000, &c),
            [Some(2), Some(0), None]
        );
    }

    #[test]
    fn a_tight_budget_keeps_thumbnails_and_raises_the_first_in_priority() {
        let c = [three(Some(2), 5), three(Some(2), 1), three(Some(2), 3)];
        // Three 150k thumbnails cost 450k; what is left raises priority 1 first.
        assert_eq!(
            allocate(1_800_000, 1_800_000, &c),
            [Some(0), Some(2), Some(0)]
        );
        assert_eq!(allocate(800_000, 800_000, &c), [Some(0), Some(1), Some(0)]);
        assert_eq!(allocate(700_000, 700_000, &c), [Some(0), Some(0), Some(0)]);
        // Not enough to raise the first to 720p: everyone gets 360p instead.
        assert_eq!(
            allocate(1_500_000, 1_500_000, &c),
            [Some(1), Some(1), Some(1)]
        );
    }

    #[test]
    fn below_the_thumbnails_the_lowest_priority_goes_dark_but_never_everyone() {
        let c = [three(Some(2), 2), three(Some(2), 0), three(Some(2), 1)];
        assert_eq!(allocate(320_000, 320_000, &c), [None, Some(0), Some(0)]);
        assert_eq!(allocate(1_000, 1_000, &c), [None, Some(0), None]);
    }

    #[test]
    fn featured_tracks_are_raised_before_the_rest_get_thumbnails() {
        let c = [
            three(Some(2), UNFEATURED),
            three(Some(2), 1),
            three(Some(2), UNFEATURED),
            three(Some(2), 2),
        ];
        // Two speakers at 1.5 Mbps, then one thumbnail of the rest fits in 3.2 Mbps.
        assert_eq!(
            allocate(3_200_000, 3_200_000, &c),
            [Some(0), Some(2), None, Some(2)]
        );
    }

    #[test]
    fn layers_stay_while_they_fit_and_move_when_raised_shown_or_over_budget() {
        let c = [three(Some(2), 0), three(Some(2), 1)];
        let previous = [Some(2), Some(0)];
        let keep = |chosen: &[Option<Layer>], c: &[TrackDemand], budget, thumbnails| {
            keep_previous(&previous, chosen, c, budget, thumbnails)
        };
        // A fresh choice with headroom would lower the first, but 1.65 Mbps still fits.
        assert!(keep(&[Some(1), Some(0)], &c, 1_700_000, 1_700_000));
        // ...or leave the second out: it still fits, so it stays.
        assert!(keep(&[Some(2), None], &c, 1_700_000, 1_700_000));
        // It no longer fits, or its thumbnails do not: take the fresh choice.
        assert!(!keep(&[Some(1), Some(0)], &c, 1_500_000, 1_700_000));
        assert!(!keep(&[Some(1), Some(0)], &c, 1_700_000, 200_000));
        // The fresh choice raises a layer, or shows a track that was not.
        assert!(!keep(&[Some(2), Some(1)], &c, 10_000_000, 10_000_000));
        assert!(!keep_previous(
            &[Some(2), None],
            &[Some(2), Some(0)],
            &c,
            10_000_000,
            10_000_000
        ));
        // A tile shrank below the layer it had, or was hidden.
        let shrunk = [three(Some(1), 0), three(Some(2), 1)];
        assert!(!keep(&[Some(1), Some(0)], &shrunk, 10_000_000, 10_000_000));
        let hidden = [three(Some(2), 0), three(None, 1)];
        assert!(!keep(&[Some(2), None], &hidden, 10_000_000, 10_000_000));
        // One track alone always may flow; thumbnails within their budget always fit.
        assert!(keep_previous(
            &[Some(2), None],
            &[Some(0), None],
            &c,
            1_000,
            1_000
        ));
        assert!(keep_previous(
            &[Some(0), Some(0)],
            &[Some(0), Some(0)],
            &c,
            1_000,
            300_000
        ));
    }

    #[test]
    fn a_low_estimate_alone_keeps_every_thumbnail() {
        let c = [three(Some(2), 2), three(Some(2), 0), three(Some(2), 1)];
        assert_eq!(allocate(320_000, u64::MAX, &c), [Some(0), Some(0), Some(0)]);
        assert_eq!(allocate(800_000, u64::MAX, &c), [Some(0), Some(1), Some(0)]);
    }

    #[test]
    fn layers_that_cannot_be_had_are_skipped() {
        let c = [TrackDemand {
            layer_bps: vec![None, Some(500_000), None],
            max_layer: Some(2),
            priority: 0,
        }];
        assert_eq!(allocate(10_000_000, 10_000_000, &c), [Some(1)]);
        // A tile that needs only the smallest layer still gets the smallest there is.
        let c = [TrackDemand {
            layer_bps: vec![None, Some(500_000), Some(1_500_000)],
            max_layer: Some(0),
            priority: 0,
        }];
        assert_eq!(allocate(10_000_000, 10_000_000, &c), [Some(1)]);
    }

    #[test]
    fn the_result_stays_within_budget_beyond_the_first_thumbnail() {
        use proptest::prelude::*;
        proptest!(|(budget in 0u64..20_000_000, maxes in proptest::collection::vec(proptest::option::of(0u8..3), 0..40))| {
            let c: Vec<TrackDemand> = maxes.iter().enumerate().map(|(i, m)| three(*m, i as u32)).collect();
            let got = allocate(budget, budget, &c);
            let spent: u64 = got.iter().zip(&c).filter_map(|(l, c)| l.map(|l| c.layer_bps[usize::from(l)].unwrap_or(0))).sum();
            let first_thumbnail = c.iter().find(|c| c.max_layer.is_some()).map_or(0, |_| 150_000);
            prop_assert!(spent <= budget.max(first_thumbnail));
            for (l, c) in got.iter().zip(&c) {
                if c.max_layer.is_none() { prop_assert!(l.is_none()); }
                if let (Some(l), Some(m)) = (l, c.max_layer) { prop_assert!(*l <= m); }
            }
        });
    }

    #[test]
    fn wanted_is_every_shown_tile_at_its_needed_layer() {
        let c = [three(Some(2), 0), three(Some(0), 1), three(None, 2)];
        assert_eq!(wanted_bps(&c), 1_650_000);
    }

    #[test]
    fn heights_map_to_layers_within_what_is_sent() {
        assert_eq!(layer_for_height(180, 3), 0);
        assert_eq!(layer_for_height(360, 3), 1);
        assert_eq!(layer_for_height(720, 3), 2);
        assert_eq!(layer_for_height(720, 1), 0);
    }

    #[test]
    fn rate_meter_measures_per_second_and_forgets_silent_layers() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        assert_eq!(m.rate_or_nominal(1), 500_000);
        for i in 0..=31 {
            m.record(t0 + Duration::from_millis(i * 33 + 1), 1250);
        }
        let rate = m.rate_or_nominal(1);
        assert!((290_000..=320_000).contains(&rate), "{rate}");
        assert!(m.live(t0 + Duration::from_secs(2)));
        assert!(!m.live(t0 + Duration::from_secs(3)));
    }
}
