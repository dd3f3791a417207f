//! The journal against real files in a temporary directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use super::record::tests::sample;
use super::*;

/// Bounds every wait on the writer: a journal that hangs fails the test instead.
const LIVENESS: Duration = Duration::from_secs(30);

fn config(dir: &Path) -> JournalConfig {
    // Segments made when needed, so that where each record lands is certain; the
    // preallocated ones have tests of their own.
    JournalConfig {
        commit_interval: Duration::ZERO,
        preallocate: false,
        ..JournalConfig::new(dir)
    }
}

/// The bytes one sample record takes on disk, frame included.
fn frame_len() -> u64 {
    let mut frame = frame::start(0);
    record::encode(&sample(0), &mut frame).unwrap();
    frame.len() as u64
}

async fn durable(appended: Appended) -> Lsn {
    tokio::time::timeout(LIVENESS, appended.durable)
        .await
        .expect("the writer answers")
        .expect("the record is durable");
    appended.lsn
}

/// Appends `range` of the samples one commit at a time.
async fn append_each(journal: &Journal, range: std::ops::Range<u64>) -> Vec<Lsn> {
    let mut lsns = Vec::new();
    for n in range {
        lsns.push(durable(journal.append(&sample(n)).unwrap()).await);
    }
    lsns
}

async fn shut(journal: Journal) {
    tokio::time::timeout(LIVENESS, journal.shutdown())
        .await
        .expect("the writer stops");
}

/// Held shared by every open of a directory another journal just released, and exclusively
/// while a child process is spawned: between fork and exec the child holds a copy of every
/// open file, a journal's lock included, so an open in that window finds the lock held.
static SPAWNING: RwLock<()> = RwLock::new(());

fn reopen(config: JournalConfig) -> (Journal, Replay) {
    let _no_child = SPAWNING.read().unwrap_or_else(PoisonError::into_inner);
    Journal::open(config).unwrap()
}

/// Leaves a journal in `config.dir` of the samples `0..n`, one commit each, shut down with
/// none of them flushed.
async fn write_samples(config: JournalConfig, n: u64) {
    let (journal, _) = Journal::open(config).unwrap();
    append_each(&journal, 0..n).await;
    shut(journal).await;
}

fn replayed_samples(replay: &Replay) -> Vec<(u64, UsageRecord)> {
    let records = replay.records().unwrap();
    assert_eq!(records.len(), replay.report.records, "read as counted");
    records
        .iter()
        .map(|r| (r.lsn.0, r.record.clone()))
        .collect()
}

fn expected(ns: impl IntoIterator<Item = u64>) -> Vec<(u64, UsageRecord)> {
    ns.into_iter().map(|n| (n, sample(n))).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x20;
    fs::write(path, bytes).unwrap();
}

/// The offset of the `index`th record in a segment of sample records.
fn record_offset(index: u64) -> u64 {
    frame::HEADER_LEN as u64 + index * frame_len()
}

#[test]
fn a_journal_is_a_handle_any_thread_can_hold() {
    fn shared<T: Clone + Send + Sync + 'static>() {}
    shared::<Journal>();
}

#[tokio::test]
async fn records_replay_in_order_after_a_restart_until_they_are_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, replay) = Journal::open(config(dir.path())).unwrap();
    assert_eq!(replay.report.records, 0);
    assert_eq!(
        replay.report,
        ReplayReport {
            segments: 0,
            ..Default::default()
        }
    );
    let lsns = append_each(&journal, 0..10).await;
    assert_eq!(lsns, (0..10).map(Lsn).collect::<Vec<_>>());
    assert_eq!(journal.stats().written, 10);
    shut(journal).await;

    let (journal, replay) = reopen(config(dir.path()));
    assert_eq!(replayed_samples(&replay), expected(0..10));
    assert_eq!(replay.report.torn_tail, None);
    assert!(replay.report.damage.is_empty());
    assert_eq!(journal.stats().unflushed, 10);
    // Numbering goes on after the replayed records.
    assert_eq!(append_each(&journal, 10..11).await, [Lsn(10)]);
    shut(journal).await;

    let (_journal, replay) = reopen(config(dir.path()));
    assert_eq!(replayed_samples(&replay), expected(0..11));
}

