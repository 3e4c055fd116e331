//! A small hand-written SVG: per scenario, throughput (left axis, solid) and the worst RPC p99
//! (right axis, dashed) against the number of virtual users.
use crate::report::Level;
use std::fmt::Write as _;

const WIDTH: f64 = 720.0;
const PANEL: f64 = 240.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 80.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 40.0;

/// A round number at or above `value`, so the axis ends on a readable label.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|step| step * magnitude)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn svg(title: &str, levels: &[Level]) -> String {
    let mut modes: Vec<_> = levels.iter().map(|level| level.mode).collect();
    modes.dedup();
    let height = TOP + modes.len() as f64 * (PANEL + BOTTOM + TOP) + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for (index, mode) in modes.iter().enumerate() {
        // A level paced at a share of the peak repeats the peak's concurrency; the curve is
        // drawn through the peaks, and the paced levels are in the table and the JSON.
        let mut points: Vec<&Level> = levels
            .iter()
            .filter(|level| level.mode == *mode && level.share_of_peak.is_none())
            .collect();
        points.sort_by_key(|level| level.concurrency);
        let top = TOP + index as f64 * (PANEL + BOTTOM + TOP) + 20.0;
        panel(&mut out, mode.as_str(), &points, top);
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, name: &str, points: &[&Level], top: f64) {
    let plot_width = WIDTH - LEFT - RIGHT;
    let bottom = top + PANEL;
    let throughput_max = nice_ceiling(points.iter().map(|l| l.per_second).fold(0.0, f64::max));
    let p99_max = nice_ceiling(
        points
            .iter()
            .map(|l| l.worst_rpc_p99_ms())
            .fold(0.0, f64::max),
    );
    let x = |i: usize| {
        if points.len() <= 1 {
            LEFT + plot_width / 2.0
        } else {
            LEFT + plot_width * i as f64 / (points.len() - 1) as f64
        }
    };
    let y_left = |value: f64| bottom - PANEL * value / throughput_max;
    let y_right = |value: f64| bottom - PANEL * value / p99_max;

    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="{}"><tspan font-size="13" font-weight="bold">{}</tspan><tspan fill="#1f5fbf" dx="12">— completed per second (left)</tspan><tspan fill="#c0392b" dx="12">- - worst RPC p99 in ms (right)</tspan></text>"##,
        top - 8.0,
        escape(name)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top}" width="{plot_width}" height="{PANEL}" fill="none" stroke="#999"/>"##
    );
    for step in 0..=4 {
        let fraction = f64::from(step) / 4.0;
        let y = bottom - PANEL * fraction;
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end" fill="#1f5fbf">{}</text><text x="{}" y="{}" fill="#c0392b">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            format_number(throughput_max * fraction),
            WIDTH - RIGHT + 6.0,
            y + 4.0,
            format_number(p99_max * fraction),
        );
    }
    for (i, level) in points.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            x(i),
            bottom + 16.0,
            level.concurrency
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">virtual users</text>"#,
        LEFT + plot_width / 2.0,
        bottom + 32.0
    );
    let line = |values: Vec<(f64, f64)>| {
        values
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let throughput: Vec<(f64, f64)> = points
        .iter()
        .enumerate()
        .map(|(i, level)| (x(i), y_left(level.per_second)))
        .collect();
    let p99: Vec<(f64, f64)> = points
        .iter()
        .enumerate()
        .map(|(i, level)| (x(i), y_right(level.worst_rpc_p99_ms())))
        .collect();
    let _ = writeln!(
        out,
        r##"<polyline points="{}" fill="none" stroke="#1f5fbf" stroke-width="2"/>"##,
        line(throughput.clone())
    );
    let _ = writeln!(
        out,
        r##"<polyline points="{}" fill="none" stroke="#c0392b" stroke-width="2" stroke-dasharray="6 4"/>"##,
        line(p99.clone())
    );
    for (x, y) in throughput {
        let _ = writeln!(
            out,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="#1f5fbf"/>"##
        );
    }
    for (x, y) in p99 {
        let _ = writeln!(
            out,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="#c0392b"/>"##
        );
    }
}

fn format_number(value: f64) -> String {
    if value >= 100.0 || value == 0.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.3), 10.0);
        assert_eq!(nice_ceiling(1_234.0), 2_000.0);
        assert_eq!(nice_ceiling(2_400.0), 2_500.0);
        assert_eq!(nice_ceiling(0.42), 0.5);
    }
}
