//! Real servers for tests: an explicit URL from the environment, else a testcontainers
//! instance when a Docker engine answers, else a throwaway server started from this machine's
//! binaries, else a failure that says how to provide one. `ELECT_TEST_SERVERS` narrows that
//! order (see [`Mode`]).

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::docker;
use crate::local::LocalServer;
use crate::Kind;

/// Where a [`Server`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `ELECT_<KIND>_URL` named it; nothing was started.
    Env,
    /// A testcontainers instance.
    Container,
    /// A process this library started from the local binaries.
    Local,
}

/// A server shared by the tests of this process. Tests isolate themselves with
/// [`unique_name`] (key prefixes, collections) or [`Server::mysql_database`].
#[derive(Clone)]
pub struct Server {
    kind: Kind,
    url: String,
    origin: Origin,
    _keep: Option<Arc<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("origin", &self.origin)
            .finish()
    }
}

impl Server {
    /// The URL a driver connects with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where the server came from.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// What kind of server it is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Creates a fresh database on this MySQL server and returns a URL that selects it.
    pub async fn mysql_database(&self) -> Result<String, String> {
        assert_eq!(
            self.kind,
            Kind::Mysql,
            "mysql_database on a {:?} server",
            self.kind
        );
        crate::mysql_database(&self.url).await
    }

    /// Creates a fresh database on this PostgreSQL server and returns a URL that selects it.
    pub async fn postgres_database(&self) -> Result<String, String> {
        assert_eq!(
            self.kind,
            Kind::Postgres,
            "postgres_database on a {:?} server",
            self.kind
        );
        crate::postgres_database(&self.url).await
    }
}

/// The shared Redis server; panics with instructions when none can be had.
pub async fn redis() -> Server {
    shared_or_panic(Kind::Redis).await
}

/// The shared MySQL/MariaDB server; panics with instructions when none can be had.
pub async fn mysql() -> Server {
    shared_or_panic(Kind::Mysql).await
}

/// The shared MongoDB-wire server; panics with instructions when none can be had.
pub async fn mongo() -> Server {
    shared_or_panic(Kind::Mongo).await
}

/// The shared PostgreSQL server; panics with instructions when none can be had.
pub async fn postgres() -> Server {
    shared_or_panic(Kind::Postgres).await
}

async fn shared_or_panic(kind: Kind) -> Server {
    match shared(kind).await {
        Ok(server) => server,
        Err(why) => panic!("{}", no_server_message(kind, &why)),
    }
}

/// What to do when no server of `kind` could be had.
pub fn no_server_message(kind: Kind, why: &str) -> String {
    format!(
        "no {name} server for the tests ({why}).\n\
         Provide one of:\n  \
         - `cargo xtask test`: installs and starts every server the tests need, then runs them;\n  \
         - {env}=<url> pointing at a running server;\n  \
         - a Docker engine (testcontainers starts one);\n  \
         - the server binary on this machine: {hint}.",
        name = kind.name(),
        env = kind.url_env(),
        hint = kind.install_hint(),
    )
}

/// Where the tests' servers come from: `ELECT_TEST_SERVERS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Unset (or `auto`): env URL → container (when an engine answers; a container that cannot
    /// be had, e.g. an image that cannot be pulled, falls through) → local binaries.
    Auto,
    /// `containers`: containers only — no env URL, no local binary; an engine must answer.
    Containers,
    /// `local`: never a container — an env URL (how `cargo xtask test` hands over the servers
    /// it started) or local binaries.
    Local,
}

impl Mode {
    /// The mode `ELECT_TEST_SERVERS` asks for; an unknown value is an error.
    pub fn from_env() -> Result<Mode, String> {
        match std::env::var("ELECT_TEST_SERVERS")
            .unwrap_or_default()
            .trim()
        {
            "" | "auto" => Ok(Mode::Auto),
            "containers" => Ok(Mode::Containers),
            "local" => Ok(Mode::Local),
            other => Err(format!(
                "ELECT_TEST_SERVERS={other:?}: expected containers, local or auto"
            )),
        }
    }
}