#[tokio::test]
async fn a_truncated_last_record_is_cut_off_and_every_record_before_it_replays() {
    let dir = tempfile::tempdir().unwrap();
    write_samples(config(dir.path()), 5).await;
    let [segment] = segment_files(dir.path()).try_into().unwrap();
    let full = fs::metadata(&segment).unwrap().len();
    assert_eq!(full, record_offset(5));
    // A crash in the middle of the last write: its last 3 bytes never reached the disk.
    fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(full - 3)
        .unwrap();

    let (journal, replay) = reopen(config(dir.path()));
    assert_eq!(replayed_samples(&replay), expected(0..4));
    assert_eq!(
        replay.report.torn_tail,
        Some(Cut {
            segment: segment.clone(),
            offset: record_offset(4),
            bytes: frame_len() - 3,
        })
    );
    assert!(replay.report.damage.is_empty());
    // Cut for good: the file ends at the last whole record, and the journal writes on.
    assert_eq!(fs::metadata(&segment).unwrap().len(), record_offset(4));
    assert_eq!(append_each(&journal, 4..5).await, [Lsn(4)]);
    shut(journal).await;

    let (_journal, replay) = reopen(config(dir.path()));
    assert_eq!(replayed_samples(&replay), expected(0..5));
    assert_eq!(replay.report.torn_tail, None);
}

#[tokio::test]
async fn a_flipped_byte_in_the_last_record_is_cut_off_as_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    write_samples(config(dir.path()), 5).await;
    let [segment] = segment_files(dir.path()).try_into().unwrap();
    flip_byte(&segment, record_offset(4) + 30);

    let (_journal, replay) = reopen(config(dir.path()));
    assert_eq!(replayed_samples(&replay), expected(0..4));
    assert_eq!(
        replay.report.torn_tail,
        Some(Cut {
            segment: segment.clone(),
            offset: record_offset(4),
            bytes: frame_len(),
        })
    );
    assert!(replay.report.damage.is_empty());
}

/// Three records to a segment: each commit of one record fits, the fourth does not.
fn three_per_segment(dir: &Path) -> JournalConfig {
    JournalConfig {
        segment_bytes: record_offset(3),
        ..config(dir)
    }
}

#[tokio::test]
async fn segments_rotate_by_size_and_replay_across_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(three_per_segment(dir.path())).unwrap();
    append_each(&journal, 0..8).await;
    assert_eq!(journal.stats().segments, 3);
    shut(journal).await;
    let files = segment_files(dir.path());
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "00000000000000000000.seg",
            "00000000000000000003.seg",
            "00000000000000000006.seg"
        ]
    );
    for file in &files[..2] {
        assert_eq!(fs::metadata(file).unwrap().len(), record_offset(3));
    }

    let (_journal, replay) = reopen(three_per_segment(dir.path()));
    assert_eq!(replayed_samples(&replay), expected(0..8));
    assert_eq!(replay.report.segments, 3);
}

/// A closed segment was synced before the next was created, so a crash cannot tear it:
/// damage there is the disk's. A record whose checksum fails but whose length still leads
/// to a good record is skipped alone, and the segment is kept aside for the operator.
#[tokio::test]
async fn a_flipped_byte_in_a_middle_record_of_an_earlier_segment_loses_that_record_alone() {
    let dir = tempfile::tempdir().unwrap();
    write_samples(three_per_segment(dir.path()), 8).await;
    let first = segment_files(dir.path())[0].clone();
    flip_byte(&first, record_offset(1) + 40);

    let (journal, replay) = reopen(three_per_segment(dir.path()));
    assert_eq!(replayed_samples(&replay), expected([0, 2, 3, 4, 5, 6, 7]));
    assert_eq!(replay.report.torn_tail, None);
    assert_eq!(
        replay.report.damage,
        [Damage {
            segment: first.clone(),
            offset: record_offset(1),
            bytes: frame_len(),
            kind: DamageKind::BadChecksum,
        }]
    );
    assert_eq!(replay.report.damaged_bytes(), frame_len());

    // Once its readable records are flushed, the damaged segment is renamed aside, not
    // removed, and is no longer read.
    let records = replay.records().unwrap();
    let last = records.last().unwrap().lsn;
    journal.mark_replayed(Lsn(last.0 + 1), records.len() as u64);
    assert_eq!(journal.stats().unflushed, 0);
    let done = journal.checkpoint().await.unwrap();
    assert_eq!(
        done,
        Checkpointed {
            segments: 3,
            bytes: 2 * record_offset(3) + record_offset(2),
            damaged: 1
        }
    );
    let mut aside = first.into_os_string();
    aside.push(".damaged");
    assert!(Path::new(&aside).exists());
    shut(journal).await;
    let (_journal, replay) = reopen(three_per_segment(dir.path()));
    assert_eq!(replay.report.records, 0);
    assert!(replay.report.damage.is_empty());
}

