//! Personas: simulated subjects, each with its own viewing policy and wording style.
//!
//! A persona is drawn from distributions (not hand-written), so subjects differ
//! but overlap: two may share a viewing strategy, an opening phrase or a
//! connective, and every subject deviates from its own habits in some trials.
//!
//! * Viewing: an order strategy (reading order, biggest first, favourite
//!   colours first, centre-out, bottom-up, right-to-left, random), a per-trial
//!   deviation probability, how many objects are attended, log-normal dwell
//!   durations around a short or long mean, revisits, where inside an object
//!   the pointer rests, mouse speed.
//! * Wording: terse or detailed adjectives (colour, size, with a personal size
//!   lexicon), how often the mention order follows the viewing order, opening
//!   phrases, connectives, counts ("two circles") versus listing, spatial words
//!   derived from true positions, personal fillers and closings, speech rate.

use crate::rand_util::{pick_index, unit_range};
use crate::scene::{article, join_list, Colour, Scene, SceneObject, SizeClass};
use deper_core::rng::seeded;
use deper_core::Subject;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// The order in which a persona looks at the objects of a scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStrategy {
    /// Rows from top to bottom, left to right within a row.
    ReadingOrder,
    /// Largest object first.
    BiggestFirst,
    /// Objects of the favourite colour(s) first, then the rest in reading order.
    ColourPreference,
    /// Closest to the image centre first.
    CentreOut,
    /// Rows from bottom to top, left to right within a row.
    BottomUp,
    /// Columns from right to left, top to bottom within a column.
    RightToLeft,
    /// No habit: a fresh random order every trial.
    Random,
}

impl OrderStrategy {
    pub const ALL: [OrderStrategy; 7] = [
        OrderStrategy::ReadingOrder,
        OrderStrategy::BiggestFirst,
        OrderStrategy::ColourPreference,
        OrderStrategy::CentreOut,
        OrderStrategy::BottomUp,
        OrderStrategy::RightToLeft,
        OrderStrategy::Random,
    ];

    pub fn slug(self) -> &'static str {
        match self {
            OrderStrategy::ReadingOrder => "reading-order",
            OrderStrategy::BiggestFirst => "biggest-first",
            OrderStrategy::ColourPreference => "colour-first",
            OrderStrategy::CentreOut => "centre-out",
            OrderStrategy::BottomUp => "bottom-up",
            OrderStrategy::RightToLeft => "right-to-left",
            OrderStrategy::Random => "random-order",
        }
    }
}

/// How a persona names sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SizeLexicon {
    /// small / medium / large
    Plain,
    /// little / mid-sized / big
    Casual,
    /// tiny / medium-sized / huge
    Vivid,
}

impl SizeLexicon {
    pub fn word(self, size: SizeClass) -> &'static str {
        match (self, size) {
            (SizeLexicon::Plain, SizeClass::Small) => "small",
            (SizeLexicon::Plain, SizeClass::Medium) => "medium",
            (SizeLexicon::Plain, SizeClass::Large) => "large",
            (SizeLexicon::Casual, SizeClass::Small) => "little",
            (SizeLexicon::Casual, SizeClass::Medium) => "mid-sized",
            (SizeLexicon::Casual, SizeClass::Large) => "big",
            (SizeLexicon::Vivid, SizeClass::Small) => "tiny",
            (SizeLexicon::Vivid, SizeClass::Medium) => "medium-sized",
            (SizeLexicon::Vivid, SizeClass::Large) => "huge",
        }
    }
}

/// One description per sentence, or one sentence per mentioned object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SentenceStyle {
    Single,
    Multi,
}

/// Where and how long a persona looks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewingPolicy {
    pub order: OrderStrategy,
    /// Preferred colours, most preferred first (used by `colour_preference`).
    pub favourite_colours: Vec<Colour>,
    /// Probability that a trial deviates: two neighbouring steps swapped or a random order.
    pub deviation_prob: f64,
    /// Fraction of the objects attended (1 = all; the first ones in viewing order).
    pub attend_fraction: f64,
    /// Median dwell duration in seconds.
    pub dwell_median_s: f64,
    /// Log-space spread of dwell durations.
    pub dwell_sigma: f64,
    /// Probability, after each step from the second on, of going back to an earlier object.
    pub revisit_prob: f64,
    /// 0 = rests at the object's centre, 1 = anywhere in its middle and wanders.
    pub dwell_spread: f64,
    /// Multiplier of the hand tremor during a dwell.
    pub jitter: f64,
    /// Mean pointer speed between dwells, image units per second.
    pub mouse_speed: f64,
}

