//! `--plot FILE.svg`: latency CDFs as a small hand-written SVG (no plotting dependency).

use std::fmt::Write;

/// One line on the plot.
pub struct Series<'a> {
    /// Legend.
    pub name: &'a str,
    /// `(ms, cumulative fraction)` points.
    pub points: Vec<(f64, f64)>,
}

const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// Renders CDFs on a log-scaled latency axis.
pub fn cdf_svg(title: &str, series: &[Series<'_>]) -> String {
    let (w, h, left, bottom, top, right) = (720.0, 420.0, 60.0, 50.0, 30.0, 160.0);
    let xs = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .filter(|x| *x > 0.0);
    let (mut lo, mut hi) = xs.fold((f64::MAX, 0.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if lo > hi {
        (lo, hi) = (0.1, 1.0);
    }
    let (lo, hi) = (
        10f64.powf(lo.log10().floor()),
        10f64.powf(hi.log10().ceil().max(lo.log10().floor() + 1.0)),
    );
    let pw = w - left - right;
    let ph = h - top - bottom;
    let x = |v: f64| left + (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10()) * pw;
    let y = |f: f64| top + (1.0 - f) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{left}" y="18" font-size="14">{title}</text>"#
    );
    let mut decade = lo;
    while decade <= hi * 1.0001 {
        let gx = x(decade);
        let _ = write!(
            s,
            r##"<line x1="{gx}" y1="{top}" x2="{gx}" y2="{}" stroke="#ddd"/><text x="{gx}" y="{}" text-anchor="middle">{decade}</text>"##,
            top + ph,
            top + ph + 16.0
        );
        decade *= 10.0;
    }
    for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
        let gy = y(q);
        let _ = write!(
            s,
            r##"<line x1="{left}" y1="{gy}" x2="{}" y2="{gy}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{q}</text>"##,
            left + pw,
            left - 6.0,
            gy + 4.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">latency (ms, log scale)</text>"#,
        left + pw / 2.0,
        h - 10.0
    );
    for (i, ser) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> = ser
            .points
            .iter()
            .map(|(v, f)| format!("{:.1},{:.1}", x(*v), y(*f)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        let ly = top + 16.0 * i as f64 + 8.0;
        let _ = write!(
            s,
            r#"<rect x="{}" y="{}" width="14" height="4" fill="{c}"/><text x="{}" y="{}">{}</text>"#,
            left + pw + 12.0,
            ly - 4.0,
            left + pw + 32.0,
            ly + 2.0,
            ser.name
        );
    }
    s.push_str("</svg>\n");
    s
}
