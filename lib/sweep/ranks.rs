//! `sweep run`'s MPI ranks: rank 0 keeps the book and hands out ready tasks
//! (running one itself on a local thread), every other rank asks for work,
//! runs it and reports its outcome, until it is retired. Only the main
//! thread of each rank calls MPI. Built with the `mpi` feature only.
use super::book::{open_book, report, summary, write_results, Book};
use super::grid::Grid;
use super::job::{self, Outcome, WorkItem, Worker};
use super::slot::Slot;
use super::status::JobStatus;
use super::{check, lock, run_task, signal, RunConfig, RunSummary};
use crate::error::{Error, Result};
use mpi::point_to_point::MatchedReceiveVec;
use mpi::traits::*;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

const TAG: i32 = 7;
const POLL: Duration = Duration::from_millis(25);

/// `sweep run`: runs every unfinished task of the grid on the MPI ranks of
/// this launch (a lone process is a one-rank launch). Returns rank 0's
/// summary; other ranks return None.
pub(super) fn run(grid: &Grid, cfg: &RunConfig) -> Result<Option<RunSummary>> {
    // Funneled: only the main thread calls MPI; rank 0's local worker
    // thread only spawns processes.
    let (universe, _) =
        mpi::initialize_with_threading(mpi::Threading::Funneled).ok_or_else(|| {
            Error::invalid("MPI", "init", "MPI was already initialised in this process")
        })?;
    let world = universe.world();
    let rank = world.rank();
    let size = world.size();
    let local_rank = world.split_shared(rank).rank() as usize;
    let me = format!("rank={rank}/{size} host={}", lock::host_name());
    let tasks = job::tasks(grid, &cfg.out);
    // Each rank judges its own slot (its node's GPUs), then all agree:
    // one rank that cannot run G-rank jobs stops the sweep before any job.
    let slot = Slot::new(&cfg.device, local_rank, grid.ranks_per_job);
    let slots_ok = world_all(&world, slot.is_ok());
    let slot = match (slot, slots_ok) {
        (Ok(s), true) => s,
        (Err(e), _) => return Err(e),
        (Ok(_), false) if rank != 0 => return Ok(None),
        (Ok(_), false) => {
            return Err(Error::invalid(
                "--device",
                &cfg.device,
                format!(
                    "another rank cannot run jobs of {} ranks (its error says why)",
                    grid.ranks_per_job
                ),
            ))
        }
    };
    let device = slot.describe();
    let worker = Worker::new(&cfg.bin_dir, slot, me, &tasks);
    if rank != 0 {
        worker_loop(&world, &tasks, &worker);
        return Ok(None);
    }
    if let Err(e) = check::check_args(grid, &tasks, &cfg.bin_dir) {
        // No job starts: the other ranks are told to leave before the error.
        retire_all(&world);
        return Err(e);
    }
    let mut book = open_book(grid, cfg)?;
    // After the collective split above every rank has its stop handler:
    // slurm/sweep-mpi.sbatch waits for this line before it forwards a
    // time-limit stop to the ranks (keep its "sweep …: … rank(s)" shape).
    eprintln!(
        "sweep {}: {} task(s), {} already finished, {} rank(s); rank 0 on {device}",
        grid.name,
        book.tasks.len(),
        book.state.iter().filter(|s| **s == JobStatus::Ok).count(),
        size
    );
    schedule(&world, &mut book, &cfg.out, &worker)?;
    drop(universe);
    let rows = write_results(&book, &cfg.out)?;
    Ok(Some(summary(&book, &rows, &cfg.out)))
}

/// Whether `mine` holds on every rank (a logical-and over the world).
fn world_all(world: &mpi::topology::SimpleCommunicator, mine: bool) -> bool {
    use mpi::collective::SystemOperation;
    let mut all = 0i32;
    world.all_reduce_into(&i32::from(mine), &mut all, SystemOperation::min());
    all == 1
}

