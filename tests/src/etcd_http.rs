//! Plain HTTP/1.1 to an etcd member's client port (its JSON gateway): health and status for
//! the clusters of `etcd` and the containers of `docker`, which both use it (and so neither
//! imports the other for it).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

/// One HTTP/1.1 request to the member's client port; the reply's text, empty on failure.
pub(crate) fn request(port: u16, method: &str, path: &str, body: &str) -> String {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
}

/// Whether the etcd at `port` on loopback says it is healthy (`GET /health`).
pub(crate) fn healthy(port: u16) -> bool {
    request(port, "GET", "/health", "").contains(r#""health":"true""#)
}
