//! Spawns server processes from one long-lived thread, with the parent-death signal set, so
//! that every server this process started dies with it — even when the test process is
//! killed, and even for servers shared through statics that are never dropped.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked exits, not the process; test
//! harnesses run each test on its own short-lived thread, hence the dedicated thread.

use std::io;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Request = (Command, mpsc::Sender<io::Result<Child>>);

pub(crate) fn spawn(command: Command) -> io::Result<Child> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("elect-server-keeper".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(spawn_tied(&mut command));
                }
                // The sender lives in a static, so this thread lives as long as the process.
            })
            .expect("spawn the server keeper thread");
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    keeper
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((command, reply))
        .map_err(|_| io::Error::other("server keeper thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("server keeper thread is gone"))?
}

#[cfg(target_os = "linux")]
fn spawn_tied(command: &mut Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only async-signal-safe calls are allowed; prctl is a raw
    // system call that allocates nothing.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

#[cfg(not(target_os = "linux"))]
fn spawn_tied(command: &mut Command) -> io::Result<Child> {
    command.spawn()
}