/// Rank 0 when the sweep ends before any job: every other rank's first
/// request is answered with "no work".
fn retire_all(world: &mpi::topology::SimpleCommunicator) {
    let mut left = world.size() - 1;
    while left > 0 {
        match world.any_process().immediate_matched_probe_with_tag(TAG) {
            Some(probe) => {
                let (_, status) = probe.matched_receive_vec::<i64>();
                world
                    .process_at_rank(status.source_rank())
                    .send_with_tag(&[-1i64][..], TAG);
                left -= 1;
            }
            None => std::thread::sleep(POLL),
        }
    }
}

/// Rank 0's loop: collect reports, hand out ready tasks, retire ranks when
/// nothing is left for them (or a stop was requested).
fn schedule(
    world: &mpi::topology::SimpleCommunicator,
    book: &mut Book,
    out: &Path,
    worker: &Worker,
) -> Result<()> {
    let size = world.size();
    let (to_local, local_in) = mpsc::channel::<Option<WorkItem>>();
    let (local_out, from_local) = mpsc::channel::<Outcome>();
    let w = worker.clone();
    let local = std::thread::spawn(move || {
        while let Ok(Some(task)) = local_in.recv() {
            let _ = local_out.send(run_task(&task, &w));
        }
    });
    // The task the local worker is on (it runs one at a time).
    let mut local_running: Option<usize> = None;
    let mut local_retired = false;
    let mut idle: Vec<i32> = Vec::new();
    let mut retired = 0;
    let mut remote_running = vec![None::<usize>; size as usize];
    loop {
        while let Some(probe) = world.any_process().immediate_matched_probe_with_tag(TAG) {
            let (msg, status) = probe.matched_receive_vec::<i64>();
            let src = status.source_rank();
            if msg.len() == 2 && msg[0] >= 0 {
                let i = msg[0] as usize;
                let outcome = Outcome::from_code(msg[1]);
                book.record(i, outcome);
                report(book, i, outcome, src, out);
                remote_running[src as usize] = None;
                if outcome == Outcome::Interrupted {
                    // A rank that was stopped gets no further work.
                    world.process_at_rank(src).send_with_tag(&[-1i64][..], TAG);
                    retired += 1;
                    continue;
                }
            }
            idle.push(src);
        }
        if let Ok(outcome) = from_local.try_recv() {
            let i = local_running
                .take()
                .expect("the local worker reports what it ran");
            book.record(i, outcome);
            report(book, i, outcome, 0, out);
        }
        let stopping = signal::stop_requested();
        if !local_retired && local_running.is_none() {
            match (stopping, book.next_ready()) {
                (false, Some(i)) => {
                    book.state[i] = JobStatus::Running;
                    local_running = Some(i);
                    let _ = to_local.send(Some(book.tasks[i].clone()));
                }
                _ if stopping || !book.has_pending() => {
                    let _ = to_local.send(None);
                    local_retired = true;
                }
                _ => {}
            }
        }
        let mut still_idle = Vec::new();
        for src in idle.drain(..) {
            match (stopping, book.next_ready()) {
                (false, Some(i)) => {
                    book.state[i] = JobStatus::Running;
                    remote_running[src as usize] = Some(i);
                    world
                        .process_at_rank(src)
                        .send_with_tag(&[i as i64][..], TAG);
                }
                _ if stopping || !book.has_pending() => {
                    world.process_at_rank(src).send_with_tag(&[-1i64][..], TAG);
                    retired += 1;
                }
                _ => still_idle.push(src),
            }
        }
        idle = still_idle;
        if local_retired && local_running.is_none() && retired == size - 1 {
            break;
        }
        std::thread::sleep(POLL);
    }
    let _ = local.join();
    Ok(())
}

/// A rank other than 0: ask for work, run it, report, until retired.
fn worker_loop(world: &mpi::topology::SimpleCommunicator, tasks: &[WorkItem], worker: &Worker) {
    let root = world.process_at_rank(0);
    let mut last: [i64; 2] = [-1, 0];
    loop {
        root.send_with_tag(&last[..], TAG);
        let reply = loop {
            if let Some(probe) = root.immediate_matched_probe_with_tag(TAG) {
                break probe.matched_receive_vec::<i64>().0;
            }
            std::thread::sleep(POLL);
        };
        let Some(&i) = reply.first() else { break };
        if i < 0 {
            break;
        }
        let outcome = run_task(&tasks[i as usize], worker);
        last = [i, outcome.code()];
    }
}
