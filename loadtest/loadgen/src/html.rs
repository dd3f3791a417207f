//! The self-contained HTML report of a scenario: inline SVG charts and tables, no scripts,
//! no external styles or fonts.

use std::fmt::Write as _;

use super::outcome::{RunResult, ScenarioReport};

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One line of a chart.
pub struct Line<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 720.0;
const H: f64 = 276.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 16.0;
/// Room above the plot for the title and, on a line of its own, the legend.
const TOP: f64 = 44.0;
const BOTTOM: f64 = 36.0;

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten, at least `max`.
pub fn nice_max(max: f64) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if step * magnitude >= max {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn fmt_tick(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// A line chart as an `<svg>` element. `shade_until` greys the x range `[0, shade_until)`
/// (the warmup).
pub fn line_chart(title: &str, y_label: &str, lines: &[Line<'_>], shade_until: f64) -> String {
    let x_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let y_max = nice_max(
        lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .fold(0.0f64, f64::max),
    );
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + x / x_max * pw;
    let sy = |y: f64| TOP + ph - y / y_max * ph;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}">"#,
        t = escape(title)
    );
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="16" font-size="13" font-weight="bold" fill="#222">{}</text>"##,
        escape(title)
    );
    if shade_until > 0.0 {
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{TOP}" width="{:.1}" height="{ph:.1}" fill="#eee"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#888">warmup</text>"##,
            sx(0.0),
            sx(shade_until.min(x_max)) - sx(0.0),
            sx(0.0) + 3.0,
            TOP + 12.0
        );
    }
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let y = sy(v);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end" fill="#555">{}</text>"##,
            W - RIGHT,
            LEFT - 4.0,
            y + 3.0,
            fmt_tick(v)
        );
    }
    let x_step = nice_max(x_max / 8.0).max(1.0);
    let mut x = 0.0;
    while x <= x_max + 1e-9 {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#555">{}</text>"##,
            sx(x),
            TOP + ph + 14.0,
            fmt_tick(x)
        );
        x += x_step;
    }
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#555">seconds since start</text><text x="12" y="{:.1}" font-size="10" fill="#555" transform="rotate(-90 12 {:.1})" text-anchor="middle">{}</text>"##,
        LEFT + pw / 2.0,
        H - 6.0,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        escape(y_label)
    );
    let _ = write!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#999"/>"##
    );
    let mut legend_x = LEFT;
    for line in lines {
        if line.points.is_empty() {
            continue;
        }
        let path: Vec<String> = line
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="series" fill="none" stroke="{c}" stroke-width="1.8" points="{p}"/>"#,
            c = escape(line.color),
            p = path.join(" ")
        );
        let _ = write!(
            svg,
            r##"<rect x="{legend_x:.1}" y="24" width="10" height="10" fill="{c}"/><text x="{:.1}" y="33" font-size="11" fill="#333">{n}</text>"##,
            legend_x + 13.0,
            c = escape(line.color),
            n = escape(line.name)
        );
        legend_x += 20.0 + 7.0 * line.name.len() as f64;
    }
    svg.push_str("</svg>");
    svg
}

