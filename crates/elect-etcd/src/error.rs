//! The driver's failures, classified by gRPC status into [`elect_core::Error`].

use std::sync::Arc;

use elect_core::{backend, Error};
use etcd_client::Error as EtcdError;

/// How errors and logs name this coordinator.
pub(crate) const STORE: &str = "etcd";

/// The gRPC status codes that matter here (tonic's `Code`, by their numbers in the gRPC
/// specification: elect-etcd does not depend on tonic itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    Cancelled,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    Unavailable,
    Unauthenticated,
    Other,
}

fn code(status: &etcd_client::Error) -> Option<(Code, String)> {
    let EtcdError::GRpcStatus(status) = status else {
        return None;
    };
    let code = match status.code() as i32 {
        1 => Code::Cancelled,
        3 => Code::InvalidArgument,
        4 => Code::DeadlineExceeded,
        5 => Code::NotFound,
        7 => Code::PermissionDenied,
        8 => Code::ResourceExhausted,
        9 => Code::FailedPrecondition,
        10 => Code::Aborted,
        14 => Code::Unavailable,
        16 => Code::Unauthenticated,
        _ => Code::Other,
    };
    Some((code, status.message().to_owned()))
}

/// Whether `e` failed before anything was sent: the TCP connection to the endpoint the
/// driver's balanced channel picked was refused.
///
/// tonic's balancing channel keeps an endpoint whose member went down in its set, and the
/// first request routed to it after its connection failed fails with "tcp connect error"
/// (seen here: a release at shutdown, just after one of three members had been killed and
/// started again, failed although two members served). Such a request reached no member, so
/// sending it again — grant, transaction and revocation included — cannot do anything twice.
pub(crate) fn never_sent(e: &EtcdError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = match e {
        EtcdError::GRpcStatus(status) => std::error::Error::source(status),
        EtcdError::TransportError(transport) => std::error::Error::source(transport),
        EtcdError::IoError(io) => Some(io),
        _ => None,
    };
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// How many times a request that [never left](never_sent) is sent again: once per other
/// member of a three-member cluster.
const UNSENT_RETRIES: usize = 2;

/// Runs `attempt`, and again (up to [`UNSENT_RETRIES`] times) while it fails without having
/// sent anything. The caller's timeout bounds the whole.
pub(crate) async fn resending_unsent<T, Fut>(
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, EtcdError>
where
    Fut: std::future::Future<Output = Result<T, EtcdError>>,
{
    let mut retries = 0;
    loop {
        match attempt().await {
            Err(e) if retries < UNSENT_RETRIES && never_sent(&e) => {
                retries += 1;
                tracing::debug!(error = %e, "etcd: a request reached no member; sent again");
            }
            other => return other,
        }
    }
}

/// Whether `e` says the lease asked about does not exist (expired, revoked, never granted).
pub(crate) fn lease_not_found(e: &EtcdError) -> bool {
    match e {
        EtcdError::LeaseKeepAliveError(message) => message.contains("not found"),
        other => code(other).is_some_and(|(code, message)| {
            code == Code::NotFound || message.contains("requested lease not found")
        }),
    }
}

/// `result` with a lease that does not exist (expired, revoked, never granted) as `Ok(None)`.
pub(crate) fn none_if_lease_gone<T>(result: Result<T, EtcdError>) -> Result<Option<T>, EtcdError> {
    match result {
        Ok(answer) => Ok(Some(answer)),
        Err(e) if lease_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `result` with a lease ID that is already taken (a grant that named its ID) as `Ok(None)`.
pub(crate) fn none_if_lease_exists<T>(
    result: Result<T, EtcdError>,
) -> Result<Option<T>, EtcdError> {
    match result {
        Err(e)
            if code(&e).is_some_and(|(code, message)| {
                code == Code::FailedPrecondition && message.contains("lease already exists")
            }) =>
        {
            Ok(None)
        }
        other => other.map(Some),
    }
}

/// `e`, from `operation`, as elect's error.
pub(crate) fn map_err(operation: &'static str, e: EtcdError) -> Error {
    let text = format!("{e}");
    if let Some(refused) = backend::tls_refusal(STORE, &format!("{e:?}")) {
        return refused;
    }
    let unavailable = |message: String, e: EtcdError| Error::Unavailable {
        store: STORE,
        operation,
        message,
        source: Some(Arc::new(e)),
    };
    let refused = |message: String| Error::NotSetUp {
        store: STORE,
        message: format!(
            "etcd refused the request ({message}): check the user and password (the URL's \
             user:password@, EtcdConfig::user) and that the user's role may read and write the \
             key prefix and grant leases"
        ),
    };
    match code(&e) {
        Some((Code::Unauthenticated | Code::PermissionDenied, message)) => refused(message),
        // A wrong user or password: "etcdserver: authentication failed, invalid user ID or
        // password", as InvalidArgument.
        Some((Code::InvalidArgument, message)) if message.contains("authentication failed") => {
            refused(message)
        }
        Some((
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
            | Code::ResourceExhausted,
            message,
        )) => unavailable(message, e),
        // "etcdserver: leader changed", "no leader", "too many requests" come as Unknown.
        Some((Code::Other, message))
            if ["leader", "timed out", "too many requests", "transport"]
                .iter()
                .any(|m| message.contains(m)) =>
        {
            unavailable(message, e)
        }
        Some((_, message)) => Error::Other {
            store: STORE,
            message: format!("{operation}: {message}"),
            source: Some(Arc::new(e)),
        },
        None => match e {
            EtcdError::InvalidUri(_) | EtcdError::InvalidArgs(_) => Error::InvalidConfig {
                message: format!("etcd: {text}"),
            },
            _ => unavailable(text, e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_refused_connection_is_sent_again() {
        let refused = || EtcdError::IoError(std::io::ErrorKind::ConnectionRefused.into());
        assert!(never_sent(&refused()));
        assert!(!never_sent(&EtcdError::IoError(
            std::io::ErrorKind::ConnectionReset.into()
        )));
        assert!(!never_sent(&EtcdError::InvalidArgs("x".into())));

        // Refused twice, then answered: sent three times in all.
        let mut calls = 0;
        let answer = resending_unsent(|| {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(refused())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(answer.ok(), Some(3));
        // Refused every time: the third refusal is the answer.
        let mut calls = 0;
        let answer: Result<(), _> = resending_unsent(|| {
            calls += 1;
            async { Err(refused()) }
        })
        .await;
        assert!(answer.is_err_and(|e| never_sent(&e)));
        assert_eq!(calls, 1 + UNSENT_RETRIES);
        // Any other failure is the answer at once.
        let mut calls = 0;
        let answer: Result<(), _> = resending_unsent(|| {
            calls += 1;
            async { Err(EtcdError::InvalidArgs("x".into())) }
        })
        .await;
        assert!(answer.is_err());
        assert_eq!(calls, 1);
    }
}
