//! [`EtcdConfig`]: which etcd members to reach, as whom, and under which key prefix.

use std::fmt;
use std::time::Duration;

use elect_core::{Error, Result, TlsFiles};

/// The key prefix used when none is given: election `jobs` lives at `elect/jobs`.
pub const DEFAULT_PREFIX: &str = "elect/";

/// How to reach etcd and where the election keys live.
///
/// ```
/// use elect_etcd::EtcdConfig;
///
/// let config = EtcdConfig::from_url("etcd://app:s3cret@10.0.0.1:2379,10.0.0.2:2379/services/")
///     .unwrap();
/// assert_eq!(config.endpoints, ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
/// assert_eq!(config.prefix, "services/");
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct EtcdConfig {
    /// The members' client URLs (`http://host:port`, or `https://` with TLS). The client
    /// balances over them and moves on when one fails.
    pub endpoints: Vec<String>,
    /// Every election's key is this prefix followed by the election name (default
    /// [`DEFAULT_PREFIX`]). Keys under it that elect did not write are reported as
    /// [`Error::CorruptRecord`] when they sit where an election's key would.
    pub prefix: String,
    /// User name and password, for a cluster with authentication enabled.
    pub user: Option<(String, String)>,
    /// How long connecting and each request may take (default 5 s).
    pub timeout: Duration,
    /// TLS with these certificates (default none: plaintext). Needs the `tls` feature.
    pub tls: Option<TlsFiles>,
}

impl EtcdConfig {
    /// A configuration for `endpoints` (`host:port` or full URLs) with the defaults.
    pub fn new<S: AsRef<str>>(endpoints: impl IntoIterator<Item = S>) -> EtcdConfig {
        EtcdConfig {
            endpoints: endpoints
                .into_iter()
                .map(|e| endpoint_url(e.as_ref(), false))
                .collect(),
            prefix: DEFAULT_PREFIX.into(),
            user: None,
            timeout: Duration::from_secs(5),
            tls: None,
        }
    }

    /// Parses `etcd://[user:password@]host:port[,host:port…][/prefix]`; `etcds://` asks for
    /// TLS (with the system's roots unless [`tls`](Self::tls) names a CA). The user name and
    /// password may be percent-encoded.
    pub fn from_url(url: &str) -> Result<EtcdConfig> {
        let invalid = |why: &str| Error::InvalidConfig {
            message: format!("etcd URL {:?}: {why}", elect_core::redact_url(url)),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected etcd://host:port[,host:port…][/prefix]"))?;
        let tls = match scheme {
            "etcd" => false,
            "etcds" => true,
            _ => return Err(invalid("the scheme must be etcd:// or etcds://")),
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], &rest[i + 1..]),
            Some(_) => return Err(invalid("query strings and fragments are not supported")),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) {
            return Err(invalid("query strings and fragments are not supported"));
        }
        let (user, hosts) = match authority.rsplit_once('@') {
            Some((info, hosts)) => {
                let (name, password) = info.split_once(':').unwrap_or((info, ""));
                let name = percent_decode(name).ok_or_else(|| invalid("bad %-escape in user"))?;
                let password =
                    percent_decode(password).ok_or_else(|| invalid("bad %-escape in password"))?;
                if name.is_empty() {
                    return Err(invalid("a password needs a user name"));
                }
                (Some((name, password)), hosts)
            }
            None => (None, authority),
        };
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            let Some((h, port)) = host.rsplit_once(':') else {
                return Err(invalid("every member needs host:port"));
            };
            if h.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(invalid("every member needs host:port"));
            }
            endpoints.push(endpoint_url(host, tls));
        }
        let mut config = EtcdConfig::new(Vec::<String>::new());
        config.endpoints = endpoints;
        config.user = user;
        if !path.is_empty() {
            config.prefix = path.to_owned();
        }
        if tls {
            config.tls = Some(TlsFiles::new());
        }
        config.validate()?;
        Ok(config)
    }

    /// Sets [`prefix`](Self::prefix).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`user`](Self::user).
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((name.into(), password.into()));
        self
    }

    /// Sets [`timeout`](Self::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`tls`](Self::tls) (the endpoints become `https://`).
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.endpoints = self
            .endpoints
            .iter()
            .map(|e| endpoint_url(e.trim_start_matches("http://"), true))
            .collect();
        self.tls = Some(files);
        self
    }

    /// Checks the configuration without connecting.
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::InvalidConfig { message });
        if self.endpoints.is_empty() {
            return invalid("etcd: no endpoint given".into());
        }
        if self.prefix.len() > 512 || self.prefix.chars().any(char::is_control) {
            return invalid(format!(
                "etcd: key prefix {:?} must be at most 512 bytes without control characters",
                truncated(&self.prefix)
            ));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(3600) {
            return invalid(format!(
                "etcd: timeout {:?} must be above zero and at most an hour",
                self.timeout
            ));
        }
        if let Some(files) = &self.tls {
            if !cfg!(feature = "tls") {
                return invalid(
                    "etcd: TLS needs elect-etcd's `tls` feature (etcds:// or EtcdConfig::tls)"
                        .into(),
                );
            }
            files.validate()?;
        }
        Ok(())
    }

    /// The key of `election`.
    pub(crate) fn key(&self, election: &str) -> String {
        format!("{}{election}", self.prefix)
    }
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("user", &self.user.as_ref().map(|(name, _)| (name, "***")))
            .field("timeout", &self.timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

fn endpoint_url(endpoint: &str, tls: bool) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

fn truncated(text: &str) -> &str {
    let end = (0..=text.len().min(80))
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    &text[..end]
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_endpoints_prefix_and_user() {
        let c = EtcdConfig::from_url("etcd://127.0.0.1:2379").unwrap();
        assert_eq!(c.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(c.prefix, DEFAULT_PREFIX);
        assert!(c.user.is_none());
        let c = EtcdConfig::from_url("etcd://u%40x:p%3Aw@a:1,b:2/p/q/").unwrap();
        assert_eq!(c.endpoints, ["http://a:1", "http://b:2"]);
        assert_eq!(c.prefix, "p/q/");
        assert_eq!(c.user, Some(("u@x".into(), "p:w".into())));
        for bad in [
            "redis://a:1",
            "etcd://",
            "etcd://a",
            "etcd://a:0",
            "etcd://a:99999",
            "etcd://a:1,",
            "etcd://a:1?x=1",
            "etcd://:pw@a:1",
            "etcd://u:%zz@a:1",
            "a:1",
        ] {
            let err = EtcdConfig::from_url(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { .. }), "{bad}: {err}");
        }
        let err = EtcdConfig::from_url("etcd://u:s3cret@a").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(EtcdConfig::new(["a:1"]).validate().is_ok());
        assert!(EtcdConfig::new(Vec::<String>::new()).validate().is_err());
        assert!(EtcdConfig::new(["a:1"]).prefix("x\n").validate().is_err());
        assert!(EtcdConfig::new(["a:1"])
            .timeout(Duration::ZERO)
            .validate()
            .is_err());
        let shown = format!("{:?}", EtcdConfig::new(["a:1"]).user("app", "s3cret"));
        assert!(
            shown.contains("app") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
