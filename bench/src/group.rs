//! A group of candidate processes and the event lines they print.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, kill_process_group, Pid, Signal};

use crate::lines::intervals;
pub use crate::lines::{now_ns, Line};

struct Member {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Started as the leader of a process group of its own, signalled as a group.
    own_group: bool,
}

impl Member {
    /// Signals the process, or its whole process group when it leads one of its own.
    fn signal(&self, signal: Signal) {
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            let _ = if self.own_group {
                kill_process_group(pid, signal)
            } else {
                kill_process(pid, signal)
            };
        }
    }
}

/// Candidate processes started together; every line they print lands in `log`, in the order
/// it arrived (per process, the order it was printed).
pub struct Group {
    members: Vec<Member>,
    lines: mpsc::Receiver<Line>,
    sender: mpsc::Sender<Line>,
    pub log: Vec<Line>,
}

impl Group {
    /// An empty group.
    pub fn new() -> Group {
        let (sender, lines) = mpsc::channel();
        Group {
            members: Vec::new(),
            lines,
            sender,
            log: Vec::new(),
        }
    }

    /// Starts one more member; returns its index.
    pub fn spawn(&mut self, command: Command) -> Result<usize, String> {
        self.start(command, false)
    }

    /// Starts one more member in a process group of its own, which [`signal`](Self::signal)
    /// and [`stop`](Self::stop) signal as a whole: for a member that is a wrapper around the
    /// real candidate (the etcdctl peer), so a SIGKILL or SIGSTOP reaches that candidate too.
    pub fn spawn_process_group(&mut self, mut command: Command) -> Result<usize, String> {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
        self.start(command, true)
    }

    fn start(&mut self, mut command: Command, own_group: bool) -> Result<usize, String> {
        let who = self.members.len();
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // ELECT_BENCH_STDERR=1 shows what the candidates say on stderr.
            .stderr(if std::env::var_os("ELECT_BENCH_STDERR").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .map_err(|e| format!("{command:?}: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let sender = self.sender.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut words = line.split(' ');
                let (Some(ns), Some(event)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(ns) = ns.parse() else { continue };
                let line = Line {
                    who,
                    ns,
                    event: event.to_owned(),
                    rest: words.map(str::to_owned).collect(),
                };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        self.members.push(Member {
            child,
            stdin,
            own_group,
        });
        Ok(who)
    }

    /// How many members were started (killed ones included).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether no member was started.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// A member's process id.
    pub fn pid(&self, who: usize) -> u32 {
        self.members[who].child.id()
    }

    /// Waits up to `within` for a line matching `want`, logging everything received.
    pub fn wait(&mut self, within: Duration, want: impl Fn(&Line) -> bool) -> Option<Line> {
        let until = Instant::now() + within;
        loop {
            let left = until.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            self.log.push(line.clone());
            if want(&line) {
                return Some(line);
            }
        }
    }

    /// Receives (and logs) lines for `period`.
    pub fn collect(&mut self, period: Duration) {
        let _ = self.wait(period, |_| false);
    }

    /// Sends one command line to a member.
    pub fn send(&mut self, who: usize, command: &str) {
        if let Some(stdin) = &mut self.members[who].stdin {
            let _ = writeln!(stdin, "{command}");
            let _ = stdin.flush();
        }
    }

    /// Sends a signal; returns CLOCK_MONOTONIC just after it was delivered to the kernel.
    pub fn signal(&self, who: usize, signal: Signal) -> u128 {
        self.members[who].signal(signal);
        now_ns()
    }

    /// Asks every member to exit (it hands over first), waits up to 10 s, kills stragglers,
    /// and logs what they printed on the way out.
    pub fn stop(mut self) -> Vec<Line> {
        for who in 0..self.members.len() {
            let _ = self.signal(who, Signal::CONT);
            self.send(who, "exit");
            self.members[who].stdin = None;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for member in std::mem::take(&mut self.members).iter_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = member.child.try_wait() {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            if member.own_group {
                member.signal(Signal::KILL);
            }
            let _ = member.child.kill();
            let _ = member.child.wait();
        }
        let (quiet, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.sender, quiet));
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.log.push(line);
        }
        std::mem::take(&mut self.log)
    }
}

impl Default for Group {
    fn default() -> Self {
        Group::new()
    }
}

impl Drop for Group {
    /// Kills members still running (a panicking test must not leave candidates behind).
    fn drop(&mut self) {
        for member in &mut self.members {
            if member.own_group {
                member.signal(Signal::KILL);
            }
            let _ = member.child.kill();
            let _ = member.child.wait();
        }
    }
}

/// Leadership as the lines tell it: per member, `elected` opens an interval and `lost` closes
/// it (at the instant the line states); `work` outside the member's own interval is work done
/// without leading. Returns (milliseconds during which two or more members led, work lines
/// printed at an instant another member led).
pub fn overlap(log: &[Line], members: usize, end_ns: u128) -> (f64, usize) {
    overlap_with_kills(log, &vec![None; members], end_ns)
}

/// [`overlap`] of a group whose members may have been killed: `ended[who]` is when (a killed
/// member's open interval ends there, as it could not act after).
pub fn overlap_with_kills(log: &[Line], ended: &[Option<u128>], end_ns: u128) -> (f64, usize) {
    let intervals: Vec<(u128, u128, usize)> = intervals(log, &[], ended, end_ns)
        .into_iter()
        .map(|i| (i.start, i.end, i.who))
        .collect();
    let work: Vec<(usize, u128)> = log
        .iter()
        .filter(|l| l.event == "work")
        .map(|l| (l.who, l.ns))
        .collect();
    // Sweep: time covered by two or more intervals.
    let mut edges: Vec<(u128, i32)> = intervals
        .iter()
        .flat_map(|&(s, e, _)| [(s, 1), (e, -1)])
        .collect();
    edges.sort();
    let (mut depth, mut last, mut both) = (0, 0u128, 0u128);
    for (at, step) in edges {
        if depth >= 2 {
            both += at - last;
        }
        depth += step;
        last = at;
    }
    let stale = work
        .iter()
        .filter(|&&(who, at)| {
            intervals
                .iter()
                .any(|&(s, e, other)| other != who && s <= at && at < e)
        })
        .count();
    (both as f64 / 1e6, stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(who: usize, ns: u128, event: &str) -> Line {
        Line {
            who,
            ns,
            event: event.into(),
            rest: vec![],
        }
    }

    #[test]
    fn overlap_counts_shared_time_and_stale_work() {
        let log = [
            l(0, 0, "elected"),
            l(0, 1_000_000, "work"),
            l(1, 5_000_000, "elected"),
            l(0, 6_000_000, "work"),
            l(0, 8_000_000, "lost"),
            l(1, 9_000_000, "work"),
        ];
        assert_eq!(overlap(&log, 2, 20_000_000), (3.0, 1));
        let clean = [
            l(0, 0, "elected"),
            l(0, 4_000_000, "lost"),
            l(1, 5_000_000, "elected"),
            l(0, 6_000_000, "work"),
        ];
        assert_eq!(overlap(&clean, 2, 20_000_000), (0.0, 1));
        assert_eq!(overlap(&clean[..3], 2, 20_000_000), (0.0, 0));
    }
}