#[tokio::test]
async fn a_flipped_length_in_an_earlier_segment_loses_that_record_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    write_samples(three_per_segment(dir.path()), 8).await;
    let first = segment_files(dir.path())[0].clone();
    // The length's second byte: a frame of some 8 KB, longer than the segment. The reader
    // finds the next good frame and reads on: only the damaged record is lost. Its successor
    // is numbered within the segment's range (here, its own LSN).
    flip_byte(&first, record_offset(1) + 1);

    let (_journal, replay) = reopen(three_per_segment(dir.path()));
    assert_eq!(replayed_samples(&replay), expected([0, 2, 3, 4, 5, 6, 7]));
    assert_eq!(
        replay.report.damage,
        [Damage {
            segment: first,
            offset: record_offset(1),
            bytes: frame_len(),
            kind: DamageKind::UnreadableRest,
        }]
    );
    assert_eq!(replay.report.torn_tail, None);
}

#[tokio::test]
async fn a_checkpoint_removes_only_segments_whose_records_are_all_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(three_per_segment(dir.path())).unwrap();
    let lsns = append_each(&journal, 0..8).await;
    // Flushed out of order, with LSN 2 still waiting: the first segment (0-2) stays.
    journal.mark_flushed([Lsn(0), Lsn(1), Lsn(3), Lsn(4), Lsn(5)]);
    assert_eq!(journal.checkpoint().await.unwrap(), Checkpointed::default());
    assert_eq!(segment_files(dir.path()).len(), 3);

    journal.mark_flushed([Lsn(2)]);
    let done = journal.checkpoint().await.unwrap();
    assert_eq!(done.segments, 2);
    assert_eq!(done.bytes, 2 * record_offset(3));
    assert_eq!(journal.stats().segments, 1);
    assert_eq!(journal.stats().bytes, record_offset(2));
    // The segment being written is kept, though all its records are flushed.
    journal.mark_flushed(lsns);
    assert_eq!(journal.checkpoint().await.unwrap(), Checkpointed::default());
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(journal.stats().unflushed, 0);
    shut(journal).await;

    // Shut down with every record flushed: nothing is left to replay, and numbering goes on.
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    assert_eq!(
        fs::metadata(&files[0]).unwrap().len(),
        frame::HEADER_LEN as u64
    );
    let (journal, replay) = reopen(three_per_segment(dir.path()));
    assert_eq!(replay.report.records, 0);
    assert_eq!(append_each(&journal, 8..9).await, [Lsn(8)]);
}

#[tokio::test]
async fn past_its_byte_limit_the_journal_refuses_admission_until_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let limited = JournalConfig {
        max_bytes: record_offset(6),
        ..three_per_segment(dir.path())
    };
    let (journal, _) = Journal::open(limited).unwrap();
    let lsns = append_each(&journal, 0..7).await;
    assert_eq!(
        journal.health(),
        JournalHealth::Full {
            bytes: 2 * record_offset(3) + record_offset(1),
            limit: record_offset(6),
        }
    );
    assert!(!journal.health().admits());
    // Appends are still taken: the requests already running must be journaled.
    append_each(&journal, 7..8).await;

    journal.mark_flushed(lsns);
    journal.checkpoint().await.unwrap();
    assert_eq!(journal.health(), JournalHealth::Healthy);
    assert!(journal.health().admits());
}

