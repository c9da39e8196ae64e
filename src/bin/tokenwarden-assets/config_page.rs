//! `tokenwarden.toml(5)` in roff, made from the commented example configuration, line by line:
//! the opening comment is the DESCRIPTION; each table header (`[http]`, or `# [postgres]` when
//! the example leaves it commented out) a subsection, the comment above it its first paragraph;
//! each key (`key = value`, commented out or not) a tagged paragraph holding the comment above it
//! and any comment beside or aligned under it; comment lines indented further (tables of presets,
//! examples) stay verbatim; other comments are paragraphs. Pure: text in, text out.

use std::fmt::Write as _;

/// The page for `example` (the example configuration's text), of tokenwarden `version`.
pub fn render(example: &str, version: &str) -> String {
    let mut page = Page::default();
    let _ = writeln!(
        page.out,
        ".TH TOKENWARDEN.TOML 5 \"\" \"tokenwarden {version}\" \"File Formats\"\n\
         .SH NAME\n\
         tokenwarden.toml \\- configuration of tokenwarden, the OAuth 2.0 token refresher\n\
         .SH SYNOPSIS\n\
         .B /etc/tokenwarden/tokenwarden.toml\n\
         .SH DESCRIPTION"
    );
    let mut lines = example.lines().peekable();
    // The opening comment, up to the first blank line.
    while let Some(line) = lines.next_if(|l| !l.trim().is_empty()) {
        page.line(line);
    }
    page.flush();
    page.out.push_str(".SH KEYS\n.SS \"Top level\"\n");
    for line in lines {
        page.line(line);
    }
    page.flush();
    page.out.push_str(
        ".SH FILES\n\
         .TP\n\
         .I /etc/tokenwarden/tokenwarden.toml\n\
         The configuration the packaged units read (root:tokenwarden, 0640).\n\
         .TP\n\
         .I /usr/share/doc/tokenwarden/examples/tokenwarden.example.toml\n\
         This example, as shipped.\n\
         .SH SEE ALSO\n\
         .BR tokenwarden (1),\n\
         .BR tokenwarden\\-run (1),\n\
         .BR tokenwarden\\-check\\-config (1)\n",
    );
    page.out
}

/// The page being written, and the comment prose not yet placed.
#[derive(Default)]
struct Page {
    out: String,
    prose: Vec<String>,
    /// Inside a verbatim (`.nf`) block.
    verbatim: bool,
    /// The last line was a key or continued one: an indented comment line continues it.
    after_key: bool,
}

impl Page {
    fn line(&mut self, line: &str) {
        let after_key = std::mem::take(&mut self.after_key);
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            self.flush();
            return;
        }
        let (commented, body) = match trimmed.strip_prefix('#') {
            Some(rest) => (true, rest.strip_prefix(' ').unwrap_or(rest)),
            None => (false, trimmed),
        };
        if let Some(table) = table_header(body) {
            // The comment above a table describes it: it follows the header.
            self.end_verbatim();
            let _ = writeln!(self.out, ".SS \"{}\"", escape(&table));
            self.flush();
            return;
        }
        if let Some((key, value, beside)) = key_line(body) {
            self.end_verbatim();
            let _ = writeln!(self.out, ".TP\n\\fB{}\\fR = {}", escape(key), escape(value));
            self.prose.extend(beside.map(str::to_owned));
            self.emit_prose();
            self.after_key = true;
            return;
        }
        // A comment aligned under a key's own comment, or an indented line right after a key,
        // continues it.
        let aligned = body.trim_start().strip_prefix("# ");
        if commented && (aligned.is_some() || (after_key && body.starts_with("  "))) {
            self.end_verbatim();
            let more = aligned.unwrap_or(body.trim_start());
            let _ = writeln!(self.out, "{}", escape(more));
            self.after_key = true;
            return;
        }
        if commented && body.is_empty() {
            self.flush();
            return;
        }
        if commented && body.starts_with("  ") {
            if !self.verbatim {
                self.flush();
                self.out.push_str(".PP\n.nf\n");
                self.verbatim = true;
            }
            let _ = writeln!(self.out, "{}", escape(body));
            return;
        }
        self.end_verbatim();
        self.prose.push(body.to_owned());
    }

    /// Ends a verbatim block and places pending prose as a paragraph.
    fn flush(&mut self) {
        self.end_verbatim();
        if !self.prose.is_empty() {
            self.out.push_str(".PP\n");
            self.emit_prose();
        }
    }

    fn emit_prose(&mut self) {
        for line in self.prose.drain(..) {
            let _ = writeln!(self.out, "{}", escape(&line));
        }
    }

    fn end_verbatim(&mut self) {
        if self.verbatim {
            self.out.push_str(".fi\n");
            self.verbatim = false;
        }
    }
}

/// `[name]` or `[name.sub]`: the table's name.
fn table_header(body: &str) -> Option<String> {
    // `[[proxy]]`: an array of tables, shown as written.
    let (name, array) = match body.strip_prefix("[[").and_then(|b| b.strip_suffix("]]")) {
        Some(name) => (name, true),
        None => (body.strip_prefix('[')?.strip_suffix(']')?, false),
    };
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_'))
        .then(|| {
            if array {
                format!("[[{name}]]")
            } else {
                format!("[{name}]")
            }
        })
}

/// `key = value  # comment`: the key, the value and the comment beside it.
pub fn key_line(body: &str) -> Option<(&str, &str, Option<&str>)> {
    let (key, rest) = body.split_once(" = ")?;
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
        return None;
    }
    Some(match rest.find("  #") {
        Some(at) => (
            key,
            rest[..at].trim_end(),
            Some(rest[at..].trim_start().trim_start_matches('#').trim()),
        ),
        None => (key, rest, None),
    })
}

/// Text made safe for a roff line: backslashes doubled as `\e`, a leading `.` or `'` guarded,
/// hyphens in words as `\-` where they are options or names.
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    if text.starts_with(['.', '\'']) {
        format!("\\&{text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::{key_line, render};

    #[test]
    fn keys_comments_and_tables_become_tagged_paragraphs_and_subsections() {
        let page = render(
            "# Intro.\n\n# What it does.\nschedule = \"*/3 * * * *\"\n\n[http]\n# Timeout.\n\
             connect_timeout = \"10s\"\n# [postgres]\n# password_env = \"X\"   # beside\n\
             #   aligned under it\n# Presets:\n#   preset = \"okta\"\n",
            "9.9.9",
        );
        assert!(page.starts_with(".TH TOKENWARDEN.TOML 5"), "{page}");
        assert!(
            page.contains(".TP\n\\fBschedule\\fR = \"*/3 * * * *\"\nWhat it does.\n"),
            "{page}"
        );
        assert!(page.contains(".SS \"[http]\"\n"), "{page}");
        assert!(page.contains(".SS \"[postgres]\"\n"), "{page}");
        assert!(
            page.contains("\\fBpassword_env\\fR = \"X\"\nbeside\naligned under it\n"),
            "{page}"
        );
        assert!(
            page.contains(".PP\nPresets:\n.PP\n.nf\n  preset = \"okta\"\n.fi\n"),
            "{page}"
        );
    }

    #[test]
    fn only_lowercase_words_before_an_equals_sign_are_keys() {
        assert_eq!(key_line("a_b = 1"), Some(("a_b", "1", None)));
        assert_eq!(key_line("Keys replaced = no"), None);
        assert_eq!(
            key_line("x = \"y\"   # why"),
            Some(("x", "\"y\"", Some("why")))
        );
    }
}
