//! PTB-style tokenisation as pycocoevalcap does it.
//!
//! pycocoevalcap pipes every caption through Stanford CoreNLP 3.4.1's `PTBTokenizer -preserveLines
//! -lowerCase` and then drops the tokens of its punctuation list. [`ptb_tokens`] reproduces the
//! tokenizer's output for ordinary English captions: clitics split (`don't` -> `do n't`, `can't` ->
//! `ca n't`, `it's` -> `it 's`, `kids'` -> `kids '`, `gonna` -> `gon na`), double quotes turned into
//! `` `` `` / `''`, brackets into `-lrb-` / `-rrb-` / `-lsb-` / `-rsb-` / `-lcb-` / `-rcb-`, hyphenated
//! words, numbers (`3.5`, `1,000`, `10:30`, `12/25/2019`), e-mail addresses and abbreviations
//! (`u.s.`, `p.m.`, `mr.`) kept whole, other punctuation split off.
//!
//! One quirk is kept on purpose: `-lowerCase` lower-cases `-LRB-` to `-lrb-`, which is not in
//! pycocoevalcap's punctuation list (it lists `-LRB-`), so bracket tokens survive into the scored
//! text. [`coco_tokenize`] keeps them too, as the reference does.
//!
//! Checked against the Java tokenizer on the goldens (`tests/fixtures/tokenizer.json` and the
//! captions of `captions.json`: curly quotes, `?!`, `etc.` ending a line, `y'all`, `i'd've`, ...).
//! Known differences, seen when building the goldens: the lexer splits `2+2=4` into `2 +2 = 4`,
//! keeps `,3` whole in `cats,3`, and keeps a `!` glued to an e-mail address; this port does not.
//! SGML/XML, emoticons, phone numbers with spaces and the full abbreviation list are not
//! reproduced either.

/// pycocoevalcap's `PUNCTUATIONS` (tokenizer/ptbtokenizer.py), dropped after tokenisation.
pub const COCO_PUNCTUATION: [&str; 17] =
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"];

/// Words kept with their period by the Stanford lexer (a subset of its abbreviation list).
const ABBREVIATIONS: [&str; 40] = [
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "inc", "ltd", "co", "corp", "vs", "etc", "mt", "ft", "gen",
    "gov", "sen", "rep", "rev", "capt", "col", "lt", "sgt", "jan", "feb", "mar", "apr", "aug", "sep", "sept", "oct",
    "nov", "dec", "no", "fig", "dept", "est", "approx",
];

/// Clitics split off the end of a word.
const CLITICS: [&str; 7] = ["n't", "'s", "'re", "'ll", "'d", "'m", "'ve"];

/// Whole words the lexer splits in two (`gonna` -> `gon na`).
const SPLIT_WORDS: [(&str, &str, &str); 7] = [
    ("y'all", "y'", "all"),
    ("cannot", "can", "not"),
    ("gonna", "gon", "na"),
    ("gotta", "got", "ta"),
    ("wanna", "wan", "na"),
    ("gimme", "gim", "me"),
    ("lemme", "lem", "me"),
];

/// Apostrophe-initial words kept whole (`'cause`, `'n'`, `'em`).
const APOSTROPHE_WORDS: [&str; 7] = ["'cause", "'n'", "'em", "'tis", "'twas", "'til", "'round"];

/// Lower-cased PTB tokens of one line, before pycocoevalcap drops punctuation.
pub fn ptb_tokens(line: &str) -> Vec<String> {
    // Decisions are case-insensitive except for initials (`A.`), so case is dropped at the end.
    let text: String = line
        .chars()
        .map(|c| match c {
            '\u{2019}' => '\'',
            '\u{2018}' => '`',
            _ => c,
        })
        .collect();
    let mut out = Vec::new();
    for chunk in text.split_whitespace() {
        tokenize_chunk(chunk, &mut out);
    }
    // An abbreviation ending the line also ends the sentence: the lexer adds a period token.
    if out.last().is_some_and(|t| t.len() > 1 && is_abbreviation(t)) {
        out.push(".".to_string());
    }
    out.into_iter().map(|t| t.to_lowercase()).collect()
}

