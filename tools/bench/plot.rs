//! `intentra-bench plot`: the envelope sweep's CSV drawn as an SVG, delivery ratio and p99
//! latency against offered load, intentra beside raw UDP.
//!
//! Owns the drawing only (plotters, SVG backend, no fonts needed). It must never run a
//! benchmark or reach the network; it reads one CSV and writes one SVG.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{parse_csv, CsvPoint};

#[derive(Debug)]
pub enum PlotError {
    Read(std::io::Error),
    Csv(crate::report::CsvError),
    NoPoints,
    Draw(String),
}

impl std::fmt::Display for PlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlotError::Read(e) => write!(f, "cannot read the CSV: {e}"),
            PlotError::Csv(e) => write!(f, "{e}"),
            PlotError::NoPoints => f.write_str("the CSV has no data rows"),
            PlotError::Draw(e) => write!(f, "cannot draw the plot: {e}"),
        }
    }
}

fn draw_err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// One series per mode, sorted by the load actually offered (the generator may fall short of its target).
fn series(points: &[CsvPoint], mode: &str) -> Vec<CsvPoint> {
    let mut s: Vec<CsvPoint> = points.iter().filter(|p| p.mode == mode).cloned().collect();
    s.sort_by(|a, b| a.offered_pps.total_cmp(&b.offered_pps));
    s
}

const MODES: [(&str, RGBColor); 2] = [
    ("intentra", RGBColor(0, 90, 200)),
    ("raw", RGBColor(220, 80, 0)),
];

/// Reads `csv` and writes the two-panel SVG to `out`.
pub fn plot(csv: &Path, out: &Path) -> Result<(), PlotError> {
    let text = std::fs::read_to_string(csv).map_err(PlotError::Read)?;
    let points = parse_csv(&text).map_err(PlotError::Csv)?;
    if points.is_empty() {
        return Err(PlotError::NoPoints);
    }
    let x_max = points.iter().map(|p| p.offered_pps).fold(1.0, f64::max) * 1.05;
    let p99_max = points.iter().map(|p| p.p99_us).fold(10.0, f64::max) * 2.0;
    let p99_min = points
        .iter()
        .map(|p| p.p99_us)
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min)
        .min(p99_max / 4.0)
        .max(0.1)
        / 2.0;

    let root = SVGBackend::new(out, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let (left, right) = root.split_horizontally(600);
    let x_desc = "offered load, packets/s actually sent (target = peers x rate)";

    let mut delivery = ChartBuilder::on(&left)
        .caption("Delivery ratio", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..1.05)
        .map_err(draw_err)?;
    delivery
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("received / sent")
        .x_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .draw()
        .map_err(draw_err)?;
    for (mode, color) in MODES {
        let s = series(&points, mode);
        if s.is_empty() {
            continue;
        }
        delivery
            .draw_series(LineSeries::new(
                s.iter().map(|p| (p.offered_pps, p.delivery_ratio)),
                color.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(mode)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        delivery
            .draw_series(
                s.iter()
                    .map(|p| Circle::new((p.offered_pps, p.delivery_ratio), 4, color.filled())),
            )
            .map_err(draw_err)?;
    }
    delivery
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)?;

    let mut latency = ChartBuilder::on(&right)
        .caption("p99 one-way latency", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, (p99_min..p99_max).log_scale())
        .map_err(draw_err)?;
    latency
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("p99 latency, microseconds (log)")
        .x_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(draw_err)?;
    for (mode, color) in MODES {
        let s: Vec<CsvPoint> = series(&points, mode)
            .into_iter()
            .filter(|p| p.p99_us > 0.0)
            .collect();
        if s.is_empty() {
            continue;
        }
        latency
            .draw_series(LineSeries::new(
                s.iter().map(|p| (p.offered_pps, p.p99_us)),
                color.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(mode)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        latency
            .draw_series(
                s.iter()
                    .map(|p| Circle::new((p.offered_pps, p.p99_us), 4, color.filled())),
            )
            .map_err(draw_err)?;
    }
    latency
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}