/// A horizontal bar chart of labelled counts.
pub fn bar_chart(title: &str, bars: &[(String, u64)]) -> String {
    let row = 22.0;
    let label_w = 240.0;
    let height = TOP + row * bars.len().max(1) as f64 + 10.0;
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height:.0}" width="{W}" height="{height:.0}" role="img" aria-label="{t}"><text x="10" y="16" font-size="13" font-weight="bold" fill="#222">{t}</text>"##,
        t = escape(title)
    );
    if bars.is_empty() {
        let _ = write!(
            svg,
            r##"<text x="10" y="{:.0}" font-size="12" fill="#555">no requests</text>"##,
            TOP + 14.0
        );
    }
    for (i, (label, count)) in bars.iter().enumerate() {
        let y = TOP + row * i as f64;
        let w = (W - label_w - 80.0) * (*count as f64) / max;
        let color = if label == "ok" {
            "#2e7d32"
        } else if label.starts_with("disconnected") {
            "#78909c"
        } else if label.starts_with("429") {
            "#ef6c00"
        } else {
            "#c62828"
        };
        let _ = write!(
            svg,
            r##"<text x="{:.0}" y="{:.1}" font-size="11" text-anchor="end" fill="#333">{}</text><rect class="bar" x="{label_w}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#333">{count}</text>"##,
            label_w - 6.0,
            y + 14.0,
            escape(label),
            y + 3.0,
            row - 6.0,
            label_w + w + 4.0,
            y + 14.0
        );
    }
    svg.push_str("</svg>");
    svg
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn run_section(out: &mut String, run: &RunResult, warmup: f64) {
    let _ = write!(
        out,
        "<h2>{}</h2><p>{:.1} successful requests/s over the {:.1} s window; {} sends from the schedule, {} late (max lag {:.1} ms).</p>",
        escape(&run.target),
        run.ok_per_sec(),
        run.window_secs,
        run.sends.scheduled,
        run.sends.late,
        run.sends.max_lag_ms
    );
    out.push_str("<table><tr><th>class</th><th>requests</th><th>ok</th><th>ok/s</th><th>dropped on purpose</th><th>failed</th><th>of which injected</th><th>TTFB p50</th><th>TTFB p99</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>");
    for c in &run.classes {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.class),
            c.requests,
            c.ok,
            c.ok_per_sec,
            c.disconnected,
            c.failures,
            c.upstream_faults,
            ms(c.ttfb.p50_us),
            ms(c.ttfb.p99_us),
            ms(c.total.p50_us),
            ms(c.total.p90_us),
            ms(c.total.p99_us),
            ms(c.total.p999_us),
            ms(c.total.max_us)
        );
    }
    out.push_str("</table><p class=\"note\">Latencies in ms, successes only, measured from the intended send time (open loop).</p>");

    let pick = |f: fn(&super::record::SeriesPoint) -> f64| -> Vec<(f64, f64)> {
        run.series
            .iter()
            .map(|p| (p.second as f64 + 0.5, f(p)))
            .collect()
    };
    out.push_str(&line_chart(
        &format!("{}: well-behaved latency per second", run.target),
        "ms",
        &[
            Line {
                name: "p50",
                color: "#1565c0",
                points: pick(|p| p.p50_ms),
            },
            Line {
                name: "p99",
                color: "#c62828",
                points: pick(|p| p.p99_ms),
            },
            Line {
                name: "TTFB p50",
                color: "#2e7d32",
                points: pick(|p| p.ttfb_p50_ms),
            },
        ],
        warmup,
    ));
    out.push_str(&line_chart(
        &format!("{}: throughput and errors per second", run.target),
        "requests/s",
        &[
            Line {
                name: "well-behaved ok",
                color: "#1565c0",
                points: pick(|p| p.well_behaved_ok as f64),
            },
            Line {
                name: "abuser ok",
                color: "#6a1b9a",
                points: pick(|p| p.abuser_ok as f64),
            },
            Line {
                name: "failed",
                color: "#c62828",
                points: pick(|p| p.failures as f64),
            },
            Line {
                name: "429",
                color: "#ef6c00",
                points: pick(|p| p.rate_limited as f64),
            },
        ],
        warmup,
    ));
    let bars: Vec<(String, u64)> = run.outcomes().into_iter().collect();
    out.push_str(&bar_chart(
        &format!("{}: outcomes in the measured window", run.target),
        &bars,
    ));
}