/// A caption as pycocoevalcap scores it: PTB tokens without its punctuation, joined by spaces.
pub fn coco_tokenize(caption: &str) -> String {
    let caption = caption.replace('\n', " ");
    ptb_tokens(&caption).into_iter().filter(|t| !COCO_PUNCTUATION.contains(&t.as_str())).collect::<Vec<_>>().join(" ")
}

fn bracket(c: char) -> Option<&'static str> {
    Some(match c {
        '(' => "-lrb-",
        ')' => "-rrb-",
        '[' => "-lsb-",
        ']' => "-rsb-",
        '{' => "-lcb-",
        '}' => "-rcb-",
        _ => return None,
    })
}

fn is_apostrophe_word(s: &str) -> bool {
    let s = s.to_lowercase();
    let s = s.as_str();
    if APOSTROPHE_WORDS.contains(&s) || CLITICS.contains(&s) {
        return true;
    }
    // '90s, '05
    let Some(rest) = s.strip_prefix('\'') else { return false };
    let digits = rest.trim_end_matches('s');
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

/// Abbreviation with its final period: `U.S.`, `p.m.`, `A.` (an initial), `Mr.`.
fn is_abbreviation(word: &str) -> bool {
    let Some(stem) = word.strip_suffix('.') else { return false };
    if stem.is_empty() {
        return false;
    }
    if ABBREVIATIONS.contains(&stem.to_lowercase().as_str()) {
        return true;
    }
    // Letter-dot sequences (any case), or one capital letter (an initial).
    let parts: Vec<&str> = stem.split('.').collect();
    let letter = |p: &str| p.chars().count() == 1 && p.chars().all(char::is_alphabetic);
    if parts.len() > 1 {
        parts.iter().all(|p| letter(p))
    } else {
        letter(stem) && stem.chars().all(char::is_uppercase)
    }
}

fn tokenize_chunk(chunk: &str, out: &mut Vec<String>) {
    let mut s = chunk;
    // Leading punctuation.
    loop {
        if s.is_empty() {
            return;
        }
        if is_apostrophe_word(s.trim_end_matches(|c: char| ".,;:!?\")]}".contains(c))) {
            break;
        }
        let c = s.chars().next().unwrap_or(' ');
        let (tok, len): (&str, usize) = if s.starts_with("``") {
            ("``", 2)
        } else if s.starts_with("...") {
            ("...", 3)
        } else if s.starts_with("--") {
            ("--", 2)
        } else if c == '"' || c == '\u{201c}' || c == '\u{201d}' {
            ("``", c.len_utf8())
        } else if c == '\'' || c == '`' {
            ("`", 1)
        } else if let Some(b) = bracket(c) {
            (b, 1)
        } else if (c == '!' || c == '?') && s.len() > 1 {
            let run = s.len() - s.trim_start_matches(['!', '?']).len();
            (&s[..run], run)
        } else if "$#,;:%&".contains(c) && s.len() > 1 {
            (&s[..1], 1)
        } else if c == '-' && s.len() > 1 && !s[1..].starts_with(|d: char| d.is_ascii_digit() || d == '.') {
            ("-", 1)
        } else {
            break;
        };
        out.push(tok.to_string());
        s = &s[len..];
    }
    // Trailing punctuation, collected right to left.
    let mut tail: Vec<String> = Vec::new();
    loop {
        if s.is_empty() || is_apostrophe_word(s) {
            break;
        }
        let c = s.chars().next_back().unwrap_or(' ');
        let (tok, len): (String, usize) = if s.len() > 3 && s.ends_with("...") {
            ("...".into(), 3)
        } else if s.len() > 2 && s.ends_with("--") {
            ("--".into(), 2)
        } else if s.len() > 1 && (c == '"' || c == '\u{201d}' || c == '\u{201c}') {
            ("''".into(), c.len_utf8())
        } else if s.len() > 2 && s.ends_with("''") {
            ("''".into(), 2)
        } else if s.len() > 1 && bracket(c).is_some() {
            (bracket(c).unwrap_or_default().into(), 1)
        } else if s.len() > 1 && (c == '!' || c == '?') {
            // A run like `?!` is one token.
            let run = s.len() - s.trim_end_matches(['!', '?']).len();
            let run = if run == s.len() { run - 1 } else { run };
            (s[s.len() - run..].to_string(), run)
        } else if s.len() > 1 && ",;:%".contains(c) {
            (c.to_string(), 1)
        } else if s.len() > 1 && c == '\'' {
            // A closing quote, a plural possessive (`kids'`) or a dropped g (`nothin'`).
            ("'".into(), 1)
        } else if s.len() > 1 && c == '.' && !is_abbreviation(s) {
            (".".into(), 1)
        } else {
            break;
        };
        tail.push(tok);
        s = &s[..s.len() - len];
    }
    if !s.is_empty() {
        split_core(s, out);
    }
    out.extend(tail.into_iter().rev());
}

/// Splits the inside of a chunk at punctuation that always separates, then the clitics off each word.
fn split_core(s: &str, out: &mut Vec<String>) {
    if is_apostrophe_word(s) || s.chars().count() == 1 {
        out.push(s.to_string());
        return;
    }
    let chars: Vec<char> = s.chars().collect();
    let mut word = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let prev_digit = i > 0 && chars[i - 1].is_ascii_digit();
        let next_digit = chars.get(i + 1).is_some_and(char::is_ascii_digit);
        let sep: Option<(String, usize)> = if c == '-' && chars.get(i + 1) == Some(&'-') {
            Some(("--".into(), 2))
        } else if c == '.' && chars.get(i + 1) == Some(&'.') && chars.get(i + 2) == Some(&'.') {
            Some(("...".into(), 3))
        } else if ";!?$%\"".contains(c) {
            Some((if c == '"' { if word.is_empty() { "``" } else { "''" }.into() } else { c.to_string() }, 1))
        } else if (c == ',' || c == ':') && !(prev_digit && next_digit) {
            Some((c.to_string(), 1))
        } else if c == '\'' && prev_digit && next_digit {
            Some(("'".into(), 1))
        } else {
            bracket(c).map(|b| (b.to_string(), 1))
        };
        match sep {
            Some((tok, len)) => {
                push_word(&word, out);
                word.clear();
                out.push(tok);
                i += len;
            }
            None => {
                word.push(c);
                i += 1;
            }
        }
    }
    push_word(&word, out);
}