/// How a persona talks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WordingStyle {
    pub terse: bool,
    /// Probability of naming an object's colour.
    pub colour_prob: f64,
    /// Probability of naming an object's size.
    pub size_prob: f64,
    pub size_lexicon: SizeLexicon,
    /// Probability that the mention order of a trial is the viewing order (else shuffled).
    pub follow_view_prob: f64,
    /// Preferred opening phrases.
    pub openings: Vec<String>,
    /// Probability of using a preferred opening (else any opening).
    pub opening_prob: f64,
    pub connective: String,
    /// Probability of using the connective between two mentions.
    pub connective_prob: f64,
    pub sentences: SentenceStyle,
    /// Probability of grouping objects of one kind into a count ("two circles").
    pub counts_prob: f64,
    /// Probability of adding a spatial phrase ("at the top left").
    pub spatial_prob: f64,
    pub fillers: Vec<String>,
    /// Probability of a filler before a mention.
    pub filler_prob: f64,
    pub closing: Option<String>,
    pub closing_prob: f64,
    /// Words per second.
    pub speech_rate: f64,
}

/// A simulated subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Persona {
    /// `s01`, `s02`, …
    pub id: String,
    /// e.g. "p01 terse reading-order".
    pub name: String,
    pub viewing: ViewingPolicy,
    pub wording: WordingStyle,
    /// The policy in words.
    pub notes: String,
}

/// One step of a planned viewing: an object, and whether it is a silent revisit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visit {
    pub object: usize,
    pub revisit: bool,
}

pub const OPENINGS: [&str; 8] = [
    "I see",
    "There is",
    "This picture shows",
    "In this image, there is",
    "I can see",
    "Here we have",
    "The image shows",
    "We can see",
];
pub const CONNECTIVES: [&str; 7] = ["and", "then", "next to it", "also", "and then", "plus", "besides that"];
pub const FILLERS: [&str; 7] = ["um,", "uh,", "I think", "maybe", "basically", "kind of", "if I'm not wrong,"];
pub const CLOSINGS: [&str; 4] = ["That's all.", "That's it.", "Nothing else.", "That's everything I see."];
const NUMBERS: [&str; 8] = ["zero", "one", "two", "three", "four", "five", "six", "seven"];

/// Id of the `index`-th subject.
pub fn subject_id(index: usize) -> String {
    format!("s{:02}", index + 1)
}

/// The spatial phrase for a normalised position ("at the top left", "in the middle", …).
pub fn spatial_phrase(x: f64, y: f64) -> &'static str {
    let h = if x < 0.36 {
        0
    } else if x > 0.64 {
        2
    } else {
        1
    };
    let v = if y < 0.36 {
        0
    } else if y > 0.64 {
        2
    } else {
        1
    };
    match (v, h) {
        (0, 0) => "at the top left",
        (0, 1) => "at the top",
        (0, _) => "at the top right",
        (1, 0) => "on the left",
        (1, 1) => "in the middle",
        (1, _) => "on the right",
        (_, 0) => "at the bottom left",
        (_, 1) => "at the bottom",
        _ => "at the bottom right",
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn pick<'a>(rng: &mut impl Rng, items: &[&'a str]) -> &'a str {
    items[pick_index(rng, items.len())]
}

/// Order strategy of subject `index`: strategies are dealt from shuffled decks,
/// so every strategy appears once per seven subjects and the rest repeat.
fn dealt_strategy(seed: u64, index: usize) -> OrderStrategy {
    let mut deck = OrderStrategy::ALL;
    let round = index / deck.len();
    deck.shuffle(&mut seeded(seed, &format!("persona/deck/{round}")));
    deck[index % deck.len()]
}