#[tokio::test]
async fn appends_made_together_share_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let gathering = JournalConfig {
        commit_interval: Duration::from_millis(50),
        ..config(dir.path())
    };
    let (journal, _) = Journal::open(gathering).unwrap();
    let syncs_before = journal.stats().syncs;
    // 400 appends from 8 threads at once.
    let appended: Vec<Appended> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let journal = journal.clone();
                scope.spawn(move || {
                    (0..50u64)
                        .map(|i| journal.append(&sample(t * 50 + i)).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|thread| thread.join().unwrap())
            .collect()
    });
    let mut lsns = Vec::new();
    for appended in appended {
        lsns.push(durable(appended).await);
    }
    lsns.sort();
    assert_eq!(
        lsns,
        (0..400).map(Lsn).collect::<Vec<_>>(),
        "each a number of its own"
    );
    let stats = journal.stats();
    assert_eq!(stats.written, 400);
    let syncs = stats.syncs - syncs_before;
    assert_eq!(syncs, stats.commits);
    assert!(syncs <= 20, "400 appends took {syncs} syncs");
    shut(journal).await;
    let (_journal, replay) = reopen(JournalConfig::new(dir.path()));
    assert_eq!(replay.records().unwrap().len(), 400);
}

#[tokio::test]
async fn a_commit_is_written_once_it_gathers_its_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let budgeted = JournalConfig {
        // Only the budget can close a commit within the test's bound.
        commit_interval: Duration::from_secs(600),
        commit_bytes: 10 * frame_len() as usize,
        ..config(dir.path())
    };
    let (journal, _) = Journal::open(budgeted).unwrap();
    let syncs_before = journal.stats().syncs;
    let appended: Vec<Appended> = (0..100)
        .map(|n| journal.append(&sample(n)).unwrap())
        .collect();
    for appended in appended {
        durable(appended).await;
    }
    assert_eq!(journal.stats().syncs - syncs_before, 10);
    assert_eq!(journal.stats().commits, 10);
}

#[tokio::test]
async fn a_second_open_of_a_locked_directory_fails_and_says_who_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(config(dir.path())).unwrap();
    let Err(error) = Journal::open(config(dir.path())) else {
        panic!("a second open of a locked directory succeeded");
    };
    assert!(
        matches!(&error, JournalError::Locked { dir: locked, holder: Some(pid) }
            if locked == dir.path() && *pid == std::process::id()),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("is locked by process") && message.contains("never share"),
        "{message}"
    );
    // The writer releases the lock when it stops.
    shut(journal).await;
    let (_journal, _) = reopen(config(dir.path()));
}

#[tokio::test]
async fn an_append_after_shutdown_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(config(dir.path())).unwrap();
    shut(journal.clone()).await;
    assert!(matches!(
        journal.append(&sample(1)),
        Err(JournalError::Stopped)
    ));
}

#[tokio::test]
async fn a_segment_whose_header_never_reached_the_disk_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    write_samples(three_per_segment(dir.path()), 3).await;
    // A crash right after the next segment was created.
    let torn = segment::segment_path(dir.path(), Lsn(3));
    fs::write(&torn, &frame::header(3)[..7]).unwrap();

    let (journal, replay) = reopen(three_per_segment(dir.path()));
    assert_eq!(replayed_samples(&replay), expected(0..3));
    assert_eq!(
        replay.report.torn_tail,
        Some(Cut {
            segment: torn.clone(),
            offset: 0,
            bytes: 7
        })
    );
    assert_eq!(append_each(&journal, 3..4).await, [Lsn(3)]);
    assert_eq!(
        fs::metadata(&torn).unwrap().len(),
        frame::HEADER_LEN as u64 + frame_len()
    );
}