fn push_word(word: &str, out: &mut Vec<String>) {
    if word.is_empty() {
        return;
    }
    let word = &word.to_lowercase();
    if is_apostrophe_word(word) {
        out.push(word.to_string());
        return;
    }
    for (whole, a, b) in SPLIT_WORDS {
        if word == whole {
            out.push(a.to_string());
            out.push(b.to_string());
            return;
        }
    }
    // Clitics can chain (`i'd've` -> `i 'd 've`): peel them off the end one by one.
    let mut base = word.as_str();
    let mut clitics = Vec::new();
    while let Some((rest, clitic)) = CLITICS
        .iter()
        .find_map(|c| base.strip_suffix(c).filter(|b| !b.is_empty() && !b.ends_with('\'')).map(|b| (b, *c)))
    {
        clitics.push(clitic);
        base = rest;
    }
    out.push(base.to_string());
    out.extend(clitics.iter().rev().map(|c| c.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contractions_and_punctuation() {
        assert_eq!(ptb_tokens("I don't know."), ["i", "do", "n't", "know", "."]);
        assert_eq!(ptb_tokens("It's the kids' toy!"), ["it", "'s", "the", "kids", "'", "toy", "!"]);
        assert_eq!(coco_tokenize("A man (tall), 3.5 m."), "a man -lrb- tall -rrb- 3.5 m");
        assert_eq!(ptb_tokens("I got nothin' today"), ["i", "got", "nothin", "'", "today"]);
        assert_eq!(ptb_tokens("Vitamin A. The U.S. Mr. Smith"), ["vitamin", "a.", "the", "u.s.", "mr.", "smith"]);
    }
}
