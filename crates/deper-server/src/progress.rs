//! Progress bars for long CLI work (hidden automatically when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting bytes of an input file.
pub fn bytes_bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// A bar counting items.
pub fn count_bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Prints a line above the bar, or on stderr when the bar is hidden (not a terminal), so logs keep
/// per-epoch summaries.
pub fn line(bar: &ProgressBar, message: String) {
    if bar.is_hidden() {
        eprintln!("{message}");
    } else {
        bar.println(message);
    }
}

/// The bar of an epoch-based trainer (stage 1, stage 2, the captioner): created when the trainer
/// says how many batches remain, advanced per batch with the running loss, and given one summary
/// line per epoch.
#[derive(Debug)]
pub struct EpochBar {
    label: String,
    bar: Option<ProgressBar>,
}

impl EpochBar {
    pub fn new(label: &str) -> Self {
        Self { label: label.to_string(), bar: None }
    }

    /// `epochs` in all, starting at `first_epoch` (1-based; above 1 when resuming).
    pub fn start(&mut self, epochs: usize, first_epoch: usize, batches_per_epoch: usize) {
        let remaining = epochs.saturating_sub(first_epoch.saturating_sub(1)) * batches_per_epoch;
        self.bar = Some(count_bar(remaining as u64, &self.label));
    }

    pub fn batch(&self, epoch: usize, loss: f64) {
        if let Some(b) = &self.bar {
            b.inc(1);
            b.set_message(format!("ep {epoch} {loss:.3}"));
        }
    }

    pub fn epoch(&self, summary: String) {
        if let Some(b) = &self.bar {
            line(b, summary);
        }
    }

    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