/// The server of `kind` shared by this process's tests, in the order env URL → container →
/// local binary (narrowed by [`Mode`]).
pub async fn shared(kind: Kind) -> Result<Server, String> {
    let mode = Mode::from_env()?;
    if mode != Mode::Containers {
        if let Some(url) = env_url(kind) {
            return Ok(Server {
                kind,
                url,
                origin: Origin::Env,
                _keep: None,
            });
        }
    }
    tokio::task::spawn_blocking(move || shared_blocking(kind, mode))
        .await
        .map_err(|e| format!("server start-up panicked: {e}"))?
}

fn env_url(kind: Kind) -> Option<String> {
    std::env::var(kind.url_env())
        .ok()
        .filter(|u| !u.trim().is_empty())
}

fn shared_blocking(kind: Kind, mode: Mode) -> Result<Server, String> {
    let mut no_container = None;
    if mode == Mode::Containers && !docker::engine_answers() {
        return Err("ELECT_TEST_SERVERS=containers, and no Docker engine answers".into());
    }
    if mode != Mode::Local && docker::engine_answers() {
        match shared_container(kind, mode) {
            Ok(server) => return Ok(server),
            Err(why) if mode == Mode::Containers => return Err(why),
            Err(why) => no_container = Some(why),
        }
    }
    if let Some(why) = &no_container {
        eprintln!(
            "elect-tests: no {} container ({why}); local binaries instead",
            kind.name()
        );
    }
    // Local processes are shared for the life of the process; they die with it (see keeper).
    static LOCAL: OnceLock<Mutex<HashMap<Kind, Arc<LocalServer>>>> = OnceLock::new();
    let mut local = LOCAL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let server = match local.get(&kind) {
        Some(server) => server.clone(),
        None => {
            let server = Arc::new(LocalServer::start(kind)?);
            local.insert(kind, server.clone());
            server
        }
    };
    Ok(Server {
        kind,
        url: server.url(),
        origin: Origin::Local,
        _keep: Some(server),
    })
}

/// The container of `kind` the process's tests share. It lives as long as the process, as a
/// local server does (tests take a URL from a `Server` and let it go:
/// `mysql().await.mysql_database()`), and is removed when the process ends (see the reaper in
/// [`docker`]). In [`Mode::Auto`] a container that could not be had is not tried again by the
/// process's later tests (each would wait for the same failed pull or start): they go straight
/// to the local binaries. [`Mode::Containers`] tries again, since it has nothing to fall back on.
fn shared_container(kind: Kind, mode: Mode) -> Result<Server, String> {
    /// Each kind's container, or why it could not be had.
    type Containers = HashMap<Kind, Result<Arc<docker::Running>, String>>;
    static CONTAINERS: OnceLock<Mutex<Containers>> = OnceLock::new();
    let mut containers = CONTAINERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let running = match containers.get(&kind) {
        Some(Ok(running)) => running.clone(),
        Some(Err(why)) if mode == Mode::Auto => {
            return Err(format!("{why} (earlier in this process)"))
        }
        _ => match docker::Running::start(kind, &[]) {
            Ok(running) => {
                let running = Arc::new(running);
                containers.insert(kind, Ok(running.clone()));
                running
            }
            Err(why) => {
                containers.insert(kind, Err(why.clone()));
                return Err(why);
            }
        },
    };
    Ok(Server {
        kind,
        url: running.url()?,
        origin: Origin::Container,
        _keep: Some(running),
    })
}

/// A server of its own for one test, which it can stop, kill and restart (same port, same data
/// directory). Never taken from the environment: a shared server must not be restarted under
/// other tests.
#[derive(Debug)]
pub struct OwnedServer {
    kind: Kind,
    inner: Arc<Mutex<Owned>>,
}

#[derive(Debug)]
enum Owned {
    Local(LocalServer),
    Container(Box<docker::Running>),
}

