//! InfluxDB line protocol: `measurement,tag=v,tag=v field=v,field=v timestamp`.
//!
//! Escaping follows the line-protocol reference: measurements escape commas and
//! spaces; tag keys, tag values and field keys escape commas, equals signs and
//! spaces; string field values escape double quotes and backslashes. A line break
//! would end the line anywhere, so it is written as a space (herald's events have
//! none; config tags might). A tag value ending in a backslash would escape the
//! separator after it, so a trailing backslash is dropped from tag values. Empty tag
//! values are not allowed by InfluxDB and are skipped.

/// Builds one line into a shared buffer.
#[derive(Debug)]
pub struct Line<'a> {
    out: &'a mut Vec<u8>,
    fields: usize,
}

impl<'a> Line<'a> {
    /// Starts a line for `measurement`.
    pub fn new(out: &'a mut Vec<u8>, measurement: &str) -> Line<'a> {
        escape(out, measurement, b", ");
        Line { out, fields: 0 }
    }

    /// Adds a tag; call every `tag` before any field, keys in sorted order.
    pub fn tag(&mut self, key: &str, value: &str) -> &mut Self {
        let value = value.trim_end_matches('\\');
        if key.is_empty() || value.is_empty() {
            return self;
        }
        debug_assert_eq!(self.fields, 0, "tags must come before fields");
        self.out.push(b',');
        escape(self.out, key, b",= ");
        self.out.push(b'=');
        escape(self.out, value, b",= ");
        self
    }

    fn field_key(&mut self, key: &str) {
        self.out.push(if self.fields == 0 { b' ' } else { b',' });
        escape(self.out, key, b",= ");
        self.out.push(b'=');
        self.fields += 1;
    }

    /// Adds a string field.
    pub fn string(&mut self, key: &str, value: &str) -> &mut Self {
        self.field_key(key);
        self.out.push(b'"');
        for &byte in value.as_bytes() {
            match byte {
                b'"' | b'\\' => {
                    self.out.push(b'\\');
                    self.out.push(byte);
                }
                b'\n' | b'\r' => self.out.push(b' '),
                _ => self.out.push(byte),
            }
        }
        self.out.push(b'"');
        self
    }

    /// Adds a float field from its decimal text (already validated as a number).
    pub fn float(&mut self, key: &str, number: &str) -> &mut Self {
        self.field_key(key);
        self.out.extend_from_slice(number.as_bytes());
        self
    }

    /// Adds an integer field from its text (already validated as an integer).
    pub fn integer(&mut self, key: &str, number: &str) -> &mut Self {
        self.field_key(key);
        self.out.extend_from_slice(number.as_bytes());
        self.out.push(b'i');
        self
    }

    /// How many fields the line has (InfluxDB needs at least one).
    pub fn field_count(&self) -> usize {
        self.fields
    }

    /// Ends the line with its timestamp in nanoseconds.
    pub fn finish(self, timestamp_ns: i128) {
        self.out.push(b' ');
        self.out
            .extend_from_slice(timestamp_ns.to_string().as_bytes());
        self.out.push(b'\n');
    }
}

/// Escapes `special` bytes with a backslash and writes line breaks as spaces.
fn escape(out: &mut Vec<u8>, text: &str, special: &[u8]) {
    for &byte in text.as_bytes() {
        if byte == b'\n' || byte == b'\r' {
            out.push(b' ');
            continue;
        }
        if special.contains(&byte) {
            out.push(b'\\');
        }
        out.push(byte);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(build: impl FnOnce(&mut Line<'_>)) -> String {
        let mut out = Vec::new();
        let mut line = Line::new(&mut out, "my measurement,x");
        build(&mut line);
        line.finish(1_700_000_000_123_000_000);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn measurement_escapes_commas_and_spaces_only() {
        assert_eq!(
            line(|l| {
                l.integer("n", "1");
            }),
            "my\\ measurement\\,x n=1i 1700000000123000000\n"
        );
    }

    #[test]
    fn tags_escape_commas_equals_and_spaces() {
        let text = line(|l| {
            l.tag("a key", "x=1,y 2")
                .tag("user_full", "LAB\\goran")
                .float("v", "1.5");
        });
        assert_eq!(
            text,
            "my\\ measurement\\,x,a\\ key=x\\=1\\,y\\ 2,user_full=LAB\\goran v=1.5 1700000000123000000\n"
        );
    }

    #[test]
    fn empty_tags_and_trailing_backslashes_are_dropped() {
        let text = line(|l| {
            l.tag("empty", "")
                .tag("path", "C:\\")
                .tag("only", "\\")
                .string("m", "x");
        });
        assert_eq!(
            text,
            "my\\ measurement\\,x,path=C: m=\"x\" 1700000000123000000\n"
        );
    }

    #[test]
    fn string_fields_escape_quotes_and_backslashes() {
        let text = line(|l| {
            l.string("message", "C:\\Qlik\\\"Sales\" app")
                .string("field key=,", "a,b c=d");
        });
        assert_eq!(
            text,
            "my\\ measurement\\,x message=\"C:\\\\Qlik\\\\\\\"Sales\\\" app\",field\\ key\\=\\,=\"a,b c=d\" 1700000000123000000\n"
        );
    }

    #[test]
    fn line_breaks_never_end_a_line_early() {
        let text = line(|l| {
            l.tag("t", "a\nb").string("s", "x\r\ny");
        });
        assert_eq!(text.matches('\n').count(), 1);
        assert!(text.contains("t=a b s=\"x  y\""));
    }

    #[test]
    fn integers_get_the_i_suffix() {
        assert!(
            line(|l| {
                l.integer("net_ram", "-1");
            })
            .contains(" net_ram=-1i ")
        );
    }
}
