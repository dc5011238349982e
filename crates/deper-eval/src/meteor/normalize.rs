//! METEOR 1.5's `-norm` line normaliser for English (edu.cmu.meteor.util.Normalizer, keep
//! punctuation), followed by lower-casing as MeteorScorer does.
//!
//! The same regular-expression passes in the same order: separate symbols, protect runs of dots,
//! separate commas outside numbers, unify quotes and dashes, split hyphenated words (so
//! `stainless-steel` becomes `stainless steel`), split English clitics (`n't` becomes `n 't`, a
//! free-standing `'s` becomes `' s`), then split sentence periods.
//!
//! Difference: the jar consults a list of non-breaking prefixes (Mr., Inc., ...) for a word ending
//! in a period that is followed by a number or ends the line; here such a word's period is always
//! split off. A word followed by a lower-case word keeps its period in both, and pycocoevalcap's
//! tokenisation has already dropped free-standing periods, so captions are not affected.

use std::sync::OnceLock;

use regex::Regex;

const ALPHA: &str = "A-Za-zŠŽšžŸÀ-ÖØ-öø-žЀ-ӿԀ-ԧꙀ-ꙮ꙾-ꚗᴀ-ᵿ";
const ALNUM: &str = "0-9A-Za-zŠŽšžŸÀ-ÖØ-öø-žЀ-ӿԀ-ԧꙀ-ꙮ꙾-ꚗᴀ-ᵿ";

struct Patterns {
    sep_other: Regex,
    multi_dot: Regex,
    multi_dot2: Regex,
    comma: [Regex; 3],
    quote: Regex,
    quote2: Regex,
    rm_dash: Regex,
    cont: [Regex; 5],
    white: Regex,
}

// The patterns are constants; the unit tests compile every one of them.
fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        let re = |s: String| Regex::new(&s).expect("valid METEOR normaliser pattern");
        Patterns {
            // Java's \s is ASCII whitespace.
            sep_other: re(format!(r"([^{ALNUM} \t\n\x0B\x0C\r\.'`,\-‘’])")),
            multi_dot: re(r"\.(\.+)".into()),
            multi_dot2: re(r"DOTMULTI\.([^\.])".into()),
            comma: [re(r"([^0-9]),([^0-9])".into()), re(r"([0-9]),([^0-9])".into()), re(r"([^0-9]),([0-9])".into())],
            quote: re(r"[`‘’]".into()),
            quote2: re(r"([“”]|'')".into()),
            rm_dash: re(format!(r"([{ALNUM}\.])-([{ALNUM}])")),
            cont: [
                re(format!(r"([^{ALPHA}])'([^{ALPHA}])")),
                re(format!(r"([^{ALPHA}0-9])'([{ALPHA}])")),
                re(format!(r"([{ALPHA}])'([^{ALPHA}])")),
                re(format!(r"([{ALPHA}])'([{ALPHA}])")),
                re(r"([0-9])'(s)".into()),
            ],
            white: re(r"[ \u{a0}\u{2000}-\u{200a}\u{202f}\u{205f}\u{3000}\u{1680}]+".into()),
        }
    })
}

/// Java's `String.trim`: strips code points up to U+0020 at both ends.
fn java_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

/// Normalise and lower-case one line as `meteor-1.5.jar -l en -norm` does before aligning.
pub fn normalize_line(line: &str) -> String {
    let p = patterns();
    let mut w = format!(" {line} ");
    w = p.sep_other.replace_all(&w, " ${1} ").into_owned();
    w = p.multi_dot.replace_all(&w, " DOTMULTI${1}").into_owned();
    while w.contains("DOTMULTI.") {
        w = p.multi_dot2.replace_all(&w, "DOTDOTMULTI ${1}").into_owned();
        w = w.replace("DOTMULTI.", "DOTDOTMULTI");
    }
    for r in &p.comma {
        w = r.replace_all(&w, "${1} , ${2}").into_owned();
    }
    w = p.quote.replace_all(&w, "'").into_owned();
    w = p.quote2.replace_all(&w, " \" ").into_owned();
    w = w.replace('–', "-").replace("--", "-");
    w = p.rm_dash.replace_all(&w, "${1} ${2}").into_owned();
    for (i, r) in p.cont.iter().enumerate() {
        let rep = if i < 3 { "${1} ' ${2}" } else { "${1} '${2}" };
        w = r.replace_all(&w, rep).into_owned();
    }
    let words: Vec<&str> = w.split([' ', '\t', '\n', '\r', '\x0C']).filter(|s| !s.is_empty()).collect();
    let mut out = String::new();
    for (i, word) in words.iter().enumerate() {
        if word.encode_utf16().count() > 1 && word.ends_with('.') {
            let pre = &word[..word.len() - 1];
            let next_lower = words.get(i + 1).is_some_and(|n| n.starts_with(|c: char| c.is_ascii_lowercase()));
            if pre.contains('.') && pre.chars().any(is_alpha) {
                out.push_str(&word.replace('.', ""));
            } else if next_lower {
                out.push_str(word);
            } else {
                out.push_str(pre);
                out.push_str(" .");
            }
        } else {
            out.push_str(word);
        }
        out.push(' ');
    }
    while out.contains("DOTDOTMULTI") {
        out = out.replace("DOTDOTMULTI", "DOTMULTI.");
    }
    out = out.replace("DOTMULTI", ".");
    let out = p.white.replace_all(&out, " ");
    java_trim(&out).to_lowercase()
}

/// Membership in the normaliser's `alpha` class.
fn is_alpha(c: char) -> bool {
    c.is_ascii_alphabetic()
        || matches!(c, 'Š' | 'Ž' | 'š' | 'ž' | 'Ÿ' | 'À'..='Ö' | 'Ø'..='ö' | 'ø'..='ž')
        || matches!(c, 'Ѐ'..='ӿ' | 'Ԁ'..='ԧ' | 'Ꙁ'..='ꙮ' | '꙾'..='ꚗ' | 'ᴀ'..='ᵿ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_hyphens_and_clitics() {
        assert_eq!(normalize_line("a stainless-steel oven"), "a stainless steel oven");
        assert_eq!(normalize_line("it does n't have the kitchen 's"), "it does n 't have the kitchen ' s");
        assert_eq!(normalize_line("U.S. team 10:30 1,000 a,b"), "us team 10 : 30 1,000 a , b");
    }
}