impl Persona {
    /// Draws subject `index` (0-based) from its own random stream: personas do
    /// not depend on the number of images or of other subjects.
    pub fn draw(seed: u64, index: usize) -> Persona {
        let id = subject_id(index);
        let mut rng = seeded(seed, &format!("persona/{id}"));
        let r = &mut rng;

        let order = dealt_strategy(seed, index);
        let mut colours = Colour::ALL.to_vec();
        colours.shuffle(r);
        let n_fav = if r.gen_bool(0.5) { 1 } else { 2 };
        let favourite_colours =
            if order == OrderStrategy::ColourPreference { colours[..n_fav].to_vec() } else { Vec::new() };
        let short = r.gen_bool(0.5);
        let viewing = ViewingPolicy {
            order,
            favourite_colours,
            deviation_prob: unit_range(r, 0.12, 0.3),
            attend_fraction: if r.gen_bool(0.65) { 1.0 } else { unit_range(r, 0.5, 0.8) },
            dwell_median_s: if short { unit_range(r, 0.3, 0.6) } else { unit_range(r, 1.0, 2.0) },
            dwell_sigma: unit_range(r, 0.2, 0.4),
            revisit_prob: if r.gen_bool(0.5) { unit_range(r, 0.0, 0.05) } else { unit_range(r, 0.1, 0.3) },
            dwell_spread: if r.gen_bool(0.5) { unit_range(r, 0.0, 0.2) } else { unit_range(r, 0.4, 0.9) },
            jitter: unit_range(r, 0.5, 1.2),
            mouse_speed: unit_range(r, 1.5, 4.0),
        };

        let terse = r.gen_bool(0.5);
        let (colour_prob, size_prob) = if terse {
            (unit_range(r, 0.5, 0.85), unit_range(r, 0.0, 0.15))
        } else {
            (unit_range(r, 0.9, 1.0), unit_range(r, 0.6, 0.95))
        };
        let size_lexicon = [SizeLexicon::Plain, SizeLexicon::Casual, SizeLexicon::Vivid][pick_index(r, 3)];
        let follow_view_prob = if r.gen_bool(0.75) { unit_range(r, 0.85, 1.0) } else { unit_range(r, 0.1, 0.4) };
        let mut openings: Vec<&str> = OPENINGS.to_vec();
        openings.shuffle(r);
        let n_open = if r.gen_bool(0.5) { 1 } else { 2 };
        let openings: Vec<String> = openings[..n_open].iter().map(|s| s.to_string()).collect();
        let opening_prob = unit_range(r, 0.45, 0.8);
        let connective = pick(r, &CONNECTIVES).to_string();
        let connective_prob = unit_range(r, 0.3, 0.8);
        let sentences = if r.gen_bool(0.3) { SentenceStyle::Multi } else { SentenceStyle::Single };
        let counts_prob = if r.gen_bool(0.4) { unit_range(r, 0.6, 0.9) } else { unit_range(r, 0.0, 0.1) };
        let spatial_prob = if r.gen_bool(0.5) { unit_range(r, 0.3, 0.8) } else { unit_range(r, 0.0, 0.1) };
        let mut fillers: Vec<&str> = FILLERS.to_vec();
        fillers.shuffle(r);
        let n_fill = pick_index(r, 3);
        let fillers: Vec<String> = fillers[..n_fill].iter().map(|s| s.to_string()).collect();
        let filler_prob = if fillers.is_empty() { 0.0 } else { unit_range(r, 0.1, 0.35) };
        let closing = if r.gen_bool(0.4) { Some(pick(r, &CLOSINGS).to_string()) } else { None };
        let closing_prob = if closing.is_some() { unit_range(r, 0.4, 0.8) } else { 0.0 };
        let wording = WordingStyle {
            terse,
            colour_prob,
            size_prob,
            size_lexicon,
            follow_view_prob,
            openings,
            opening_prob,
            connective,
            connective_prob,
            sentences,
            counts_prob,
            spatial_prob,
            fillers,
            filler_prob,
            closing,
            closing_prob,
            speech_rate: unit_range(r, 2.2, 3.5),
        };
        let name = format!("p{:02} {} {}", index + 1, if terse { "terse" } else { "detailed" }, order.slug());
        let mut p = Persona { id, name, viewing, wording, notes: String::new() };
        p.notes = p.describe();
        p
    }

    /// The subject record of the dataset.
    pub fn subject(&self) -> Subject {
        Subject { id: self.id.clone(), name: Some(self.name.clone()), notes: Some(self.notes.clone()) }
    }

