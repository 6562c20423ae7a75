//! Server-rendered SVG bar charts of the last 24 hours: two series stacked per bar (from
//! the cache below, from the internet above), half an hour per bar, with a text summary for
//! screen readers and a legend that does not rely on colour alone.

use maud::{Markup, html};

use super::history::{BUCKETS, Bucket};

/// Buckets per bar: 6 × 5 minutes.
const PER_BAR: usize = 6;
const BARS: usize = BUCKETS / PER_BAR;
const WIDTH: f64 = 480.0;
const HEIGHT: f64 = 120.0;
const LEFT: f64 = 60.0;
const BOTTOM: f64 = 18.0;

/// What a chart shows of a bucket: the part from the cache and the part from the internet.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Measure {
    Requests,
    Bytes,
}

impl Measure {
    fn split(self, b: &Bucket) -> (u64, u64) {
        match self {
            Measure::Requests => (b.hits, b.misses),
            Measure::Bytes => (b.bytes_cached, b.bytes_upstream),
        }
    }

    fn label(self, n: u64) -> String {
        match self {
            Measure::Requests => n.to_string(),
            Measure::Bytes => super::page::bytes(n),
        }
    }

    fn what(self) -> &'static str {
        match self {
            Measure::Requests => "responses",
            Measure::Bytes => "bytes",
        }
    }
}

/// The chart of `series` (288 buckets, oldest first), titled `title`; `id` makes its
/// element ids unique on the page.
pub(crate) fn chart(id: &str, title: &str, series: &[Bucket], measure: Measure) -> Markup {
    let bars: Vec<(u64, u64)> = series
        .chunks(PER_BAR)
        .take(BARS)
        .map(|chunk| {
            chunk.iter().fold((0, 0), |(c, u), b| {
                let (bc, bu) = measure.split(b);
                (c + bc, u + bu)
            })
        })
        .collect();
    let (cached, upstream) = bars
        .iter()
        .fold((0u64, 0u64), |(c, u), (bc, bu)| (c + bc, u + bu));
    let top = bars.iter().map(|(c, u)| c + u).max().unwrap_or(0).max(1);
    let plot_h = HEIGHT - BOTTOM;
    let slot = (WIDTH - LEFT) / BARS as f64;
    let scale = |n: u64| n as f64 / top as f64 * (plot_h - 4.0);
    let summary = format!(
        "{title}, last 24 hours: {} {what} from the cache, {} from the internet",
        measure.label(cached),
        measure.label(upstream),
        what = measure.what(),
    );
    let title_id = format!("{id}-title");
    let desc_id = format!("{id}-desc");
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img"
                aria-labelledby=(format!("{title_id} {desc_id}")) {
                title id=(title_id) { (title) }
                desc id=(desc_id) { (summary) }
                line.axis x1=(LEFT) y1=(plot_h) x2=(WIDTH) y2=(plot_h) {}
                text.tick x=(LEFT - 4.0) y="10" text-anchor="end" { (measure.label(top)) }
                text.tick x=(LEFT - 4.0) y=(plot_h) text-anchor="end" { "0" }
                text.tick x=(LEFT) y=(HEIGHT - 4.0) { "24 h ago" }
                text.tick x=(WIDTH) y=(HEIGHT - 4.0) text-anchor="end" { "now" }
                @for (i, (c, u)) in bars.iter().enumerate() {
                    @let x = LEFT + i as f64 * slot + 1.0;
                    @let hc = scale(*c);
                    @let hu = scale(*u);
                    @if *c > 0 {
                        rect.cached x=(fmt(x)) y=(fmt(plot_h - hc)) width=(fmt(slot - 2.0)) height=(fmt(hc)) {}
                    }
                    @if *u > 0 {
                        rect.upstream x=(fmt(x)) y=(fmt(plot_h - hc - hu)) width=(fmt(slot - 2.0)) height=(fmt(hu)) {}
                    }
                }
            }
            figcaption {
                span.key.cached aria-hidden="true" {} "from the cache: " strong { (measure.label(cached)) }
                " · "
                span.key.upstream aria-hidden="true" {} "from the internet: " strong { (measure.label(upstream)) }
            }
        }
    }
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stack_the_cache_under_the_internet_and_the_text_says_the_totals() {
        let mut series = vec![Bucket::default(); BUCKETS];
        series[0].hits = 3;
        series[BUCKETS - 1] = Bucket {
            hits: 1,
            misses: 4,
            bytes_cached: 2048,
            bytes_upstream: 0,
        };
        let svg = chart("hub-req", "hub <requests>", &series, Measure::Requests).into_string();
        assert_eq!(svg.matches("<rect class=\"cached\"").count(), 2, "{svg}");
        assert_eq!(svg.matches("<rect class=\"upstream\"").count(), 1);
        assert!(
            svg.contains("4 responses from the cache, 4 from the internet"),
            "{svg}"
        );
        assert!(
            svg.contains("hub &lt;requests&gt;"),
            "titles are escaped: {svg}"
        );
        let bytes = chart("hub-bytes", "hub", &series, Measure::Bytes).into_string();
        assert!(bytes.contains("2.0 KiB"), "{bytes}");
        assert_eq!(bytes.matches("<rect").count(), 1);
        let empty = chart(
            "e",
            "empty",
            &vec![Bucket::default(); BUCKETS],
            Measure::Bytes,
        );
        assert!(!empty.into_string().contains("<rect"));
    }
}
