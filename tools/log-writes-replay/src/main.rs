// SPDX-License-Identifier: GPL-2.0
//! log-writes-replay: replay or list a dm-log-writes log.
//!
//!   log-writes-replay --log DEV [--replay DEV] [--start-entry N]
//!                     [--limit N | --end-mark NAME] [--list] [--num-entries]
//!                     [--no-discard] [-v]
//!
//! --replay DEV     write the entries onto DEV (O_DIRECT for block devices,
//!                  then fsync)
//! --start-entry N  begin at entry N (0-based); with an incremental replay
//!                  onto a device that already holds entries 0..N-1
//! --limit N        replay (or list) N entries from the start entry, like the
//!                  reference replay-log: entries start .. start+N-1
//! --end-mark NAME  replay (or list) up to and including the mark NAME
//! --list           print one line per entry: INDEX FLAGS SECTOR NR_SECTORS
//!                  [MARK-TEXT] (SECTOR, NR_SECTORS in the log's sectorsize
//!                  units; FLAGS like FLUSH|FUA, or NONE); no replay
//! --num-entries    print the number of entries
//! --no-discard     skip DISCARD entries (default: write zeros over them)
//! Without --replay, --list or --num-entries it prints the super block.
//! A replay whose stop point does not exist (mark not found, limit past the
//! end) fails before writing anything.
use log_writes_replay::{open_dev, replay, resolve_stop, FlagsStr, LogReader, Stop};
use std::path::PathBuf;
use std::process::exit;

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("log-writes-replay: {msg}");
    }
    eprintln!(
        "usage: log-writes-replay --log DEV [--replay DEV] [--start-entry N] \
         [--limit N | --end-mark NAME] [--list] [--num-entries] [--no-discard] [-v]"
    );
    exit(2);
}

fn num(v: Option<String>, what: &str) -> u64 {
    let v = v.unwrap_or_else(|| usage(&format!("{what} needs a value")));
    v.parse().unwrap_or_else(|_| usage(&format!("{what}: bad number {v:?}")))
}

fn main() {
    let mut log: Option<PathBuf> = None;
    let mut target: Option<PathBuf> = None;
    let mut start = 0u64;
    let mut stop = Stop::End;
    let mut list = false;
    let mut count = false;
    let mut discard = true;
    let mut verbose = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--log" => log = args.next().map(PathBuf::from),
            "--replay" => target = args.next().map(PathBuf::from),
            "--start-entry" => start = num(args.next(), "--start-entry"),
            "--limit" => {
                if stop != Stop::End {
                    usage("--limit and --end-mark exclude each other");
                }
                stop = Stop::Limit(num(args.next(), "--limit"));
            }
            "--end-mark" => {
                if stop != Stop::End {
                    usage("--limit and --end-mark exclude each other");
                }
                stop = Stop::Mark(args.next().unwrap_or_else(|| usage("--end-mark needs a value")));
            }
            "--list" => list = true,
            "--num-entries" => count = true,
            "--no-discard" => discard = false,
            "-v" | "--verbose" => verbose = true,
            "-h" | "--help" => usage(""),
            _ => usage(&format!("unknown argument {a:?}")),
        }
    }
    let log_path = log.unwrap_or_else(|| usage("--log is required"));
    let fail = |what: &str, e: std::io::Error| -> ! {
        eprintln!("log-writes-replay: {what}: {e}");
        exit(1);
    };
    let logf = open_dev(&log_path, false).unwrap_or_else(|e| fail(&log_path.display().to_string(), e));
    let mut reader = LogReader::open(logf).unwrap_or_else(|e| fail("log", e));

    if count {
        println!("{}", reader.sup.nr_entries);
        return;
    }
    if list {
        let end = resolve_stop(&mut reader, start, &stop).unwrap_or_else(|e| fail("list", e));
        reader.seek_entry(start).unwrap_or_else(|e| fail("list", e));
        while reader.position() < end {
            let e = match reader.next_entry() {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(err) => fail("list", err),
            };
            match &e.mark {
                Some(m) => println!("{} {} {} {} {}", e.index, FlagsStr(e.flags), e.sector, e.nr_sectors, m),
                None => println!("{} {} {} {}", e.index, FlagsStr(e.flags), e.sector, e.nr_sectors),
            }
        }
        return;
    }
    let Some(tpath) = target else {
        println!(
            "Log version=1, sectorsize={}, entries={}",
            reader.sup.sectorsize, reader.sup.nr_entries
        );
        return;
    };
    let mut t = open_dev(&tpath, true).unwrap_or_else(|e| fail(&tpath.display().to_string(), e));
    let st = replay(&mut reader, &mut t, start, &stop, discard).unwrap_or_else(|e| fail("replay", e));
    if verbose {
        eprintln!(
            "log-writes-replay: replayed entries {}..{} ({} entries, {} bytes)",
            st.first,
            st.first + st.entries,
            st.entries,
            st.bytes
        );
    }
}