impl OwnedServer {
    /// Starts a server of `kind` from the local binaries, or in a container when the binaries
    /// are missing and a Docker engine answers (`ELECT_TEST_SERVERS=containers`: in a
    /// container only; `=local`: local binaries only).
    pub async fn start(kind: Kind) -> Result<OwnedServer, String> {
        Self::start_with_args(kind, &[]).await
    }

    /// Like [`start`](Self::start), with extra arguments for the server (a container from
    /// [`docker::LOCAL_IMAGE`] passes them on; an official image ignores them).
    pub async fn start_with_args(kind: Kind, args: &[&str]) -> Result<OwnedServer, String> {
        let mode = Mode::from_env()?;
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let owned = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let container =
                || docker::Running::start(kind, &args).map(|c| Owned::Container(Box::new(c)));
            if mode == Mode::Containers {
                return container();
            }
            match LocalServer::start_with_args(kind, &args) {
                Ok(local) => Ok(Owned::Local(local)),
                Err(why) if mode == Mode::Auto && docker::engine_answers() => {
                    container().map_err(|e| format!("{why}; {e}"))
                }
                Err(why) => Err(no_server_message(kind, &why)),
            }
        })
        .await
        .map_err(|e| format!("server start-up panicked: {e}"))??;
        Ok(OwnedServer {
            kind,
            inner: Arc::new(Mutex::new(owned)),
        })
    }

    /// The URL a driver connects with (a container may move to another port on restart).
    pub fn url(&self) -> String {
        match &*self.lock() {
            Owned::Local(s) => s.url(),
            Owned::Container(c) => c.url().unwrap_or_default(),
        }
    }

    /// The server's process id on this host (a container's: its entry point), while it runs.
    pub fn pid(&self) -> Option<u32> {
        match &*self.lock() {
            Owned::Local(s) => s.pid(),
            Owned::Container(c) => c.pid(),
        }
    }

    /// What kind of server it is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Creates a fresh database on this MySQL server and returns a URL that selects it.
    pub async fn mysql_database(&self) -> Result<String, String> {
        if self.kind != Kind::Mysql {
            return Err(format!("mysql_database on a {:?} server", self.kind));
        }
        crate::mysql_database(&self.url()).await
    }

    /// Stops the server gracefully.
    pub async fn stop(&self) -> Result<(), String> {
        self.blocking(|o| match o {
            Owned::Local(s) => {
                s.stop();
                Ok(())
            }
            Owned::Container(c) => c.stop(),
        })
        .await
    }

    /// Kills the server at once (SIGKILL).
    pub async fn kill(&self) -> Result<(), String> {
        self.blocking(|o| match o {
            Owned::Local(s) => {
                s.kill();
                Ok(())
            }
            Owned::Container(c) => c.kill(),
        })
        .await
    }

    /// Starts a stopped or killed server again, on the same port with the same data.
    pub async fn start_again(&self) -> Result<(), String> {
        self.blocking(|o| match o {
            Owned::Local(s) => s.launch(),
            Owned::Container(c) => c.start_again(),
        })
        .await
    }

    /// Stops the server gracefully and starts it again.
    pub async fn restart(&self) -> Result<(), String> {
        self.stop().await?;
        self.start_again().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Owned> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn blocking(
        &self,
        f: impl FnOnce(&mut Owned) -> Result<(), String> + Send + 'static,
    ) -> Result<(), String> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&mut inner.lock().unwrap_or_else(|p| p.into_inner())))
            .await
            .map_err(|e| format!("server control panicked: {e}"))?
    }
}

/// A name no other test (in this or any concurrent process) uses: `{prefix}_{pid}_{n}_{random}`,
/// lowercase ASCII letters, digits and `_` — valid as a database name, collection name or key
/// prefix.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let random = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.load(Ordering::Relaxed));
        h.finish() as u32
    };
    format!(
        "{prefix}_{}_{}_{random:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
