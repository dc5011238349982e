//! Progress on the terminal: draws the pipeline's [`Event`]s as bars (hidden automatically when
//! stderr is not a terminal), and prints their lines above the bar, or on stderr when the bar is
//! hidden, so logs keep per-epoch summaries.

use deper_pipeline::progress::Event;
use indicatif::{ProgressBar, ProgressStyle};
use std::time::Instant;

/// The bar template for counted work, or for bytes of an input file.
fn style(bytes: bool) -> ProgressStyle {
    let template = if bytes {
        "{msg:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}"
    };
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

/// The terminal side of a pipeline run: one bar per phase, one line per note or step.
#[derive(Debug)]
pub struct Bars {
    started: Instant,
    bar: Option<ProgressBar>,
}

impl Default for Bars {
    fn default() -> Self {
        Self { started: Instant::now(), bar: None }
    }
}

impl Bars {
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles one event.
    pub fn event(&mut self, event: Event) {
        match event {
            Event::Step { index, count, name } => {
                self.println(format!("[{index}/{count} {:>4.0} s] {name}", self.started.elapsed().as_secs_f64()))
            }
            Event::Begin { label, total, detail, .. } => {
                self.finish();
                let bar = ProgressBar::new(total as u64);
                bar.set_style(style(detail.get("bytes").is_some()));
                bar.set_message(label);
                self.bar = Some(bar);
            }
            Event::Advance { done, status, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(done as u64);
                    if let Some(status) = status {
                        bar.set_message(status);
                    }
                }
            }
            Event::Note { line, .. } => self.println(line),
            Event::End => self.finish(),
        }
    }

    /// The callback to hand to a pipeline function.
    pub fn callback(&mut self) -> impl FnMut(Event) + '_ {
        move |event| self.event(event)
    }

    fn println(&self, line: String) {
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(line),
            _ => eprintln!("{line}"),
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.finish();
    }
}