    /// The drawn policy in words.
    pub fn describe(&self) -> String {
        let v = &self.viewing;
        let w = &self.wording;
        let pct = |p: f64| format!("{:.0}%", p * 100.0);
        let order = match v.order {
            OrderStrategy::ReadingOrder => "looks in reading order (rows top to bottom, left to right)".to_string(),
            OrderStrategy::BiggestFirst => "looks at the biggest objects first".to_string(),
            OrderStrategy::ColourPreference => {
                let fav: Vec<&str> = v.favourite_colours.iter().map(|c| c.as_str()).collect();
                format!("looks at {} objects first, then the rest in reading order", fav.join(" and "))
            }
            OrderStrategy::CentreOut => "looks from the centre outwards".to_string(),
            OrderStrategy::BottomUp => "looks bottom-up (rows bottom to top, left to right)".to_string(),
            OrderStrategy::RightToLeft => "looks right to left (columns, top to bottom)".to_string(),
            OrderStrategy::Random => "looks in no fixed order".to_string(),
        };
        let attend = if v.attend_fraction >= 1.0 {
            "attends all objects".to_string()
        } else {
            format!("attends about {} of the objects", pct(v.attend_fraction))
        };
        let dwell = format!(
            "{} dwells (median {:.2} s, log-sd {:.2})",
            if v.dwell_median_s < 0.8 { "short" } else { "long" },
            v.dwell_median_s,
            v.dwell_sigma
        );
        let rest = format!(
            "revisits {} per step; rests {} (spread {:.2}); mouse {:.1} units/s",
            pct(v.revisit_prob),
            if v.dwell_spread < 0.3 { "at object centres" } else { "anywhere on objects" },
            v.dwell_spread,
            v.mouse_speed
        );
        let words = format!(
            "Wording: {} (colour {}, size {} as {}/{}/{}); mentions in viewing order {} of trials; opens with {}; connective \"{}\" {}; {} sentences; counts {}; spatial words {}; fillers {}; closing {}; {:.1} words/s.",
            if w.terse { "terse" } else { "detailed" },
            pct(w.colour_prob),
            pct(w.size_prob),
            w.size_lexicon.word(SizeClass::Small),
            w.size_lexicon.word(SizeClass::Medium),
            w.size_lexicon.word(SizeClass::Large),
            pct(w.follow_view_prob),
            w.openings.iter().map(|o| format!("\"{o}\"")).collect::<Vec<_>>().join(" or "),
            w.connective,
            pct(w.connective_prob),
            match w.sentences {
                SentenceStyle::Single => "single",
                SentenceStyle::Multi => "one per object",
            },
            pct(w.counts_prob),
            pct(w.spatial_prob),
            if w.fillers.is_empty() {
                "none".to_string()
            } else {
                format!("{} ({})", w.fillers.iter().map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join(", "), pct(w.filler_prob))
            },
            match &w.closing {
                Some(c) => format!("\"{c}\" ({})", pct(w.closing_prob)),
                None => "none".to_string(),
            },
            w.speech_rate
        );
        format!(
            "Viewing: {order}, deviating in {} of trials; {attend}; {dwell}; {rest}. {words}",
            pct(v.deviation_prob)
        )
    }

    /// The persona's habitual order of all objects (before deviations).
    pub fn habitual_order(&self, scene: &Scene, rng: &mut impl Rng) -> Vec<usize> {
        let objs = &scene.objects;
        match self.viewing.order {
            OrderStrategy::ReadingOrder => rows(objs, false),
            OrderStrategy::BottomUp => rows(objs, true),
            OrderStrategy::RightToLeft => columns_right_to_left(objs),
            OrderStrategy::BiggestFirst => scene.canonical_order(),
            OrderStrategy::CentreOut => {
                let mut idx: Vec<usize> = (0..objs.len()).collect();
                let d = |o: &SceneObject| (o.cx - 0.5) * (o.cx - 0.5) + (o.cy - 0.5) * (o.cy - 0.5);
                idx.sort_by(|&a, &b| d(&objs[a]).total_cmp(&d(&objs[b])));
                idx
            }
            OrderStrategy::ColourPreference => {
                let reading = rows(objs, false);
                let rank = |i: usize| {
                    self.viewing.favourite_colours.iter().position(|&c| c == objs[i].colour).unwrap_or(usize::MAX)
                };
                let mut idx = reading;
                idx.sort_by_key(|&i| rank(i)); // stable: reading order within a rank
                idx
            }
            OrderStrategy::Random => {
                let mut idx: Vec<usize> = (0..objs.len()).collect();
                idx.shuffle(rng);
                idx
            }
        }
    }

