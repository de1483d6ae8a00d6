// SPDX-License-Identifier: GPL-2.0
//! Whole persistent-store lifecycle on a simulated COW device: allocate and
//! commit like `persistent_commit_exception()`, reload with the `Loader`,
//! then merge everything back like `snapshot_merge_next_chunks()`.

use core::num::NonZeroU32;
use std::collections::{HashMap, HashSet};

use dmsnap_core::pure::alloc::{LoadProgress, Loader, MergeStep, PersistentState};
use dmsnap_core::pure::chunk::ChunkSize;
use dmsnap_core::pure::disk::{
    decode_header, write_entry, DiskException, DiskHeader, Geometry, HeaderState,
};
use dmsnap_core::pure::runs::{Removed, Run};
use proptest::prelude::*;

/// Marker written into a COW data chunk: the origin chunk's old contents.
const MARK: u64 = 1_000_000;

struct Cow {
    bytes: Vec<u8>,
    chunk_bytes: usize,
}

impl Cow {
    fn chunk(&self, c: u64) -> &[u8] {
        let s = c as usize * self.chunk_bytes;
        &self.bytes[s..s + self.chunk_bytes]
    }
    fn chunk_mut(&mut self, c: u64) -> &mut [u8] {
        let s = c as usize * self.chunk_bytes;
        &mut self.bytes[s..s + self.chunk_bytes]
    }
    fn chunks(&self) -> u64 {
        (self.bytes.len() / self.chunk_bytes) as u64
    }
}

