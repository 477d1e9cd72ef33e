//! Hiding credentials in URLs, for configuration `Debug` output and error messages.

/// `url` with the password of its `user:password@` part replaced by `***`; everything else,
/// including a user name without a password, is kept. Backends use it so that no `Debug` of a
/// configuration and no error message ever prints a password.
///
/// ```
/// use elect_core::redact_url;
/// assert_eq!(redact_url("redis://:s3cret@host:6379/0"), "redis://:***@host:6379/0");
/// assert_eq!(redact_url("mysql://app:pw@db/app?x=@"), "mysql://app:***@db/app?x=@");
/// assert_eq!(redact_url("mongodb://db1,db2/?replicaSet=rs0"), "mongodb://db1,db2/?replicaSet=rs0");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url as r;

    #[test]
    fn only_passwords_are_hidden() {
        assert_eq!(r("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(r("redis://u:pw@h:1"), "redis://u:***@h:1");
        assert_eq!(r("redis://u@h:1"), "redis://u@h:1");
        assert_eq!(r("redis://h:1"), "redis://h:1");
        assert_eq!(r("rediss://u:p@ss@h:1/?x=@"), "rediss://u:***@h:1/?x=@");
        assert_eq!(r("not a url"), "not a url");
    }
}