    /// Plans one trial's viewing: attended objects in viewing order, with silent revisits.
    pub fn plan_visits(&self, scene: &Scene, rng: &mut impl Rng) -> Vec<Visit> {
        let v = &self.viewing;
        let mut order = self.habitual_order(scene, rng);
        let n = order.len();
        if n >= 2 && rng.gen_bool(v.deviation_prob) {
            if rng.gen_bool(0.6) {
                let i = pick_index(rng, n - 1);
                order.swap(i, i + 1);
            } else {
                order.shuffle(rng);
            }
        }
        if v.attend_fraction < 1.0 {
            let k = (n as f64 * v.attend_fraction * unit_range(rng, 0.85, 1.15)).round() as usize;
            order.truncate(k.clamp(n.min(2), n));
        }
        let mut visits = Vec::with_capacity(order.len() + 2);
        for (k, &o) in order.iter().enumerate() {
            visits.push(Visit { object: o, revisit: false });
            if k >= 1 && rng.gen_bool(v.revisit_prob) {
                let back = order[pick_index(rng, k)];
                visits.push(Visit { object: back, revisit: true });
            }
        }
        visits
    }

    fn mention(&self, o: &SceneObject, rng: &mut impl Rng) -> String {
        let w = &self.wording;
        let mut words: Vec<&str> = Vec::new();
        if rng.gen_bool(w.size_prob) {
            words.push(w.size_lexicon.word(o.size));
        }
        if rng.gen_bool(w.colour_prob) {
            words.push(o.colour.as_str());
        }
        words.push(o.kind.as_str());
        let head = words.join(" ");
        let mut s = format!("{} {head}", article(&head));
        if rng.gen_bool(w.spatial_prob) {
            s.push(' ');
            s.push_str(spatial_phrase(o.cx, o.cy));
        }
        s
    }

    fn count_mention(&self, scene: &Scene, group: &[usize], rng: &mut impl Rng) -> String {
        let kind = scene.objects[group[0]].kind;
        let num = NUMBERS.get(group.len()).copied().unwrap_or("several");
        let mut s = format!("{num} {}", kind.plural());
        if rng.gen_bool(self.wording.colour_prob) {
            let ones: Vec<String> = group
                .iter()
                .map(|&i| {
                    let c = scene.objects[i].colour.as_str();
                    format!("{} {c} one", article(c))
                })
                .collect();
            s.push_str(", ");
            s.push_str(&join_list(&ones));
        }
        s
    }

    /// Words of the description, per speaking slot: slot `k` is spoken during
    /// the `k`-th attended (non-revisit) dwell. `view` holds the attended
    /// objects in viewing order. Returns the slot texts and the objects
    /// mentioned, in mention order.
    pub fn compose(&self, scene: &Scene, view: &[usize], rng: &mut impl Rng) -> (Vec<String>, Vec<usize>) {
        let w = &self.wording;
        let mut order = view.to_vec();
        if !rng.gen_bool(w.follow_view_prob) {
            order.shuffle(rng);
        }
        // Mentions: single objects, or groups of one kind when counting.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        if rng.gen_bool(w.counts_prob) {
            for &o in &order {
                let kind = scene.objects[o].kind;
                match groups.iter_mut().find(|g| scene.objects[g[0]].kind == kind) {
                    Some(g) => g.push(o),
                    None => groups.push(vec![o]),
                }
            }
        } else {
            groups = order.iter().map(|&o| vec![o]).collect();
        }
        let mentioned: Vec<usize> = groups.iter().flatten().copied().collect();
        let mentions: Vec<String> =
            groups
                .iter()
                .map(|g| {
                    if g.len() == 1 {
                        self.mention(&scene.objects[g[0]], rng)
                    } else {
                        self.count_mention(scene, g, rng)
                    }
                })
                .collect();

        let opening = if rng.gen_bool(w.opening_prob) && !w.openings.is_empty() {
            w.openings[pick_index(rng, w.openings.len())].clone()
        } else {
            pick(rng, &OPENINGS).to_string()
        };
        let opening = if groups.first().is_some_and(|g| g.len() > 1) {
            opening.replace("there is", "there are").replace("There is", "There are")
        } else {
            opening
        };
        let filler = |rng: &mut dyn rand::RngCore| -> String {
            if !w.fillers.is_empty() && rng.gen_bool(w.filler_prob) {
                format!("{} ", w.fillers[pick_index(rng, w.fillers.len())])
            } else {
                String::new()
            }
        };
        let m = mentions.len();
        let mut slots: Vec<String> = Vec::with_capacity(m);
        for (i, mention) in mentions.iter().enumerate() {
            let f = filler(rng);
            if i == 0 {
                let text = format!("{opening} {f}{mention}");
                slots.push(match w.sentences {
                    SentenceStyle::Single => text,
                    SentenceStyle::Multi => format!("{text}."),
                });
                continue;
            }
            let use_conn = rng.gen_bool(w.connective_prob);
            match w.sentences {
                SentenceStyle::Single => {
                    let last = i + 1 == m;
                    let joiner = if use_conn {
                        if let Some(prev) = slots.last_mut() {
                            prev.push(',');
                        }
                        format!("{} ", w.connective)
                    } else if last {
                        "and ".to_string()
                    } else {
                        if let Some(prev) = slots.last_mut() {
                            prev.push(',');
                        }
                        String::new()
                    };
                    slots.push(format!("{joiner}{f}{mention}"));
                }
                SentenceStyle::Multi => {
                    let conn =
                        if use_conn { w.connective.clone() } else { pick(rng, &["and", "also", "then"]).to_string() };
                    slots.push(format!("{} {f}{mention}.", capitalise(&conn)));
                }
            }
        }
        if let Some(last) = slots.last_mut() {
            if w.sentences == SentenceStyle::Single {
                last.push('.');
            }
            if let Some(c) = &w.closing {
                if rng.gen_bool(w.closing_prob) {
                    last.push(' ');
                    last.push_str(c);
                }
            }
        }
        (slots, mentioned)
    }
}

