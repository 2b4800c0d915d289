//! The comparison of a run with its baseline, as an HTML section (id `comparison`) and a
//! Markdown table: the figures and changes of [`volley_core::compare::compare`], shown as
//! they are (never recomputed here), with regressions marked.

use std::fmt::Write as _;

use volley_core::compare::{FigureChange, QueryChange, RunComparison};
use volley_core::metrics::status::{format_latency_ms, format_rate, significant};

use crate::escape;
use crate::markdown::cell;

/// One figure's value as shown: rate, percent or latency.
fn show(f: &FigureChange, v: f64) -> String {
    match f.figure {
        "rps" => format_rate(v),
        "error rate" => format!("{:.3}%", v * 100.0),
        _ => format_latency_ms(v),
    }
}

/// The change as shown: percent of the baseline, or percentage points for the error rate.
fn change(f: &FigureChange) -> String {
    match (f.figure, f.change) {
        (_, None) => "-".to_owned(),
        ("error rate", Some(pp)) => format!("{pp:+.2} pp"),
        (_, Some(pct)) => format!("{pct:+.1}%"),
    }
}

/// The HTML section comparing this run (B) with the baseline (A).
pub fn html(c: &RunComparison) -> String {
    let mut out = String::from(
        "<section id=\"comparison\"><h2>Comparison with the baseline</h2>\
         <table><thead><tr><th>scope</th><th>figure</th><th>baseline</th><th>this run</th>\
         <th>change</th><th></th></tr></thead><tbody>",
    );
    for scope in &c.scopes {
        if let Some(note) = &scope.note {
            let _ = write!(
                out,
                "<tr><td>{}</td><td colspan=\"5\">{}</td></tr>",
                escape(&scope.scope),
                escape(note)
            );
        }
        for f in &scope.figures {
            let mark = match &f.regressed {
                Some(budget) => format!(
                    "<strong class=\"fail\">REGRESSED ({})</strong>",
                    escape(budget)
                ),
                None => String::new(),
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{mark}</td></tr>",
                escape(&scope.scope),
                f.figure,
                show(f, f.a),
                show(f, f.b),
                change(f)
            );
        }
    }
    for q in &c.prometheus {
        let _ = write!(
            out,
            "<tr><td>prometheus</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td></td></tr>",
            escape(&q.name),
            significant(q.a, 4),
            significant(q.b, 4),
            query_change(q)
        );
    }
    out.push_str("</tbody></table></section>");
    out
}

/// A query's change, in percent of the baseline's value.
fn query_change(q: &QueryChange) -> String {
    q.change.map_or("-".to_owned(), |pct| format!("{pct:+.1}%"))
}

/// The same comparison as a Markdown table.
pub fn markdown(c: &RunComparison) -> String {
    let mut out = String::from(
        "## Comparison with the baseline\n\n| scope | figure | baseline | this run | change | |\n|---|---|---|---|---|---|\n",
    );
    for scope in &c.scopes {
        if let Some(note) = &scope.note {
            let _ = writeln!(out, "| {} | {} | | | | |", cell(&scope.scope), cell(note));
        }
        for f in &scope.figures {
            let mark = f
                .regressed
                .as_ref()
                .map(|b| format!("**REGRESSED** ({})", cell(b)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {mark} |",
                cell(&scope.scope),
                f.figure,
                show(f, f.a),
                show(f, f.b),
                change(f)
            );
        }
    }
    for q in &c.prometheus {
        let _ = writeln!(
            out,
            "| prometheus | {} | {} | {} | {} | |",
            cell(&q.name),
            significant(q.a, 4),
            significant(q.b, 4),
            query_change(q)
        );
    }
    out
}

/// The HTML report `page` ([`crate::html::render`]) with the comparison section added at its
/// end, before `</body>`.
pub fn add_to_html(mut page: String, c: &RunComparison) -> String {
    let at = page.rfind("</body>").unwrap_or(page.len());
    page.insert_str(at, &html(c));
    page
}
