//! Prometheus text exposition (format 0.0.4): `# HELP`/`# TYPE` headers and samples, every
//! metric name under one daemon prefix, label values escaped.

use std::fmt::{self, Display, Write};

/// The content type of the text exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A page of metrics being written.
pub struct Text {
    prefix: &'static str,
    out: String,
}

/// The page so far is only counted: it can be long.
impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Text")
            .field("prefix", &self.prefix)
            .field("bytes", &self.out.len())
            .finish()
    }
}

impl Text {
    /// A page whose metric names all start with `prefix` (e.g. `tether_gateway_`).
    pub fn new(prefix: &'static str, capacity: usize) -> Text {
        Text {
            prefix,
            out: String::with_capacity(capacity),
        }
    }

    /// `# HELP` and `# TYPE` for a family.
    pub fn header(&mut self, name: &str, kind: &str, help: &str) {
        let prefix = self.prefix;
        let _ = writeln!(self.out, "# HELP {prefix}{name} {help}");
        let _ = writeln!(self.out, "# TYPE {prefix}{name} {kind}");
    }

    /// One sample; `labels` are (name, value) pairs, values escaped here.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(self.prefix);
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.header(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The `build_info` family: always 1, with the build's version as a label.
    pub fn build_info(&mut self, version: &str) {
        self.header(
            "build_info",
            "gauge",
            "Always 1; the version label says which build is running.",
        );
        self.sample("build_info", &[("version", version)], 1);
    }

    /// The finished page.
    pub fn finish(self) -> String {
        self.out
    }
}

/// The value of `series` (a metric name with its `{labels}` exactly as written, prefix
/// included) in a text page, when exactly one sample has it. For tests and tools that read
/// what a daemon exposes.
pub fn read_sample(text: &str, series: &str) -> Option<f64> {
    let mut hits = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(s, _)| *s == series)
        .map(|(_, v)| v.parse::<f64>());
    match (hits.next(), hits.next()) {
        (Some(Ok(value)), None) => Some(value),
        _ => None,
    }
}

/// `text` with the value of every sample of `series` (name and `{labels}` exactly as written,
/// prefix included) replaced by `<masked>`, for comparing pages that hold a moving value
/// (uptime). Returns `None` if no such sample is there or one's value is not a number.
pub fn mask_sample(text: &str, series: &str) -> Option<String> {
    let mut found = false;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        match line.rsplit_once(' ') {
            Some((s, v)) if !line.starts_with('#') && s == series => {
                v.parse::<f64>().ok()?;
                found = true;
                out.push_str(s);
                out.push_str(" <masked>");
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    found.then_some(out)
}

/// Escapes a label value: backslash, double quote and newline.
fn escape_label(out: &mut String, v: &str) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_headers_samples_and_escapes_labels() {
        let mut t = Text::new("x_", 64);
        t.header("a_total", "counter", "An a.");
        t.sample("a_total", &[("k", "q\"uo\\te\n")], 3);
        t.single("b", "gauge", "A b.", 1.5);
        assert_eq!(
            t.finish(),
            "# HELP x_a_total An a.\n# TYPE x_a_total counter\n\
             x_a_total{k=\"q\\\"uo\\\\te\\n\"} 3\n\
             # HELP x_b A b.\n# TYPE x_b gauge\nx_b 1.5\n"
        );
    }

    #[test]
    fn reads_back_exactly_one_sample() {
        let page = "# TYPE x_a counter\nx_a{k=\"v\"} 3\nx_b 1.5\nx_c 1\nx_c 2\n";
        assert_eq!(read_sample(page, "x_a{k=\"v\"}"), Some(3.0));
        assert_eq!(read_sample(page, "x_b"), Some(1.5));
        assert_eq!(read_sample(page, "x_a"), None);
        assert_eq!(read_sample(page, "x_c"), None, "two samples of one series");
    }

    #[test]
    fn masks_a_moving_value() {
        let page = "# HELP x_up Up.\nx_up 12.5\nx_b{k=\"v\"} 2\n";
        assert_eq!(
            mask_sample(page, "x_up").as_deref(),
            Some("# HELP x_up Up.\nx_up <masked>\nx_b{k=\"v\"} 2\n")
        );
        assert_eq!(mask_sample(page, "x_b"), None, "the series has labels");
        assert_eq!(mask_sample("x_up nope\n", "x_up"), None, "not a number");
    }
}
