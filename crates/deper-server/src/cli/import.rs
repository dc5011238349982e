//! `deper import ln|authors-json|gaze`: stream another format into a deper dataset.

use super::{print_json, Bars};
use clap::{Args, Subcommand, ValueEnum};
use deper_core::import;
use deper_core::trajectory::{DwellParams, FixationMethod, GazeParams};
use deper_core::Split;
use deper_pipeline::import::{ImportTarget, Importer};
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Localized Narratives JSONL (COCO-LN, Flickr30k-LN, …); subject = annotator_id.
    #[command(
        after_help = "Example:\n  deper import ln --jsonl coco_train_localized_narratives.jsonl --images coco/train2017 --out coco-ln --skip-bad"
    )]
    Ln(LnArgs),
    /// The DEPER authors' JSON records ({name, caption, subject, subject_name, X, Y, T, bboxes, split}).
    AuthorsJson(AuthorsArgs),
    /// Raw eye-tracker samples (CSV or JSON Lines) plus captions.
    Gaze(GazeArgs),
}

#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Output dataset folder (must not hold a dataset yet, unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Folder holding the images; files are matched to image ids by the usual naming schemes.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Skip malformed records (counted by reason in the report) instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// Dataset name written to the manifest (default: the input file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Replace an existing dataset in --out.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct LnArgs {
    /// The narratives file, one JSON record per line.
    #[arg(long)]
    pub jsonl: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Split of every triplet (default: guessed from the file name, else train).
    #[arg(long, value_parser = parse_split)]
    pub split: Option<Split>,
    /// Dwell rule: largest pointer speed inside a dwell, image widths per second.
    #[arg(long, default_value_t = DwellParams::default().max_speed)]
    pub max_speed: f64,
    /// Dwell rule: largest bounding-box width + height of a dwell.
    #[arg(long, default_value_t = DwellParams::default().max_dispersion)]
    pub max_dispersion: f64,
    /// Dwell rule: shortest dwell kept, seconds.
    #[arg(long, default_value_t = DwellParams::default().min_duration)]
    pub min_dwell: f64,
}

#[derive(Debug, Args)]
pub struct AuthorsArgs {
    /// The JSON file: one array of records.
    #[arg(long)]
    pub json: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TimeUnit {
    S,
    Ms,
}

#[derive(Debug, Args)]
pub struct GazeArgs {
    /// Samples as CSV (header: subject,image,timestamp,x,y[,validity][,eye]) or JSON Lines with those keys.
    #[arg(long)]
    pub samples: PathBuf,
    /// Captions as JSON Lines: {"subject", "image", "caption"}.
    #[arg(long)]
    pub captions: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Unit of the timestamp column.
    #[arg(long, value_enum, default_value_t = TimeUnit::Ms)]
    pub time_unit: TimeUnit,
    /// Coordinates are pixels of an image of this size (WIDTHxHEIGHT); default: normalised to [0, 1].
    #[arg(long, value_parser = parse_size)]
    pub pixels: Option<(u32, u32)>,
    /// Fixation detection: I-VT (velocity) or I-DT (dispersion).
    #[arg(long, value_enum, default_value_t = Method::Ivt)]
    pub method: Method,
    /// Visual angle spanned by the image width, degrees.
    #[arg(long, default_value_t = GazeParams::default().image_width_deg)]
    pub image_width_deg: f64,
    /// Visual angle spanned by the image height, degrees.
    #[arg(long, default_value_t = GazeParams::default().image_height_deg)]
    pub image_height_deg: f64,
    /// Split of every triplet (train, val or test).
    #[arg(long, value_parser = parse_split, default_value = "train")]
    pub split: Split,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Method {
    Ivt,
    Idt,
}

fn parse_split(s: &str) -> Result<Split, String> {
    Split::parse(s).ok_or_else(|| format!("unknown split `{s}` (train, val or test)"))
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| format!("expected WIDTHxHEIGHT, got `{s}`"))?;
    let w: u32 = w.trim().parse().map_err(|_| format!("bad width in `{s}`"))?;
    let h: u32 = h.trim().parse().map_err(|_| format!("bad height in `{s}`"))?;
    if w == 0 || h == 0 {
        return Err(format!("image size `{s}` must be positive"));
    }
    Ok((w, h))
}

/// Guesses the split of an LN file from its name (`coco_val_localized_narratives.jsonl` → val).
fn split_from_file_name(path: &Path) -> Split {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    for part in name.split(|c: char| !c.is_ascii_alphanumeric()) {
        if let Some(split) = Split::parse(part) {
            return split;
        }
    }
    Split::Train
}

pub fn run(cmd: ImportCommand) -> anyhow::Result<()> {
    match cmd {
        ImportCommand::Ln(args) => {
            let opts = import::ln::LnOptions {
                skip_bad: args.common.skip_bad,
                split: args.split.unwrap_or_else(|| split_from_file_name(&args.jsonl)),
                dwell: DwellParams {
                    max_speed: args.max_speed,
                    max_dispersion: args.max_dispersion,
                    min_duration: args.min_dwell,
                    ..DwellParams::default()
                },
            };
            let importer: Importer<'_> =
                Box::new(|sink, progress| import::ln::import_ln(&args.jsonl, &opts, sink, progress));
            import_into(&args.common, &args.jsonl, "localized_narratives", importer)
        }
        ImportCommand::AuthorsJson(args) => {
            let opts = import::authors::AuthorsOptions { skip_bad: args.common.skip_bad, ..Default::default() };
            let importer: Importer<'_> =
                Box::new(|sink, progress| import::authors::import_authors_json(&args.json, &opts, sink, progress));
            import_into(&args.common, &args.json, "authors_json", importer)
        }
        ImportCommand::Gaze(args) => {
            let params = GazeParams {
                method: match args.method {
                    Method::Ivt => FixationMethod::Ivt,
                    Method::Idt => FixationMethod::Idt,
                },
                image_width_deg: args.image_width_deg,
                image_height_deg: args.image_height_deg,
                ..GazeParams::default()
            };
            let opts = import::gaze::GazeImportOptions {
                skip_bad: args.common.skip_bad,
                split: args.split,
                time_unit: match args.time_unit {
                    TimeUnit::S => import::gaze::TimeUnit::Seconds,
                    TimeUnit::Ms => import::gaze::TimeUnit::Milliseconds,
                },
                coords: match args.pixels {
                    Some((width, height)) => {
                        import::gaze::CoordSpace::Pixels { width: f64::from(width), height: f64::from(height) }
                    }
                    None => import::gaze::CoordSpace::Normalized,
                },
                gaze: params,
                ..Default::default()
            };
            let captions = args.captions.clone();
            let importer: Importer<'_> = Box::new(|sink, progress| {
                import::gaze::import_gaze(&args.samples, captions.as_deref(), &opts, sink, progress)
            });
            import_into(&args.common, &args.samples, "gaze", importer)
        }
    }
}

/// Runs one importer into a new dataset: progress bar, image lookup, report
/// in the manifest and on stdout. The dataset only appears when the import
/// succeeded, so a failed import never leaves half a dataset behind.
fn import_into(common: &CommonArgs, input: &Path, source: &str, importer: Importer<'_>) -> anyhow::Result<()> {
    let target = ImportTarget {
        out: common.out.clone(),
        images: common.images.clone(),
        name: common.name.clone(),
        force: common.force,
    };
    let mut bars = Bars::new();
    let outcome = deper_pipeline::import::import_into(&target, input, source, importer, &mut bars.callback())?;
    drop(bars);
    eprintln!("{}", outcome.summary(&common.out));
    print_json(&outcome.report)
}