#[test]
fn a_record_of_a_newer_format_stops_the_start_instead_of_being_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = frame::header(0).to_vec();
    let mut frame = frame::start(0);
    record::encode(&sample(0), &mut frame).unwrap();
    frame[frame::FRAME_HEADER_LEN] = record::VERSION + 1;
    frame::seal(&mut frame).unwrap();
    bytes.extend_from_slice(&frame);
    let segment = segment::segment_path(dir.path(), Lsn(0));
    fs::write(&segment, bytes).unwrap();

    let Err(error) = Journal::open(config(dir.path())) else {
        panic!("a journal of a newer format opened");
    };
    assert!(
        matches!(
            &error,
            JournalError::UnsupportedVersion {
                version: 2,
                offset: 20,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        fs::metadata(&segment).unwrap().len(),
        record_offset(1),
        "left as it was"
    );
}

/// Set by [`a_file_size_limit_fails_the_journal_closed_and_what_was_durable_replays`] for
/// the child process it runs.
const CHILD_DIR: &str = "TOLLGATE_JOURNAL_TEST_FSIZE_DIR";
/// The child's file-size limit: about ten records after the header, ending inside one.
const FSIZE_LIMIT: u64 = 2_000;

/// A real write error, as a full disk gives one: the kernel refuses to grow a file past the
/// process's `RLIMIT_FSIZE` (EFBIG; running as root, permissions would refuse nothing). The
/// limit is set in a child process, which runs only
/// [`journal_under_a_file_size_limit`], so that no other test's files are limited.
#[test]
fn a_file_size_limit_fails_the_journal_closed_and_what_was_durable_replays() {
    let dir = tempfile::tempdir().unwrap();
    let spawning = SPAWNING.write().unwrap_or_else(PoisonError::into_inner);
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "journal::tests::journal_under_a_file_size_limit",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .output()
        .unwrap();
    drop(spawning);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let durable: u64 = stdout
        .lines()
        .find_map(|line| line.split("durable=").nth(1))
        .expect("the child reports its durable records")
        .parse()
        .unwrap();
    let fit = (FSIZE_LIMIT - frame::HEADER_LEN as u64) / frame_len();
    assert_eq!(durable, fit, "every record that fits under the limit");

    // Without the limit: every durable record replays, and the partial one is cut off. The
    // cut is reported up to the partial frame's last byte that is not zero (zeros after the
    // records are a preallocated segment's).
    let [segment] = segment_files(dir.path()).try_into().unwrap();
    let zeros = zeros_at_end(&segment);
    let (_journal, replay) = reopen(config(dir.path()));
    assert_eq!(replayed_samples(&replay), expected(0..durable));
    let tail = replay
        .report
        .torn_tail
        .expect("the partial write is cut off");
    assert_eq!(tail.offset, record_offset(durable));
    assert_eq!(tail.bytes, FSIZE_LIMIT - record_offset(durable) - zeros);
    assert!(replay.report.damage.is_empty());
}

#[test]
#[ignore = "run in a child process by a_file_size_limit_fails_the_journal_closed_and_what_was_durable_replays"]
fn journal_under_a_file_size_limit() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    // SAFETY: plain libc calls with valid arguments, made before any other thread of this
    // process writes a file. With SIGXFSZ ignored, a write past the limit fails with EFBIG
    // instead of killing the process.
    unsafe {
        assert_ne!(libc::signal(libc::SIGXFSZ, libc::SIG_IGN), libc::SIG_ERR);
        let limit = libc::rlimit {
            rlim_cur: FSIZE_LIMIT,
            rlim_max: FSIZE_LIMIT,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (journal, _) = Journal::open(config(Path::new(&dir))).unwrap();
        let mut durable = 0;
        let failure = loop {
            let appended = journal.append(&sample(durable)).unwrap();
            match tokio::time::timeout(LIVENESS, appended.durable).await.unwrap() {
                Ok(()) => durable += 1,
                Err(error) => break error,
            }
            assert!(durable < 1_000, "the limit never refused a write");
        };
        assert!(
            matches!(&failure, JournalError::Failed { reason } if reason.contains("File too large")),
            "{failure:?}"
        );
        // Failed for good, and says so: the next append is refused at once.
        assert!(matches!(journal.health(), JournalHealth::Failed { .. }));
        assert!(!journal.health().admits());
        assert!(matches!(
            journal.append(&sample(durable)),
            Err(JournalError::Failed { .. })
        ));
        assert_eq!(journal.stats().written, durable);
        println!("durable={durable}");
    });
}

