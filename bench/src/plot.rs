//! Pictures, as SVG through `plotters`: the distributions the bench measured (one picture per
//! coordinator, elect beside its peers) and a chaos run's timeline (who believed it led when,
//! with the faults marked).

use std::path::Path;

use plotters::prelude::*;

use crate::chaos::{Fault, Interval};

/// Line colours, in the order the series come (elect first).
const COLOURS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// One panel of a [`distributions`] picture: a title and, per contender, its name and
/// samples in ms.
pub struct Panel<'a> {
    /// What the panel shows, e.g. "crash failover".
    pub title: &'a str,
    /// Per contender: its name and its samples in ms (empty: left out).
    pub series: Vec<(String, &'a [f64])>,
}

fn err(e: impl std::fmt::Display) -> String {
    format!("plot: {e}")
}

/// Writes `path`: the panels side by side, each the empirical distribution (fraction of rounds
/// at or below x) of each contender's samples on a logarithmic ms axis.
pub fn distributions(path: &Path, heading: &str, panels: &[Panel<'_>]) -> Result<(), String> {
    let width = 520 * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (width, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(heading, ("sans-serif", 20)).map_err(err)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (area, panel) in areas.iter().zip(panels) {
        let all = panel.series.iter().flat_map(|(_, v)| v.iter().copied());
        let positive: Vec<f64> = all.filter(|v| v.is_finite() && *v > 0.0).collect();
        let lo = positive.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = positive.iter().copied().fold(0.0, f64::max);
        // The x axis is log10(ms) on a linear axis, labelled in ms: plotters' own log axis
        // labels only powers of ten, and a failover's 1.3–2.5 s holds none.
        let (lo, hi) = if positive.is_empty() {
            (0.0, 1.0)
        } else {
            ((lo * 0.9).log10(), (hi * 1.1).log10())
        };
        let mut chart = ChartBuilder::on(area)
            .caption(panel.title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d(lo..hi.max(lo + 0.01), 0.0..1.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_labels(8)
            .x_label_formatter(&|v| ms_label(10f64.powf(*v)))
            .x_desc("ms (log scale)")
            .y_desc("fraction of rounds ≤ x")
            .draw()
            .map_err(err)?;
        for (k, (name, samples)) in panel.series.iter().enumerate() {
            let mut sorted: Vec<f64> = samples
                .iter()
                .copied()
                .filter(|v| v.is_finite() && *v > 0.0)
                .collect();
            if sorted.is_empty() {
                continue;
            }
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len() as f64;
            // A step for each sample: up at the sample, level until the next.
            let mut steps = Vec::with_capacity(sorted.len() * 2);
            for (i, v) in sorted.iter().enumerate() {
                steps.push((v.log10(), i as f64 / n));
                steps.push((v.log10(), (i + 1) as f64 / n));
            }
            let colour = COLOURS[k % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(steps, colour.stroke_width(2)))
                .map_err(err)?
                .label(format!("{name} (n = {})", sorted.len()))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// A tick's label: three significant digits.
fn ms_label(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

/// Writes `path`: one row per candidate slot, a bar for each leadership it believed it held
/// (from `elected` to its `lost`, its kill, or the end), and each fault shaded from its start
/// to its heal, labelled with its kind. Times in seconds from `start` (CLOCK_MONOTONIC ns).
pub fn timeline(
    path: &Path,
    heading: &str,
    start: u128,
    end: u128,
    leaderships: &[Interval],
    faults: &[Fault],
) -> Result<(), String> {
    let secs = |ns: u128| ns.saturating_sub(start) as f64 / 1e9;
    let slots = leaderships.iter().map(|i| i.slot + 1).max().unwrap_or(1);
    let total = secs(end).max(1e-3);
    let width = (900.0 + total.min(600.0) * 4.0) as u32;
    let height = 140 + 36 * slots as u32;
    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(heading, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..total, 0.0..slots as f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(slots + 1)
        .y_label_formatter(&|y| {
            if y.fract() == 0.0 && (*y as usize) < slots {
                format!("candidate {}", *y as usize)
            } else {
                String::new()
            }
        })
        .x_desc("s since the run began")
        .draw()
        .map_err(err)?;
    let fault_fill = RGBColor(0xff, 0xbb, 0x33).mix(0.35).filled();
    chart
        .draw_series(faults.iter().map(|f| {
            let (a, b) = (secs(f.started), secs(f.healed).max(secs(f.started) + 0.01));
            Rectangle::new([(a, 0.0), (b, slots as f64)], fault_fill)
        }))
        .map_err(err)?
        .label("fault (start to heal)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], fault_fill));
    chart
        .draw_series(faults.iter().map(|f| {
            Text::new(
                f.kind.to_string(),
                (secs(f.started), slots as f64 - 0.05),
                ("sans-serif", 11).into_font().color(&BLACK),
            )
        }))
        .map_err(err)?;
    let lead = COLOURS[0].filled();
    chart
        .draw_series(leaderships.iter().map(|i| {
            let y = i.slot as f64;
            let (a, b) = (secs(i.start), secs(i.end).max(secs(i.start) + 0.005));
            Rectangle::new([(a, y + 0.2), (b, y + 0.8)], lead)
        }))
        .map_err(err)?
        .label("believed it led (elected → lost, killed or end)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], lead));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_both_pictures() {
        let dir = std::env::temp_dir().join(format!("elect-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = [2000.0, 2003.5, 2010.0];
        let b = [2100.0, 2400.0];
        let path = dir.join("d.svg");
        distributions(
            &path,
            "redis",
            &[
                Panel {
                    title: "crash failover",
                    series: vec![("elect".into(), &a[..]), ("tooz".into(), &b[..])],
                },
                Panel {
                    title: "hand-over",
                    series: vec![("elect".into(), &[][..])],
                },
            ],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(
            svg.starts_with("<svg")
                && svg.contains("elect (n = 3)")
                && svg.contains("tooz (n = 2)")
        );
        let i = |slot, start, end| Interval {
            who: slot,
            slot,
            term: 1,
            start,
            end,
        };
        let path = dir.join("t.svg");
        timeline(
            &path,
            "chaos",
            0,
            5_000_000_000,
            &[i(0, 100, 2_000_000_000), i(1, 2_100_000_000, 5_000_000_000)],
            &[Fault {
                kind: "freeze",
                started: 1_500_000_000,
                healed: 2_500_000_000,
                recovered: None,
            }],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("freeze") && svg.contains("candidate 1"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
