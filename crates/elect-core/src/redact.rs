//! Hiding credentials in URLs, for configuration `Debug` output and error messages.

/// `url` with the password of its `user:password@` part replaced by `***`; everything else,
/// including a user name without a password, is kept. Backends use it so that no `Debug` of a
/// configuration and no error message ever prints a password.
///
/// A password that contains an unescaped `@`, `/`, `?` or `#` (which URL syntax forbids, but
/// people write) is still hidden whole: the user part ends at the last `@` before the query,
/// and when a `?` or `#` comes first, everything up to the last `@` is hidden, even if some of
/// the URL is hidden with it.
///
/// ```
/// use elect_core::redact_url;
/// assert_eq!(redact_url("redis://:s3cret@host:6379/0"), "redis://:***@host:6379/0");
/// assert_eq!(redact_url("mysql://app:pw@db/app?x=@"), "mysql://app:***@db/app?x=@");
/// assert_eq!(redact_url("mongodb://db1,db2/?replicaSet=rs0"), "mongodb://db1,db2/?replicaSet=rs0");
/// assert_eq!(redact_url("redis://:a/b?c@host:6379"), "redis://***@host:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // Before the query, an `@` can only end the user part (host names and database names
    // have none); a password may contain `@` or `/` unescaped, so take the last one.
    let query = rest.find(['?', '#']).unwrap_or(rest.len());
    if let Some(at) = rest[..query].rfind('@') {
        let userinfo = &rest[..at];
        return match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{}", &rest[at + 1..]),
            None => url.to_owned(),
        };
    }
    // No `@` before the first `?` or `#`: one further on is either in the query, or ends a
    // password that contains `?` or `#`. Hide up to it when what precedes it could be
    // `user:password`.
    match rest.rsplit_once('@') {
        Some((before, after)) if before.contains(':') => format!("{scheme}://***@{after}"),
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
        // Issue 14, item 10: unescaped `/` or `?` in a password printed it whole.
        assert_eq!(r("redis://:pa/ss@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(r("mysql://u:pa?ss@h:1/db"), "mysql://***@h:1/db");
        assert_eq!(r("mysql://u:p#w@h/db"), "mysql://***@h/db");
        assert_eq!(r("redis://h:1/0?x=@"), "redis://***@");
        assert_eq!(r("redis://h/0?x=@"), "redis://h/0?x=@");
        for secret in ["pa/ss", "pa?ss", "p#w", "a@b/c", "s/e?c@r#et", "x@y"] {
            for url in [
                format!("redis://:{secret}@h:1/0"),
                format!("mysql://user:{secret}@db:3306/app?x=1"),
                format!("mongodb://u:{secret}@a,b/?replicaSet=rs"),
            ] {
                let shown = r(&url);
                // Everything from the scheme to the host is hidden or the user name.
                let host = &shown[shown.find("***@").expect("redacted") + 4..];
                assert!(
                    host.starts_with("h:1/0")
                        || host.starts_with("db:3306")
                        || host.starts_with("a,b"),
                    "{url} -> {shown}"
                );
            }
        }
    }
}