#[tokio::test]
async fn a_last_segment_whose_whole_header_is_damaged_is_kept_and_its_lsns_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    write_samples(config(dir.path()), 3).await;
    let [segment] = segment_files(dir.path()).try_into().unwrap();
    let before = fs::read(&segment).unwrap();
    // A flipped bit in the base LSN: the header is whole, and synced records follow it.
    flip_byte(&segment, 10);

    let (journal, replay) = reopen(config(dir.path()));
    assert_eq!(replay.report.torn_tail, None);
    let kinds: Vec<DamageKind> = replay.report.damage.iter().map(|d| d.kind).collect();
    assert_eq!(kinds, [DamageKind::BadHeader]);
    assert_eq!(replay.report.damaged_bytes(), before.len() as u64);
    assert_eq!(
        fs::read(&segment).unwrap().len(),
        before.len(),
        "kept whole"
    );
    let [lsn] = append_each(&journal, 3..4).await.try_into().unwrap();
    assert!(lsn >= Lsn(3), "LSN {lsn} was the damaged segment's");
}

#[tokio::test]
async fn a_damaged_length_in_the_last_segment_replays_the_good_records_after_it() {
    let dir = tempfile::tempdir().unwrap();
    write_samples(config(dir.path()), 5).await;
    let [segment] = segment_files(dir.path()).try_into().unwrap();
    let length = fs::metadata(&segment).unwrap().len();
    // The high byte of the third record's length: it cannot be framed, but the fourth and
    // fifth records are whole and synced, so the reader finds them again. Their number in
    // the segment is unknown: they get LSNs by their offset, one per 9 bytes past the
    // damage, inside the range reserved past it.
    flip_byte(&segment, record_offset(2) + 3);

    let (journal, replay) = reopen(config(dir.path()));
    let step = frame_len().div_ceil(frame::FRAME_HEADER_LEN as u64 + 1);
    let replayed = replayed_samples(&replay);
    assert_eq!(
        replayed,
        [
            (0, sample(0)),
            (1, sample(1)),
            (2 + step, sample(3)),
            (2 + 2 * step, sample(4))
        ]
    );
    assert_eq!(replay.report.torn_tail, None, "not cut as a torn tail");
    assert_eq!(
        replay.report.damage,
        [Damage {
            segment: segment.clone(),
            offset: record_offset(2),
            bytes: frame_len(),
            kind: DamageKind::UnreadableRest,
        }]
    );
    assert_eq!(fs::metadata(&segment).unwrap().len(), length, "kept whole");
    let [lsn] = append_each(&journal, 5..6).await.try_into().unwrap();
    assert!(lsn.0 > 2 + 2 * step, "LSN {lsn} is a replayed record's");
}

#[tokio::test]
async fn a_journal_shut_down_is_not_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(config(dir.path())).unwrap();
    shut(journal.clone()).await;
    assert!(!journal.health().admits(), "{:?}", journal.health());
}

#[tokio::test]
async fn a_queue_near_its_bound_is_not_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(config(dir.path())).unwrap();
    // As a hung disk leaves it: the writer takes nothing, the appends wait.
    journal
        .inner
        .status
        .queued
        .store(MAX_QUEUED_APPENDS as u64, Ordering::Relaxed);
    assert!(!journal.health().admits(), "{:?}", journal.health());
    journal.inner.status.queued.store(0, Ordering::Relaxed);
    assert_eq!(journal.health(), JournalHealth::Healthy);
    shut(journal).await;
}

#[tokio::test]
async fn a_huge_commit_interval_does_not_stop_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(JournalConfig {
        commit_interval: Duration::MAX,
        commit_bytes: 1,
        ..config(dir.path())
    })
    .unwrap();
    assert_eq!(append_each(&journal, 0..2).await, [Lsn(0), Lsn(1)]);
    shut(journal).await;
}

#[tokio::test]
async fn every_concurrent_shutdown_waits_until_the_directory_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(three_per_segment(dir.path())).unwrap();
    let lsns = append_each(&journal, 0..4).await;
    // All flushed: the writer's stop closes its segment and removes the rest, which takes
    // a few syncs.
    journal.mark_flushed(lsns);
    let (first, second) = (journal.clone(), journal.clone());
    tokio::time::timeout(LIVENESS, async {
        tokio::select! {
            () = first.shutdown() => {}
            () = second.shutdown() => {}
        }
    })
    .await
    .expect("a shutdown returns");
    let _no_child = SPAWNING.read().unwrap_or_else(PoisonError::into_inner);
    assert!(
        segment::DirLock::acquire(dir.path()).is_ok(),
        "a shutdown returned while the writer held the directory"
    );
}

