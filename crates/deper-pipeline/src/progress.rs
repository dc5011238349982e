//! The one progress callback every stage reports through. The command line draws bars from the
//! events and prints their lines; the study server stores each event's fraction and detail on its
//! job and streams them as server-sent events.

use serde::Serialize;
use serde_json::{json, Value};

/// What a stage reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Step `index` (1-based) of the `count` steps of a multi-step pipeline (the demo) begins.
    Step { index: usize, count: usize, name: String },
    /// A countable phase begins: `total` units (batches, images, captions) under `label`; `line`
    /// is worth a log line.
    Begin { label: String, total: usize, detail: Value, line: Option<String> },
    /// `done` units of the current phase are finished; `status` is a short running status (the
    /// epoch and its loss).
    Advance { done: usize, status: Option<String>, detail: Value },
    /// Something worth a line in a log (an epoch's summary), with its structured form.
    Note { line: String, detail: Value },
    /// The current phase is over.
    End,
}

/// The callback type every stage takes.
pub type OnEvent<'a> = &'a mut dyn FnMut(Event);

/// Turns an epoch-based trainer's reports (stage 1, stage 2, the demo captioner) into events: one
/// phase over the batches still to run, a running loss per batch, a line per epoch.
pub struct EpochEvents<'a> {
    label: String,
    on: OnEvent<'a>,
    done: usize,
}

impl std::fmt::Debug for EpochEvents<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochEvents").field("label", &self.label).field("done", &self.done).finish()
    }
}

impl<'a> EpochEvents<'a> {
    pub fn new(label: &str, on: OnEvent<'a>) -> Self {
        Self { label: label.to_string(), on, done: 0 }
    }

    /// `epochs` in all, starting at `first_epoch` (1-based; above 1 when resuming).
    pub fn start(&mut self, epochs: usize, first_epoch: usize, batches_per_epoch: usize) {
        let total = (epochs.saturating_sub(first_epoch.saturating_sub(1)) * batches_per_epoch).max(1);
        self.done = 0;
        (self.on)(Event::Begin {
            label: self.label.clone(),
            total,
            detail: json!({"event": "start", "epochs": epochs, "batches_per_epoch": batches_per_epoch}),
            line: Some(format!("{}: {epochs} epochs of {batches_per_epoch} batches", self.label)),
        });
    }

    pub fn batch(&mut self, epoch: usize, batch: usize, loss: f64) {
        self.done += 1;
        (self.on)(Event::Advance {
            done: self.done,
            status: Some(format!("ep {epoch} {loss:.3}")),
            detail: json!({"event": "batch", "epoch": epoch, "batch": batch, "loss": loss}),
        });
    }

    /// An epoch's summary line and its metrics record.
    pub fn epoch(&mut self, line: String, metrics: &impl Serialize) {
        let metrics = serde_json::to_value(metrics).unwrap_or(Value::Null);
        (self.on)(Event::Note { line, detail: json!({"event": "epoch", "metrics": metrics}) });
    }

    pub fn end(self) {
        (self.on)(Event::End);
    }
}

/// Events of a phase counted by the stage itself (`done` of `total` so far): images of a feature
/// extraction, say. The phase begins at the first report.
pub fn counted<'a>(label: &'a str, event: &'a str, on: OnEvent<'a>) -> impl FnMut(usize, usize) + 'a {
    let mut begun = false;
    move |done, total| {
        if !begun {
            begun = true;
            on(Event::Begin {
                label: label.to_string(),
                total,
                detail: json!({"event": event, "total": total}),
                line: None,
            });
        }
        on(Event::Advance { done, status: None, detail: json!({"event": event, "done": done, "total": total}) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_trainer_reports_the_batches_left_and_counts_them() {
        let mut events = Vec::new();
        let mut on = |e: Event| events.push(e);
        let mut trainer = EpochEvents::new("stage 1", &mut on);
        // Resuming at epoch 3 of 4: two epochs of five batches are left.
        trainer.start(4, 3, 5);
        trainer.batch(3, 1, 0.5);
        trainer.batch(3, 2, 0.25);
        trainer.epoch("epoch 3".into(), &json!({"epoch": 3}));
        trainer.end();
        assert!(
            matches!(&events[0], Event::Begin { total: 10, line: Some(l), .. } if l == "stage 1: 4 epochs of 5 batches")
        );
        assert!(
            matches!(&events[2], Event::Advance { done: 2, status: Some(s), detail } if s == "ep 3 0.250" && detail["batch"] == 2)
        );
        assert!(matches!(&events[3], Event::Note { detail, .. } if detail["metrics"]["epoch"] == 3));
        assert_eq!(events[4], Event::End);
    }

    #[test]
    fn a_counted_phase_begins_once() {
        let mut events = Vec::new();
        let mut on = |e: Event| events.push(e);
        let mut report = counted("features", "features", &mut on);
        report(1, 3);
        report(2, 3);
        drop(report);
        assert!(matches!(&events[0], Event::Begin { total: 3, .. }));
        assert!(matches!(&events[2], Event::Advance { done: 2, .. }));
        assert_eq!(events.len(), 3);
    }
}
