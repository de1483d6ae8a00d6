// SPDX-License-Identifier: GPL-2.0
//! `dmsnap`: check, dump, restore, repair and merge device-mapper snapshot
//! COW stores offline. See Documentation/dmsnap.md.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use dmsnap::dev::{Access, BlockIo, Device};
use dmsnap::dump::{self, Dump};
use dmsnap::exit;
use dmsnap::merge::{self, MergeError, MergeOptions, ProgressPrinter};
use dmsnap::repair;
use dmsnap::report::{self, Unit};
use dmsnap::scan::{Cow, OriginInfo, ScanError};

#[derive(Parser)]
#[command(name = "dmsnap", version, about = "Offline tools for device-mapper snapshot COW stores", long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum DumpFormat {
    Xml,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ListFormat {
    /// One "START LENGTH" line per extent.
    List,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a COW store (read-only). Exit 0 clean, 1 corrupt,
    /// 2 consistent but the snapshot is invalid, 3 not a COW, 4 I/O error.
    Check {
        /// The COW device or image.
        cow: PathBuf,
        /// The origin, to check exceptions against its size and block size.
        #[arg(long)]
        origin: Option<PathBuf>,
        /// Print nothing; only the exit status tells.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print the header and the exception areas (read-only).
    Dump {
        cow: PathBuf,
        #[arg(long, value_enum, default_value = "xml")]
        format: DumpFormat,
        /// Write to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Write the header and areas of a dump onto a COW (writes OUTPUT only).
    Restore {
        /// The dump (XML or JSON), or "-" for stdin.
        #[arg(short, long)]
        input: PathBuf,
        /// The COW device or image to write; an image file is created if missing.
        #[arg(short, long)]
        output: PathBuf,
        /// Overwrite the header and areas of an existing COW store.
        #[arg(long)]
        force: bool,
    },
    /// List the origin extents that have an exception (read-only).
    Changed {
        cow: PathBuf,
        /// The origin, to clip the last extent to its size.
        #[arg(long)]
        origin: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "list")]
        format: ListFormat,
        #[arg(long, value_enum, default_value = "sectors")]
        unit: Unit,
    },
    /// What `dmsetup status` would report, fragmentation and merge work left (read-only).
    Usage {
        cow: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Salvage what is consistent into a new COW (never writes COW).
    Repair {
        cow: PathBuf,
        /// The new COW device or image (created if missing).
        #[arg(short, long)]
        output: PathBuf,
        /// The origin, to drop exceptions past its end.
        #[arg(long)]
        origin: Option<PathBuf>,
    },
    /// Merge the snapshot back into the origin without the kernel module
    /// (writes ORIGIN and COW). Resumable at any point, also by the kernel.
    Merge {
        /// The origin device or image.
        #[arg(long)]
        origin: PathBuf,
        cow: PathBuf,
        /// Largest run of chunks copied per commit.
        #[arg(long, default_value = "256")]
        max_run_chunks: NonZeroU32,
        /// No progress lines.
        #[arg(short, long)]
        quiet: bool,
    },
}

/// A failure: what to print and the exit status.
struct Failure(i32, String);

type Outcome = Result<i32, Failure>;

fn open(path: &Path, access: Access) -> Result<Device, Failure> {
    Device::open(path, access).map_err(|e| Failure(exit::IO_ERROR, e.to_string()))
}

/// Whether two opened paths are the same file or block device.
fn same_device(a: &Device, b: &Device) -> bool {
    a.identity().ok().zip(b.identity().ok()).is_some_and(|(x, y)| x == y)
}

fn origin_info(path: Option<&Path>) -> Result<Option<OriginInfo>, Failure> {
    path.map(|p| {
        let d = open(p, Access::Read)?;
        Ok(OriginInfo { sectors: d.len_bytes() >> 9, logical_block_size: d.logical_block_size() })
    })
    .transpose()
}

fn read_cow(dev: &Device, origin: Option<OriginInfo>) -> Result<Cow, Failure> {
    Cow::read(dev, origin).map_err(|e| {
        let code = match e {
            ScanError::Io(_) => exit::IO_ERROR,
            ScanError::NotCow(_) => exit::NOT_A_COW,
            ScanError::BadHeader(_) => exit::CORRUPT,
        };
        Failure(code, format!("{}: {e}", dev.path().display()))
    })
}

/// Refuse to go on with a COW whose list is corrupt or whose snapshot is invalid.
fn require_clean(cow: &Cow, path: &Path) -> Result<(), Failure> {
    if !cow.is_clean() {
        return Err(Failure(
            exit::CORRUPT,
            format!("{}: {} problem(s) in the metadata; see `dmsnap check`", path.display(), cow.problems.len()),
        ));
    }
    if !cow.header.valid {
        return Err(Failure(exit::INVALID_SNAPSHOT, format!("{}: the snapshot is invalid (overflow or I/O error while active)", path.display())));
    }
    Ok(())
}

fn check(cow_path: &Path, origin: Option<&Path>, quiet: bool) -> Outcome {
    let origin = origin_info(origin)?;
    let dev = open(cow_path, Access::Read)?;
    let cow = match read_cow(&dev, origin) {
        Ok(c) => c,
        Err(Failure(code, msg)) => {
            if !quiet {
                println!("{msg}");
            }
            return Ok(code);
        }
    };
    if !quiet {
        println!(
            "{}: header: version {}, chunk size {} sectors, {}",
            cow_path.display(),
            cow.header.version,
            cow.chunk.sectors(),
            if cow.header.valid { "valid" } else { "invalid" }
        );
        println!(
            "{}: {} exception(s) in {} area(s), {} exceptions per area",
            cow_path.display(),
            cow.exception_count(),
            cow.areas.len(),
            cow.geometry().exceptions_per_area()
        );
        for p in &cow.problems {
            println!("{p}");
        }
    }
    let code = if !cow.is_clean() {
        exit::CORRUPT
    } else if !cow.header.valid {
        exit::INVALID_SNAPSHOT
    } else {
        exit::OK
    };
    if !quiet {
        match code {
            exit::OK => println!("check: clean"),
            exit::INVALID_SNAPSHOT => println!("check: metadata consistent, but the snapshot was invalidated (the kernel will not use its exceptions)"),
            _ => println!("check: {} problem(s): corrupt", cow.problems.len()),
        }
    }
    Ok(code)
}

fn write_text(output: Option<&Path>, text: &str) -> Result<(), Failure> {
    match output {
        Some(p) => std::fs::write(p, text).map_err(|e| Failure(exit::IO_ERROR, format!("{}: {e}", p.display()))),
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(|e| Failure(exit::IO_ERROR, format!("stdout: {e}"))),
    }
}

fn run(cmd: Cmd) -> Outcome {
    match cmd {
        Cmd::Check { cow, origin, quiet } => check(&cow, origin.as_deref(), quiet),
        Cmd::Dump { cow, format, output } => {
            let dev = open(&cow, Access::Read)?;
            let c = read_cow(&dev, None)?;
            let d = Dump::of(&c);
            let text = match format {
                DumpFormat::Xml => d.to_xml(),
                DumpFormat::Json => d.to_json() + "\n",
            };
            write_text(output.as_deref(), &text)?;
            if !c.complete() {
                eprintln!("dump: warning: the exception list is cut off; the dump ends at the last readable area");
                return Ok(exit::CORRUPT);
            }
            Ok(exit::OK)
        }
        Cmd::Restore { input, output, force } => {
            let text = if input.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&input)
            }
            .map_err(|e| Failure(exit::IO_ERROR, format!("{}: {e}", input.display())))?;
            let d = Dump::parse(&text).map_err(|e| Failure(exit::CORRUPT, format!("{}: {e}", input.display())))?;
            // Everything is checked before the output is opened for writing.
            d.encode().map_err(|e| Failure(exit::CORRUPT, format!("{}: {e}", input.display())))?;
            let mut dev = open(&output, Access::CreateFile(d.cow_sectors << 9))?;
            dump::restore(&d, &mut dev, force).map_err(|e| Failure(exit::CORRUPT, format!("{}: {e}", output.display())))?;
            eprintln!("restore: wrote the header and {} area(s) ({} exceptions) to {}", d.areas.len(), d.exceptions, output.display());
            Ok(exit::OK)
        }
        Cmd::Changed { cow, origin, format, unit } => {
            let o = origin_info(origin.as_deref())?;
            let dev = open(&cow, Access::Read)?;
            let c = read_cow(&dev, o)?;
            require_clean(&c, &cow)?;
            let extents = report::changed(&c, unit, o.map(|o| o.sectors));
            let text = match format {
                ListFormat::List => extents.iter().map(|e| format!("{} {}\n", e.start, e.length)).collect::<String>(),
                ListFormat::Json => {
                    let total: u64 = extents.iter().map(|e| e.length).sum();
                    serde_json::json!({
                        "unit": unit,
                        "chunk_sectors": c.chunk.sectors(),
                        "total": total,
                        "extents": extents,
                    })
                    .to_string()
                        + "\n"
                }
            };
            write_text(None, &text)?;
            Ok(exit::OK)
        }
        Cmd::Usage { cow, json } => {
            let dev = open(&cow, Access::Read)?;
            let c = read_cow(&dev, None)?;
            if !c.is_clean() {
                return Err(Failure(exit::CORRUPT, format!("{}: corrupt metadata; see `dmsnap check`", cow.display())));
            }
            let u = report::usage(&c).ok_or_else(|| Failure(exit::CORRUPT, "the exception list is cut off".into()))?;
            let text = if json {
                serde_json::to_string_pretty(&u).unwrap_or_default() + "\n"
            } else {
                format!(
                    "status:             {}\n\
                     chunk size:         {} sectors\n\
                     allocated:          {} of {} sectors ({} of them metadata), LVM Data% {:.2}\n\
                     exceptions:         {} in {} area(s)\n\
                     runs:               {} ({:.2} exceptions per run)\n\
                     merge left:         {} chunks ({} sectors) in {} copies\n\
                     free:               {} chunks\n",
                    u.status,
                    u.chunk_sectors,
                    u.allocated_sectors,
                    u.total_sectors,
                    u.metadata_sectors,
                    u.lvm_data_percent,
                    u.exceptions,
                    u.areas,
                    u.runs,
                    u.exceptions_per_run,
                    u.merge_chunks_left,
                    u.merge_sectors_left,
                    u.runs,
                    u.free_chunks
                )
            };
            write_text(None, &text)?;
            Ok(if c.header.valid { exit::OK } else { exit::INVALID_SNAPSHOT })
        }
        Cmd::Repair { cow, output, origin } => {
            let o = origin_info(origin.as_deref())?;
            let old_dev = open(&cow, Access::Read)?;
            let c = read_cow(&old_dev, o)?;
            let mut new_dev = open(&output, Access::CreateFile(old_dev.len_bytes()))?;
            if same_device(&old_dev, &new_dev) {
                return Err(Failure(exit::CORRUPT, "repair never writes in place: give a different --output".into()));
            }
            let new_chunks = new_dev.len_bytes() >> (c.chunk.shift() + 9);
            let plan = repair::plan(&c, new_chunks);
            for d in &plan.decisions {
                println!("{d}");
            }
            repair::write(&c, &old_dev, &plan, &mut new_dev).map_err(|e| Failure(exit::IO_ERROR, format!("{}: {e}", output.display())))?;
            println!(
                "repair: kept {} of {} exception(s), {} decision(s); wrote {}{}",
                plan.kept.len(),
                plan.read,
                plan.decisions.len(),
                output.display(),
                if c.header.valid { "" } else { " (the snapshot stays marked invalid)" }
            );
            Ok(exit::OK)
        }
        Cmd::Merge { origin, cow, max_run_chunks, quiet } => {
            let mut cow_dev = open(&cow, Access::Write)?;
            let mut origin_dev = open(&origin, Access::Write)?;
            if same_device(&cow_dev, &origin_dev) {
                return Err(Failure(exit::CORRUPT, "the origin and the COW are the same device".into()));
            }
            let info = OriginInfo { sectors: origin_dev.len_bytes() >> 9, logical_block_size: origin_dev.logical_block_size() };
            let c = read_cow(&cow_dev, Some(info))?;
            let total = c.exception_count();
            let mut printer = ProgressPrinter::new(total);
            if !quiet {
                eprintln!("merge: {total} chunks to merge from {} into {}", cow.display(), origin.display());
            }
            let opts = MergeOptions { max_run_chunks };
            let result = merge::merge(&c, &mut cow_dev, &mut origin_dev, opts, |p| {
                if !quiet {
                    printer.report(p);
                }
            });
            match result {
                Ok(p) => {
                    if !quiet {
                        eprintln!("merge: done, {} chunks merged", p.merged);
                    }
                    Ok(exit::OK)
                }
                Err(MergeError::Refused(why)) => Err(Failure(
                    if c.is_clean() && !c.header.valid { exit::INVALID_SNAPSHOT } else { exit::CORRUPT },
                    format!("merge refused, nothing written: {why}"),
                )),
                Err(e @ MergeError::Io(_)) => Err(Failure(exit::IO_ERROR, format!("merge: {e}"))),
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            return ExitCode::from(code as u8);
        }
    };
    let code = match run(cli.cmd) {
        Ok(code) => code,
        Err(Failure(code, msg)) => {
            eprintln!("dmsnap: {msg}");
            code
        }
    };
    ExitCode::from(code as u8)
}