/// Segments of 64 KiB, made ahead of need.
fn preallocated(dir: &Path) -> JournalConfig {
    JournalConfig {
        segment_bytes: 64 * 1024,
        preallocate: true,
        ..config(dir)
    }
}

/// Waits until the journal has made `n` spare segments in all.
async fn spares_made(journal: &Journal, n: u64) {
    tokio::time::timeout(LIVENESS, async {
        while journal.stats().spares < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a spare segment is made");
}

/// Bytes of `path` after its last non-zero byte.
fn zeros_at_end(path: &Path) -> u64 {
    let bytes = fs::read(path).unwrap();
    bytes.iter().rev().take_while(|&&b| b == 0).count() as u64
}

/// The first segment is created when needed; the writer moves to a preallocated one at its
/// next commit once a spare is ready, and fills it from its start. Zeros after the last
/// record read as a clean end, in the last segment and in an earlier one.
#[tokio::test]
async fn records_in_a_preallocated_segment_end_at_its_zeros_and_replay_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(preallocated(dir.path())).unwrap();
    spares_made(&journal, 1).await;
    append_each(&journal, 0..5).await;
    let stats = journal.stats();
    assert_eq!(stats.segments, 2);
    // One record in the first segment, four in the spare; bytes count records, not zeros.
    assert_eq!(stats.bytes, record_offset(1) + record_offset(4));
    shut(journal).await;
    let [first, spare] = segment_files(dir.path()).try_into().unwrap();
    assert_eq!(fs::metadata(&first).unwrap().len(), record_offset(1));
    assert_eq!(
        spare.file_name().unwrap().to_str(),
        Some("00000000000000000001.seg")
    );
    assert_eq!(fs::metadata(&spare).unwrap().len(), 64 * 1024);
    assert_eq!(zeros_at_end(&spare), 64 * 1024 - record_offset(4));
    assert!(
        !dir.path().join("spare.tmp").exists(),
        "a shutdown leaves no spare"
    );

    let (journal, replay) = reopen(config(dir.path()));
    assert_eq!(replayed_samples(&replay), expected(0..5));
    assert_eq!(replay.report.torn_tail, None);
    assert!(replay.report.damage.is_empty());
    // The next records go to a new segment, begun at the start: the preallocated one is
    // an earlier one now.
    assert_eq!(
        journal.stats().bytes,
        record_offset(1) + record_offset(4) + record_offset(0)
    );
    assert_eq!(append_each(&journal, 5..6).await, [Lsn(5)]);
    shut(journal).await;
    let (_journal, replay) = reopen(config(dir.path()));
    assert_eq!(replayed_samples(&replay), expected(0..6));
    assert!(replay.report.damage.is_empty());
    assert_eq!(replay.report.torn_tail, None);
}

/// A crash in the middle of a commit to a preallocated segment leaves part of a frame
/// before the zeros: cut off as a torn tail, reported without the zeros.
#[tokio::test]
async fn a_torn_record_before_a_preallocated_segments_zeros_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(preallocated(dir.path())).unwrap();
    spares_made(&journal, 1).await;
    append_each(&journal, 0..4).await;
    shut(journal).await;
    let [_, spare] = segment_files(dir.path()).try_into().unwrap();
    // The first 40 bytes of the next record reached the disk, the rest did not.
    let mut next = frame::start(0);
    record::encode(&sample(4), &mut next).unwrap();
    frame::seal(&mut next).unwrap();
    let torn = &next[..40];
    {
        use std::os::unix::fs::FileExt;
        let file = fs::OpenOptions::new().write(true).open(&spare).unwrap();
        file.write_all_at(torn, record_offset(3)).unwrap();
    }

    let (journal, replay) = reopen(config(dir.path()));
    assert_eq!(replayed_samples(&replay), expected(0..4));
    assert_eq!(
        replay.report.torn_tail,
        Some(Cut {
            segment: spare.clone(),
            offset: record_offset(3),
            bytes: 40,
        })
    );
    assert!(replay.report.damage.is_empty());
    assert_eq!(append_each(&journal, 4..5).await, [Lsn(4)]);
    shut(journal).await;
    let (_journal, replay) = reopen(config(dir.path()));
    assert_eq!(replayed_samples(&replay), expected(0..5));
    assert_eq!(replay.report.torn_tail, None);
}