proptest! {
    /// Handed-out chunks are exactly the non-metadata chunks from 2 upwards,
    /// each inside the COW as it was sized at that moment.
    #[test]
    fn allocator_model(shift in 0u32..3, sizes in proptest::collection::vec(0u64..400, 1..40)) {
        let cs = ChunkSize::from_shift(shift).expect("shift");
        let g = Geometry::new(cs);
        let mut st = PersistentState::new_store(g);
        let mut expect = (2u64..).filter(|&c| !g.is_metadata_chunk(c));
        let mut want = expect.next().expect("infinite");
        for cow_chunks in sizes {
            let cow_sectors = cow_chunks << shift;
            match st.prepare_exception(cow_sectors) {
                Ok(c) => {
                    prop_assert_eq!(c, want);
                    prop_assert!(!g.is_metadata_chunk(c));
                    prop_assert!((c + 1) << shift <= cow_sectors);
                    want = expect.next().expect("infinite");
                }
                Err(_) => prop_assert!((st.next_free() + 1) << shift > cow_sectors),
            }
            prop_assert!(!g.is_metadata_chunk(st.next_free()));
            let u = st.usage(cow_sectors);
            prop_assert_eq!(u.sectors_allocated, st.next_free() << shift);
            prop_assert_eq!(u.metadata_sectors, (st.current_area() + 2) << shift);
        }
    }

    #[test]
    fn lifecycle(
        shift in 0u32..2,
        cow_chunks in 3u64..260,
        writes in proptest::collection::vec(0u64..300, 0..300),
        batches in proptest::collection::vec(1usize..8, 1..300),
        limit in 1u32..20,
    ) {
        let cs = ChunkSize::from_shift(shift).expect("shift");
        let g = Geometry::new(cs);
        let cb = cs.bytes();
        let mut cow = Cow { bytes: vec![0u8; cow_chunks as usize * cb], chunk_bytes: cb };
        let cow_sectors = cow_chunks << shift;

        // ---- new store (persistent_read_metadata, new_snapshot path)
        prop_assert_eq!(decode_header(cow.chunk(0)), Ok(HeaderState::New));
        DiskHeader::new_valid(cs).encode(cow.chunk_mut(0)).expect("header");
        let mut st = PersistentState::new_store(g);
        cow.chunk_mut(1).fill(0);
        let mut area = vec![0u8; cb];

        // ---- origin writes: COW each chunk once, commit in batches
        let mut committed: Vec<(u64, u64)> = Vec::new();
        let mut seen = HashSet::new();
        let mut used_new = HashSet::new();
        let mut pending = Vec::new();
        let mut invalid = false;
        let mut full = false;
        let mut bi = 0;
        let mut it = writes.iter().copied().filter(|o| seen.insert(*o)).peekable();
        'outer: while it.peek().is_some() {
            let batch = batches[bi % batches.len()];
            bi += 1;
            for old in it.by_ref().take(batch) {
                let Ok(new) = st.prepare_exception(cow_sectors) else {
                    full = true;
                    break;
                };
                prop_assert!(!g.is_metadata_chunk(new) && new < cow_chunks);
                prop_assert!(used_new.insert(new), "chunk {} handed out twice", new);
                cow.chunk_mut(new)[..8].copy_from_slice(&(old + MARK).to_le_bytes());
                pending.push((old, new));
            }
            // persistent_commit_exception() for each, in allocation order.
            for (i, &(old, new)) in pending.iter().enumerate() {
                let slot = st.commit_slot().expect("room");
                write_entry(g, &mut area, slot.index, DiskException { old, new }).expect("entry");
                committed.push((old, new));
                let last = i + 1 == pending.len();
                if !slot.area_full && !last {
                    continue;
                }
                if slot.area_full {
                    let (_, loc) = st.next_area().expect("next area");
                    if loc >= cow.chunks() {
                        // zero_disk_area() past the end: upstream invalidates.
                        invalid = true;
                        break 'outer;
                    }
                    cow.chunk_mut(loc).fill(0);
                }
                let loc = st.current_area_location().expect("loc");
                cow.chunk_mut(loc).copy_from_slice(&area);
                if slot.area_full {
                    prop_assert!(st.advance_area());
                    area.fill(0);
                }
            }
            pending.clear();
            if full {
                break;
            }
        }
        if invalid {
            return Ok(());
        }

        // ---- reload (read_header + read_exceptions)
        let HeaderState::Existing(h) = decode_header(cow.chunk(0)).expect("header") else {
            panic!("header lost");
        };
        prop_assert!(h.valid);
        prop_assert_eq!(h.validate(512, 512), Ok(cs));
        let mut loader = Loader::with_validation(g, cow.chunks());
        let mut loaded = Vec::new();
        let mut table: Vec<Run> = Vec::new();
        let (reloaded, last_area) = loop {
            let (_, loc) = loader.next_read().expect("more");
            let buf = cow.chunk(loc).to_vec();
            let p = loader.feed::<(), _>(&buf, |o, n| {
                loaded.push((o, n));
                if !table.iter_mut().any(|r| r.try_extend(o, n).is_some()) {
                    table.push(Run::single(o, n));
                }
                Ok(())
            }).expect("valid metadata");
            if let LoadProgress::Done(s) = p {
                break (s, buf);
            }
        };
        prop_assert_eq!(&loaded, &committed);
        prop_assert_eq!(reloaded, st);
        prop_assert_eq!(&last_area, &area);

        // ---- merge everything back
        let mut origin: HashMap<u64, u64> = HashMap::new();
        let mut st = reloaded;
        let mut area = last_area;
        let lim = NonZeroU32::new(limit).expect("nonzero");
        let mut merged = 0usize;
        loop {
            let u = st.usage(cow_sectors);
            prop_assert!(u.sectors_allocated >= u.metadata_sectors);
            match st.merge_step() {
                MergeStep::Finished => break,
                MergeStep::ReadPreviousArea { location, .. } => {
                    area = cow.chunk(location).to_vec();
                    st.enter_previous_area().expect("step back");
                }
                MergeStep::Ready => {
                    let run = st.prepare_merge(&area, lim).expect("ok").expect("run");
                    prop_assert!(run.count() <= limit);
                    let plan = run.copy_plan(cs, u64::MAX).expect("plan");
                    prop_assert_eq!(plan.sectors, u64::from(run.count()) << shift);
                    for k in 0..u64::from(run.count()) {
                        let data = u64::from_le_bytes(cow.chunk(run.first_new() + k)[..8].try_into().expect("8"));
                        origin.insert(run.first_old() + k, data);
                    }
                    st.clear_merged(&mut area, run.count()).expect("clear");
                    let loc = st.current_area_location().expect("loc");
                    cow.chunk_mut(loc).copy_from_slice(&area);
                    st.commit_merge(run.count()).expect("commit");
                    // remove_single_exception_chunk(): last chunk first.
                    for k in (0..u64::from(run.count())).rev() {
                        let c = run.first_old() + k;
                        let pos = table.iter().position(|r| r.contains(c)).expect("in table");
                        if table[pos].remove_chunk(c).expect("end of run") == Removed::Emptied {
                            table.swap_remove(pos);
                        }
                    }
                    merged += run.count() as usize;
                }
            }
        }
        prop_assert_eq!(merged, committed.len());
        prop_assert!(table.is_empty());
        for &(old, _) in &committed {
            prop_assert_eq!(origin.get(&old).copied(), Some(old + MARK));
        }
        let u = st.usage(cow_sectors);
        prop_assert_eq!(u.sectors_allocated, 2 << shift);
        prop_assert_eq!(u.metadata_sectors, 2 << shift);
        prop_assert!(u.merge_finished());
        // The on-disk list is empty now: a reload finds nothing.
        let mut loader = Loader::new(g);
        let p = loader.feed::<(), _>(cow.chunk(1), |_, _| Err(()));
        prop_assert!(matches!(p, Ok(LoadProgress::Done(_))));
    }
}

