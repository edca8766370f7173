//! Prometheus text exposition (format 0.0.4): `# HELP`/`# TYPE` headers and samples, every
//! metric name under one daemon prefix, label values escaped.

use std::fmt::{Display, Write};

/// The content type of the text exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A page of metrics being written.
pub struct Text {
    prefix: &'static str,
    out: String,
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

    /// The finished page.
    pub fn finish(self) -> String {
        self.out
    }
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
}
