//! PgBouncer (Debian `pgbouncer`) in transaction mode in front of a PostgreSQL server: each
//! transaction may run on another server connection, so nothing of a session survives it —
//! the pooler users put in front of PostgreSQL, and the one session-level advisory locks break
//! on.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::local::{free_port, fresh_dir, postgres_accepts, run_as_postgres_user};
use crate::Kind;

/// A PgBouncer process of its own, killed when dropped.
#[derive(Debug)]
pub struct PgBouncer {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl PgBouncer {
    /// Starts PgBouncer in transaction mode in front of the PostgreSQL server `upstream`
    /// (`postgres://user@host:port/database`: every database of that server is reachable
    /// through it under its own name, trust authentication), waiting until it accepts
    /// connections.
    ///
    /// When it exits while starting (another process took its port between our probe and its
    /// bind), it is started again on another port, twice at most.
    pub fn start(upstream: &str) -> Result<PgBouncer, String> {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(upstream)? {
                Ok(bouncer) => return Ok(bouncer),
                Err(exited) => {
                    eprintln!("elect-tests: {exited}; another port");
                    failures.push(exited);
                }
            }
        }
        Err(failures.join("; "))
    }

    /// Starts one: `Ok(Err(why))` when it exited while starting (worth another port).
    fn try_start(upstream: &str) -> Result<Result<PgBouncer, String>, String> {
        let (host, port) = crate::proxy::host_port(upstream)
            .ok_or_else(|| format!("no host:port in {upstream}"))?;
        let binary = find_pgbouncer()?;
        let dir = fresh_dir(Kind::Postgres)?;
        let listen = free_port()?;
        fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").map_err(|e| e.to_string())?;
        fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host={host} port={port}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {listen}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {dir}/users.txt\nadmin_users = postgres\n\
                 pool_mode = transaction\nmax_client_conn = 2000\ndefault_pool_size = 40\n\
                 server_reset_query =\nignore_startup_parameters = extra_float_digits,options\n",
                dir = dir.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut command = Command::new(binary);
        command
            .arg(dir.join("pgbouncer.ini"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("pgbouncer.log")).map_err(|e| e.to_string())?);
        // PgBouncer refuses to run as root, as PostgreSQL does.
        run_as_postgres_user(&mut command, &dir)?;
        let child = crate::keeper::spawn(command).map_err(|e| format!("pgbouncer: {e}"))?;
        let mut bouncer = PgBouncer {
            port: listen,
            dir,
            child,
        };
        let started = Instant::now();
        while !postgres_accepts(listen) {
            if let Ok(Some(status)) = bouncer.child.try_wait() {
                return Ok(Err(format!(
                    "pgbouncer on port {listen} exited during start-up ({status}): {}",
                    fs::read_to_string(bouncer.dir.join("pgbouncer.log")).unwrap_or_default()
                )));
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err("pgbouncer did not accept connections within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(Ok(bouncer))
    }

    /// `upstream` with PgBouncer's address in place of the server's (same user, database and
    /// options).
    pub fn url_for(&self, upstream: &str) -> String {
        let (host, port) = crate::proxy::host_port(upstream).unwrap_or_default();
        upstream.replacen(
            &format!("{host}:{port}"),
            &format!("127.0.0.1:{}", self.port),
            1,
        )
    }

    /// The port PgBouncer listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn find_pgbouncer() -> Result<PathBuf, String> {
    crate::local::find_postgres_binary("pgbouncer")
        .map_err(|_| "pgbouncer not found (apt-get install pgbouncer)".to_string())
}