/// A clean shutdown with everything flushed leaves one empty segment, made from a spare;
/// the next start writes to it from just after its header, over its zeros.
#[tokio::test]
async fn the_next_start_writes_a_preallocated_empty_segment_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(preallocated(dir.path())).unwrap();
    spares_made(&journal, 1).await;
    let lsns = append_each(&journal, 0..3).await;
    journal.mark_flushed(lsns);
    // The spare taken at the second commit is replaced before the shutdown takes it.
    spares_made(&journal, 2).await;
    shut(journal).await;
    let [empty] = segment_files(dir.path()).try_into().unwrap();
    assert_eq!(
        empty.file_name().unwrap().to_str(),
        Some("00000000000000000003.seg")
    );
    assert_eq!(fs::metadata(&empty).unwrap().len(), 64 * 1024);

    let (journal, replay) = reopen(preallocated(dir.path()));
    assert_eq!(replay.report.records, 0);
    assert_eq!(append_each(&journal, 3..6).await, [Lsn(3), Lsn(4), Lsn(5)]);
    // Written in place: still one preallocated segment, its records from its start.
    assert_eq!(segment_files(dir.path()), std::slice::from_ref(&empty));
    assert_eq!(fs::metadata(&empty).unwrap().len(), 64 * 1024);
    assert_eq!(zeros_at_end(&empty), 64 * 1024 - record_offset(3));
    shut(journal).await;
    let (_journal, replay) = reopen(config(dir.path()));
    assert_eq!(replayed_samples(&replay), expected(3..6));
    assert!(replay.report.damage.is_empty());
}

/// A spare left by a process that died while making one is never read as a segment, and
/// is replaced.
#[tokio::test]
async fn a_spare_left_by_a_crash_is_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    write_samples(config(dir.path()), 2).await;
    fs::write(dir.path().join("spare.tmp"), [7u8; 100]).unwrap();
    let (journal, replay) = reopen(config(dir.path()));
    assert_eq!(replayed_samples(&replay), expected(0..2));
    assert!(replay.report.damage.is_empty());
    assert!(!dir.path().join("spare.tmp").exists());
    shut(journal).await;
}

/// Replay reads one segment at a time and reports the records in order: each segment is
/// removed once its records are in the ledger, and the rest stay for the next start.
#[tokio::test]
async fn replayed_segments_are_read_one_at_a_time_and_retired_as_the_ledger_takes_them() {
    let dir = tempfile::tempdir().unwrap();
    write_samples(three_per_segment(dir.path()), 8).await;
    let (journal, replay) = reopen(three_per_segment(dir.path()));
    assert_eq!(replay.report.records, 8);
    assert_eq!(replay.segments.len(), 3);
    assert_eq!(journal.stats().unflushed, 8);
    let first = replay.segments[0].read().unwrap();
    assert_eq!(
        first
            .iter()
            .map(|r| (r.lsn.0, r.record.clone()))
            .collect::<Vec<_>>(),
        expected(0..3)
    );
    journal.mark_replayed(Lsn(3), 3);
    assert_eq!(journal.stats().unflushed, 5);
    let done = journal.checkpoint().await.unwrap();
    assert_eq!(done.segments, 1, "only the segment the ledger holds");
    shut(journal).await;

    let (journal, replay) = reopen(three_per_segment(dir.path()));
    assert_eq!(replayed_samples(&replay), expected(3..8));
    journal.mark_replayed(Lsn(8), 5);
    assert_eq!(journal.stats().unflushed, 0);
    assert_eq!(journal.checkpoint().await.unwrap().segments, 2);
    shut(journal).await;
}