/// The whole HTML page.
pub fn render(report: &ScenarioReport) -> String {
    let s = &report.scenario;
    let passed = report.passed();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>loadgen: {name}</title><style>\
body{{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}}\
table{{border-collapse:collapse;margin:8px 0 16px}}td,th{{border:1px solid #ccc;padding:3px 7px;font-size:13px;text-align:right}}\
th{{background:#f3f3f3}}td:first-child,th:first-child{{text-align:left}}\
.verdict{{padding:12px 16px;border-radius:6px;margin:12px 0;font-size:15px}}\
.pass{{background:#e8f5e9;border:2px solid #2e7d32}}.fail{{background:#ffebee;border:2px solid #c62828}}\
.chart{{display:block;margin:10px 0;max-width:100%;height:auto}}.note{{color:#666;font-size:12px}}\
pre{{background:#f7f7f7;padding:8px;font-size:12px;overflow:auto}}</style></head><body>",
        name = escape(&s.name)
    );
    let _ = write!(
        out,
        "<h1>loadgen: scenario {}</h1><p>{}</p>",
        escape(&s.name),
        escape(&s.description)
    );
    let arrival = match s.arrival.mode {
        super::scenario::LoopKind::Open => format!(
            "open loop, {} req/s ({:?} arrivals)",
            s.arrival.rate, s.arrival.distribution
        ),
        super::scenario::LoopKind::Closed => {
            format!("closed loop, {} clients", s.arrival.concurrency)
        }
    };
    let abusers = s.abusers().map_or("none".to_string(), |a| {
        format!(
            "{} account(s) × {} key(s) at {}× {} req/min",
            a.accounts, a.keys_per_account, a.multiplier, a.requests_per_minute
        )
    });
    let _ = write!(
        out,
        "<table><tr><th>started</th><td>{}</td></tr><tr><th>arrival</th><td>{}</td></tr><tr><th>window</th><td>{} s warmup + {} s measured</td></tr>\
<tr><th>traffic</th><td>{:.0}% streams, {:.0}% dropped mid-stream, prompts {}–{} bytes, max_tokens {}</td></tr>\
<tr><th>tenants</th><td>{} account(s) × {} key(s), {} USD each</td></tr><tr><th>abusers</th><td>{}</td></tr>\
<tr><th>billed requests</th><td>{}</td></tr></table>",
        report.started_at.to_rfc3339(),
        escape(&arrival),
        s.warmup_secs,
        s.duration_secs,
        s.traffic.stream_share * 100.0,
        s.traffic.disconnect_share * 100.0,
        s.traffic.prompt_bytes.min,
        s.traffic.prompt_bytes.max,
        s.traffic.max_tokens,
        s.tenants.accounts,
        s.tenants.keys_per_account,
        escape(&s.tenants.balance_usd),
        escape(&abusers),
        report.billed_requests
    );

    let _ = write!(
        out,
        "<div class=\"verdict {}\"><b>{}</b><ul>",
        if passed { "pass" } else { "fail" },
        if passed {
            "PASSED: every target met"
        } else {
            "FAILED"
        }
    );
    if let Some(warning) = report.timeout_warning() {
        let _ = write!(out, "<li>warning: {}</li>", escape(&warning));
    }
    if report.reconciliation.is_none() && report.scenario.reconcile {
        out.push_str("<li>reconciliation: not run</li>");
    }
    for c in &report.checks {
        let _ = write!(
            out,
            "<li>{} {}: {}</li>",
            if c.informative {
                "–"
            } else if c.passed {
                "✔"
            } else {
                "✘"
            },
            escape(&c.name),
            escape(&c.detail)
        );
    }
    out.push_str("</ul></div>");

    if !report.added_latency.is_empty() {
        out.push_str("<h2>Added latency of tollgate</h2><table><tr><th>reference</th><th>traffic</th><th>TTFB p50</th><th>TTFB p99</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th></tr>");
        for a in &report.added_latency {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{:+.3}</td><td>{:+.3}</td><td>{:+.3}</td><td>{:+.3}</td><td>{:+.3}</td><td>{:+.3}</td></tr>",
                escape(&a.reference),
                escape(&a.traffic),
                a.ttfb_p50_ms,
                a.ttfb_p99_ms,
                a.total_p50_ms,
                a.total_p90_ms,
                a.total_p99_ms,
                a.total_p999_ms
            );
        }
        out.push_str("</table><p class=\"note\">ms; tollgate's percentile minus the reference's (a difference of percentiles), well-behaved successes.</p>");
    }

    run_section(&mut out, &report.tollgate, s.warmup_secs);
    for run in &report.references {
        run_section(&mut out, run, s.warmup_secs);
    }

    if let Some(r) = &report.reconciliation {
        out.push_str("<h2>Reconciliation</h2><table><tr><th>account</th><th>requests</th><th>usage rows</th><th>expected cost</th><th>billed cost</th><th>ledger usage</th><th>expected balance</th><th>stored balance</th><th>exact</th></tr>");
        for a in &r.accounts {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&a.account_id),
                a.requests,
                a.usage_rows,
                a.expected_cost,
                a.billed_cost,
                a.ledger_usage,
                a.expected_balance,
                a.stored_balance,
                if a.exact { "yes" } else { "<b>NO</b>" }
            );
        }
        out.push_str("</table>");
    }
    let _ = write!(
        out,
        "<h2>Scenario</h2><pre>{}</pre></body></html>",
        escape(&serde_norway::to_string(s).unwrap_or_default())
    );
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nice_axis_bounds() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(10.0), 10.0);
        assert_eq!(nice_max(101.0), 200.0);
        assert!((nice_max(0.013) - 0.02).abs() < 1e-12);
    }

    #[test]
    fn charts_are_svg_with_escaped_text() {
        let svg = line_chart(
            "a <b>",
            "ms",
            &[Line {
                name: "p50",
                color: "#123456",
                points: vec![(0.5, 1.0), (1.5, 3.0)],
            }],
            1.0,
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("a &lt;b&gt;"));
        assert!(svg.contains("<polyline"));
        assert!(svg.contains("warmup"));
        let bars = bar_chart(
            "outcomes",
            &[("ok".into(), 10), ("429 rate_limit_error".into(), 5)],
        );
        assert_eq!(bars.matches("class=\"bar\"").count(), 2);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod page_tests {
    use std::time::Duration;

    use super::*;
    use crate::drive::SendStats;
    use crate::record::{Group, Outcome, RunRecorder, Sample};
    use crate::scenario::Scenario;

    #[test]
    fn the_page_has_the_charts_the_verdict_and_the_tables() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/smoke.yaml");
        let scenario = Scenario::load(&path).unwrap();
        let mut recorder = RunRecorder::new(Duration::from_millis(500));
        for i in 0..200u64 {
            let intended = Duration::from_millis(i * 12);
            let outcome = if i % 17 == 0 {
                Outcome::Status {
                    status: 529,
                    error_type: "overloaded_error".into(),
                }
            } else {
                Outcome::Ok
            };
            recorder.record(&Sample {
                group: Group::WellBehaved,
                stream: i % 2 == 0,
                intended,
                first_byte: Some(intended + Duration::from_millis(3)),
                done: intended + Duration::from_millis(5 + i % 7),
                outcome,
                upstream_fault: false,
                unreconciled_timeout: false,
                usage_mismatch: false,
            });
        }
        let run = RunResult::new(
            "tollgate",
            &recorder,
            Duration::from_secs(2),
            SendStats::default(),
        );
        let report = ScenarioReport::new(
            &scenario,
            chrono::Utc::now(),
            chrono::Utc::now(),
            3,
            188,
            run.clone(),
            vec![RunResult {
                target: "direct".into(),
                ..run
            }],
            None,
        );
        assert!(!report.passed(), "529s are unexpected failures");
        let page = render(&report);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.ends_with("</html>"));
        // Per run: latency, throughput and outcome charts.
        assert_eq!(page.matches("<svg").count(), 6);
        assert!(page.matches("<polyline").count() >= 7);
        assert!(page.contains("verdict fail"));
        assert!(page.contains("529 overloaded_error"));
        assert!(page.contains("Added latency of tollgate"));
        assert!(!page.contains("<script") && !page.contains("http://fonts"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["tollgate"]["series"].as_array().unwrap().len(), 3);
    }
}
