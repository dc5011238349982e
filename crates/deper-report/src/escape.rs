//! Escaping of user text (subject names, captions, method names) for HTML, SVG and Markdown,
//! number formatting, and `data:` URIs for inline images.
//!
//! HTML and SVG share one escaper that also works inside attribute values and keeps the
//! output well-formed XML: control characters XML 1.0 forbids become U+FFFD.

use base64::Engine;

/// Escapes `& < > " '` and replaces characters XML 1.0 cannot hold.
pub fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for one Markdown table cell or list item: inline HTML becomes entities, the
/// characters Markdown would treat as formatting are backslash-escaped, line breaks become spaces.
pub fn markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A metric value with three decimals; NaN and infinities render as "–".
pub fn number(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "–".to_string()
    }
}

/// A compact number for SVG text (axis ticks, coordinates): shortest form, no "-0".
pub fn short(v: f64) -> String {
    if !v.is_finite() {
        return "–".to_string();
    }
    let v = if v == 0.0 { 0.0 } else { v };
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        return format!("{v:.2e}");
    }
    // Round to 6 significant digits, then drop trailing zeros.
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// The MIME type of image bytes by their magic number; PNG when unknown.
pub fn image_mime(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "image/jpeg"
    } else if bytes.starts_with(b"GIF8") {
        "image/gif"
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "image/webp"
    } else {
        "image/png"
    }
}

/// `data:<mime>;base64,...` for inline images (no external request).
pub fn data_uri(bytes: &[u8]) -> String {
    format!("data:{};base64,{}", image_mime(bytes), base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes_markup_and_control_characters() {
        assert_eq!(
            xml("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(xml("a\u{0}b\u{1b}c\nd"), "a\u{FFFD}b\u{FFFD}c\nd");
    }

    #[test]
    fn markdown_escapes_table_breakers() {
        assert_eq!(markdown("a|b\n*c* <i>"), "a\\|b \\*c\\* &lt;i&gt;");
    }

    #[test]
    fn numbers_format_and_nan_is_a_dash() {
        assert_eq!(number(0.12345), "0.123");
        assert_eq!(number(f64::NAN), "–");
        assert_eq!(number(f64::INFINITY), "–");
        assert_eq!(short(2.5), "2.5");
        assert_eq!(short(-0.0), "0");
        assert_eq!(short(100.0), "100");
        assert_eq!(short(1.0e-7), "1.00e-7");
    }

    #[test]
    fn mime_is_sniffed() {
        assert_eq!(image_mime(&[0x89, b'P', b'N', b'G']), "image/png");
        assert_eq!(image_mime(&[0xFF, 0xD8, 0xFF, 0xE0]), "image/jpeg");
        assert!(data_uri(&[1, 2, 3]).starts_with("data:image/png;base64,AQID"));
    }
}