#[derive(Debug, Clone)]
enum Op {
    Prepare(u64),
    Commit,
    Advance,
    Step,
    Back,
    Prepare2(u32),
    Clear(u32),
    CommitMerge(u32),
    Usage(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u64>().prop_map(Op::Prepare),
        Just(Op::Commit),
        Just(Op::Advance),
        Just(Op::Step),
        Just(Op::Back),
        (1u32..100).prop_map(Op::Prepare2),
        any::<u32>().prop_map(Op::Clear),
        prop_oneof![any::<u32>(), 0u32..40].prop_map(Op::CommitMerge),
        any::<u64>().prop_map(Op::Usage),
    ]
}

proptest! {
    /// Any sequence of calls on any (even absurd) state: no panic, and the
    /// cursors stay within their invariants.
    #[test]
    fn state_api_never_panics(
        shift in 0u32..22,
        next_free: u64,
        area in prop_oneof![any::<u64>(), 0u64..4],
        committed: u32,
        ops in proptest::collection::vec(op(), 0..60),
        buf in proptest::collection::vec(any::<u8>(), 0..1100),
    ) {
        let g = Geometry::new(ChunkSize::from_shift(shift).expect("shift"));
        let epa = g.exceptions_per_area();
        let Some(mut st) = PersistentState::from_parts(g, next_free, area, committed % (epa + 1)) else {
            return Ok(());
        };
        let mut buf = buf;
        for o in ops {
            match o {
                Op::Prepare(cow) => { let _ = st.prepare_exception(cow); }
                Op::Commit => { let _ = st.commit_slot(); }
                Op::Advance => { let _ = st.advance_area(); }
                Op::Step => { let _ = st.merge_step(); }
                Op::Back => { let _ = st.enter_previous_area(); }
                Op::Prepare2(l) => { let _ = st.prepare_merge(&buf, NonZeroU32::new(l).expect("nonzero")); }
                Op::Clear(n) => { let _ = st.clear_merged(&mut buf, n); }
                Op::CommitMerge(n) => { let _ = st.commit_merge(n); }
                Op::Usage(cow) => { let _ = st.usage(cow); }
            }
            prop_assert!(st.current_committed() <= epa);
            prop_assert!(st.current_area_location().is_some());
        }
    }
}
