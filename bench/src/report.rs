//! Distributions, the JSON results file and the markdown table.

use std::fmt::Write as _;

/// min / median / p99 / max of a set of samples (nearest rank).
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(samples: &[f64]) -> Option<Stats> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let rank = |q: f64| s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        Some(Stats {
            n: s.len(),
            min: s[0],
            p50: rank(0.5),
            p99: rank(0.99),
            max: s[s.len() - 1],
        })
    }

    pub fn json(&self) -> Json {
        Json::Obj(vec![
            ("n".into(), Json::Num(self.n as f64)),
            ("min".into(), Json::Num(self.min)),
            ("p50".into(), Json::Num(self.p50)),
            ("p99".into(), Json::Num(self.p99)),
            ("max".into(), Json::Num(self.max)),
        ])
    }
}

/// Enough JSON for a results file (xtask keeps to std).
#[derive(Debug, Clone)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn stats(samples: &[f64]) -> Json {
        Stats::of(samples).map_or(Json::Null, |s| s.json())
    }

    pub fn render(&self, indent: usize, out: &mut String) {
        let pad = "  ".repeat(indent + 1);
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(n) if n.is_finite() => {
                let _ = write!(out, "{}", (n * 1000.0).round() / 1000.0);
            }
            Json::Num(_) => out.push_str("null"),
            Json::Str(s) => {
                out.push('"');
                for c in s.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        c if (c as u32) < 0x20 => {
                            let _ = write!(out, "\\u{:04x}", c as u32);
                        }
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    out.push_str(&pad);
                    item.render(indent + 1, out);
                }
                if !items.is_empty() {
                    let _ = write!(out, "\n{}", "  ".repeat(indent));
                }
                out.push(']');
            }
            Json::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    out.push_str(&pad);
                    Json::Str(k.clone()).render(0, out);
                    out.push_str(": ");
                    v.render(indent + 1, out);
                }
                if !fields.is_empty() {
                    let _ = write!(out, "\n{}", "  ".repeat(indent));
                }
                out.push('}');
            }
        }
    }
}

/// `p50 (p99)` of a distribution, or `–`.
pub fn cell(samples: &[f64]) -> String {
    match Stats::of(samples) {
        Some(s) => format!("{} ({})", ms(s.p50), ms(s.p99)),
        None => "–".into(),
    }
}

/// A millisecond figure with sensible precision.
pub fn ms(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// elect / peer for two p50s (or two plain figures).
pub fn ratio(elect: Option<f64>, peer: Option<f64>) -> String {
    match (elect, peer) {
        (Some(e), Some(p)) if p > 0.0 => format!("{:.2}", e / p),
        (Some(_), Some(_)) => "∞".into(),
        _ => "–".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_use_nearest_rank() {
        let s = Stats::of(&(1..=100).map(f64::from).collect::<Vec<_>>()).unwrap();
        assert_eq!(
            (s.min, s.p50, s.p99, s.max, s.n),
            (1.0, 50.0, 99.0, 100.0, 100)
        );
        let one = Stats::of(&[7.0]).unwrap();
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        assert!(Stats::of(&[]).is_none());
    }

    #[test]
    fn json_renders_and_escapes() {
        let mut out = String::new();
        Json::Obj(vec![
            ("a".into(), Json::Num(1.23456)),
            ("b\"".into(), Json::Arr(vec![Json::Null, Json::Bool(true)])),
            ("c".into(), Json::Str("x\ny".into())),
        ])
        .render(0, &mut out);
        assert_eq!(
            out,
            "{\n  \"a\": 1.235,\n  \"b\\\"\": [\n    null,\n    true\n  ],\n  \"c\": \"x\\ny\"\n}"
        );
    }
}