/// Reading-order rows: objects whose centres lie within 0.15 of a row's first
/// object share the row; rows top to bottom (or bottom to top), left to right inside.
fn rows(objs: &[SceneObject], bottom_up: bool) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..objs.len()).collect();
    idx.sort_by(|&a, &b| objs[a].cy.total_cmp(&objs[b].cy));
    if bottom_up {
        idx.reverse();
    }
    let mut out = Vec::with_capacity(idx.len());
    let mut row: Vec<usize> = Vec::new();
    for i in idx {
        if let Some(&first) = row.first() {
            if (objs[i].cy - objs[first].cy).abs() >= 0.15 {
                row.sort_by(|&a, &b| objs[a].cx.total_cmp(&objs[b].cx));
                out.append(&mut row);
            }
        }
        row.push(i);
    }
    row.sort_by(|&a, &b| objs[a].cx.total_cmp(&objs[b].cx));
    out.append(&mut row);
    out
}

/// Columns from right to left, top to bottom inside a column.
fn columns_right_to_left(objs: &[SceneObject]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..objs.len()).collect();
    idx.sort_by(|&a, &b| objs[b].cx.total_cmp(&objs[a].cx));
    let mut out = Vec::with_capacity(idx.len());
    let mut col: Vec<usize> = Vec::new();
    for i in idx {
        if let Some(&first) = col.first() {
            if (objs[i].cx - objs[first].cx).abs() >= 0.15 {
                col.sort_by(|&a, &b| objs[a].cy.total_cmp(&objs[b].cy));
                out.append(&mut col);
            }
        }
        col.push(i);
    }
    col.sort_by(|&a, &b| objs[a].cy.total_cmp(&objs[b].cy));
    out.append(&mut col);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personas_are_deterministic_and_varied() {
        let a: Vec<Persona> = (0..12).map(|i| Persona::draw(0, i)).collect();
        let b: Vec<Persona> = (0..12).map(|i| Persona::draw(0, i)).collect();
        assert_eq!(a, b);
        let strategies: std::collections::HashSet<_> = a.iter().map(|p| p.viewing.order).collect();
        assert_eq!(strategies.len(), OrderStrategy::ALL.len());
        assert!(a.iter().any(|p| p.wording.terse) && a.iter().any(|p| !p.wording.terse));
        assert_ne!(Persona::draw(1, 0), a[0]);
        assert!(a[0].name.starts_with("p01 "));
        assert_eq!(a[11].id, "s12");
    }

    #[test]
    fn spatial_words() {
        assert_eq!(spatial_phrase(0.1, 0.1), "at the top left");
        assert_eq!(spatial_phrase(0.5, 0.5), "in the middle");
        assert_eq!(spatial_phrase(0.9, 0.5), "on the right");
        assert_eq!(spatial_phrase(0.5, 0.9), "at the bottom");
    }

    #[test]
    fn compose_mentions_viewed_objects_only() {
        let scene = Scene::generate(3, 1, 448);
        for i in 0..12 {
            let p = Persona::draw(3, i);
            let mut rng = seeded(9, &p.id);
            let visits = p.plan_visits(&scene, &mut rng);
            let view: Vec<usize> = visits.iter().filter(|v| !v.revisit).map(|v| v.object).collect();
            let (slots, mentioned) = p.compose(&scene, &view, &mut rng);
            assert!(!slots.is_empty() && slots.len() <= view.len());
            let mut a = mentioned.clone();
            let mut b = view.clone();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b);
        }
    }
}
