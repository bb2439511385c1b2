//! The one HTTP/1.1 client of the tests and tools: blocking, one request at a time per
//! connection, keep-alive, bodies framed by `Content-Length`, `Transfer-Encoding: chunked` or
//! the end of the connection. Response heads and chunk sizes are parsed by `httparse`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use thiserror::Error;

/// Largest response head (status line and headers) read.
pub const RESPONSE_HEAD_BYTES_MAX: usize = 64 * 1024;

/// Most headers of one response.
pub const RESPONSE_HEADERS_MAX: usize = 64;

/// Largest response body read.
pub const RESPONSE_BODY_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Why a request got no response.
#[derive(Debug, Error)]
pub enum HttpError {
    #[error("HTTP I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The server closed the connection before a whole response.
    #[error("the connection closed before a whole response")]
    Closed,
    /// The bytes are not an HTTP/1.1 response this client understands.
    #[error("malformed response: {0}")]
    Malformed(String),
}

/// A response: status, headers in order (names lower-cased), body (de-chunked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive connection to one server.
pub struct Connection {
    reader: BufReader<TcpStream>,
    host: String,
    /// The server said `Connection: close` or ended a body by closing.
    closed: bool,
}

impl Connection {
    /// Connects to `addr` (`host:port`) with Nagle's algorithm off.
    pub fn open(addr: impl ToSocketAddrs + std::fmt::Display) -> Result<Connection, HttpError> {
        let host = addr.to_string();
        let stream = TcpStream::connect(addr)?;
        Connection::from_stream(stream, host)
    }

    /// Connects within `connect`, and fails reads that wait longer than `read`.
    pub fn open_timeout(
        addr: SocketAddr,
        connect: Duration,
        read: Duration,
    ) -> Result<Connection, HttpError> {
        let stream = TcpStream::connect_timeout(&addr, connect)?;
        stream.set_read_timeout(Some(read))?;
        Connection::from_stream(stream, addr.to_string())
    }

    fn from_stream(stream: TcpStream, host: String) -> Result<Connection, HttpError> {
        stream.set_nodelay(true)?;
        Ok(Connection {
            reader: BufReader::new(stream),
            host,
            closed: false,
        })
    }

    /// Whether the server closed this connection (no further request can be sent).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Sends one request and reads its response. `headers` are sent after `Host`; a
    /// `Content-Length` is added for the body (also when empty, as curl does for POST).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, HttpError> {
        if self.closed {
            return Err(HttpError::Closed);
        }
        let mut request = Vec::with_capacity(128 + body.len());
        write_request(&mut request, &self.host, method, path, headers, body)?;
        // One write: a request split over several segments would wait on delayed ACKs.
        self.reader.get_mut().write_all(&request)?;
        let response = read_response(&mut self.reader, method == "HEAD")?;
        if response.1 {
            self.closed = true;
        }
        Ok(response.0)
    }

    /// `GET path`.
    pub fn get(&mut self, path: &str) -> Result<Response, HttpError> {
        self.request("GET", path, &[], &[])
    }
}

/// One request on a fresh connection, with `Connection: close`.
pub fn request_once(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, HttpError> {
    let mut all = headers.to_vec();
    all.push(("Connection", "close"));
    Connection::open(addr)?.request(method, path, &all, body)
}

/// Writes a request head and body to `out`.
pub fn write_request(
    out: &mut impl Write,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    write!(out, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n")?;
    for (name, value) in headers {
        write!(out, "{name}: {value}\r\n")?;
    }
    if !body.is_empty() || !matches!(method, "GET" | "HEAD") {
        write!(out, "Content-Length: {}\r\n", body.len())?;
    }
    out.write_all(b"\r\n")?;
    out.write_all(body)
}

/// How a response body is framed.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Reads one response from `reader`. Returns it and whether the connection is finished (the
/// server said `Connection: close`, or the body ran to the end of the connection). `head_only`
/// for the answer to `HEAD`, which has no body whatever its headers say.
pub fn read_response(
    reader: &mut impl BufRead,
    head_only: bool,
) -> Result<(Response, bool), HttpError> {
    loop {
        let (status, headers) = read_head(reader)?;
        // Interim answers (100 Continue) precede the response.
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let mut close = headers
            .iter()
            .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close"));
        let framing = if head_only || status == 204 || status == 304 {
            Framing::Length(0)
        } else if headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"))
        {
            Framing::Chunked
        } else if let Some((_, value)) = headers.iter().find(|(n, _)| n == "content-length") {
            let length = value
                .trim()
                .parse::<usize>()
                .map_err(|_| HttpError::Malformed(format!("content-length {value:?}")))?;
            Framing::Length(length)
        } else {
            Framing::UntilClose
        };
        let body = match framing {
            Framing::Length(length) => {
                if length > RESPONSE_BODY_BYTES_MAX {
                    return Err(HttpError::Malformed(format!("a body of {length} bytes")));
                }
                let mut body = vec![0; length];
                read_exact(reader, &mut body)?;
                body
            }
            Framing::Chunked => read_chunked(reader)?,
            Framing::UntilClose => {
                close = true;
                let mut body = Vec::new();
                (&mut *reader)
                    .take(RESPONSE_BODY_BYTES_MAX as u64 + 1)
                    .read_to_end(&mut body)?;
                if body.len() > RESPONSE_BODY_BYTES_MAX {
                    return Err(HttpError::Malformed("a body without end".into()));
                }
                body
            }
        };
        return Ok((
            Response {
                status,
                headers,
                body,
            },
            close,
        ));
    }
}

fn read_exact(reader: &mut impl BufRead, into: &mut [u8]) -> Result<(), HttpError> {
    reader.read_exact(into).map_err(|error| match error.kind() {
        std::io::ErrorKind::UnexpectedEof => HttpError::Closed,
        _ => HttpError::Io(error),
    })
}

/// Reads one line (through `\n`) onto `into`, failing at `limit` bytes or the end.
fn read_line(reader: &mut impl BufRead, into: &mut Vec<u8>, limit: usize) -> Result<(), HttpError> {
    let read = (&mut *reader)
        .take((limit.saturating_sub(into.len()) + 1) as u64)
        .read_until(b'\n', into)?;
    if read == 0 {
        return Err(HttpError::Closed);
    }
    if into.len() > limit {
        return Err(HttpError::Malformed(format!("a line over {limit} bytes")));
    }
    if into.last() != Some(&b'\n') {
        return Err(HttpError::Closed);
    }
    Ok(())
}

type Head = (u16, Vec<(String, String)>);

fn read_head(reader: &mut impl BufRead) -> Result<Head, HttpError> {
    let mut raw = Vec::with_capacity(512);
    loop {
        read_line(reader, &mut raw, RESPONSE_HEAD_BYTES_MAX)?;
        if raw.ends_with(b"\r\n\r\n") || raw.ends_with(b"\n\n") || raw == b"\r\n" {
            if raw == b"\r\n" {
                // Stray CRLF between responses (RFC 9112 §2.2 lets a reader skip it).
                raw.clear();
                continue;
            }
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HttpError::Malformed("an incomplete response head".into()))
        }
        Err(error) => return Err(HttpError::Malformed(error.to_string())),
    }
    let status = response
        .code
        .ok_or_else(|| HttpError::Malformed("no status code".into()))?;
    let headers = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Ok((status, headers))
}

fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        read_line(reader, &mut line, RESPONSE_HEAD_BYTES_MAX)?;
        let size = match httparse::parse_chunk_size(&line) {
            Ok(httparse::Status::Complete((_, size))) => size,
            Ok(httparse::Status::Partial) | Err(_) => {
                return Err(HttpError::Malformed(format!(
                    "chunk size line {:?}",
                    String::from_utf8_lossy(&line)
                )))
            }
        };
        if size == 0 {
            break;
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|size| body.len() + size <= RESPONSE_BODY_BYTES_MAX)
            .ok_or_else(|| HttpError::Malformed(format!("a chunk of {size} bytes")))?;
        let start = body.len();
        body.resize(start + size, 0);
        read_exact(reader, &mut body[start..])?;
        let mut end = [0u8; 2];
        read_exact(reader, &mut end)?;
        if &end != b"\r\n" {
            return Err(HttpError::Malformed("a chunk not followed by CRLF".into()));
        }
    }
    // Trailers, up to the empty line.
    loop {
        line.clear();
        read_line(reader, &mut line, RESPONSE_HEAD_BYTES_MAX)?;
        if line == b"\r\n" || line == b"\n" {
            return Ok(body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<(Response, bool), HttpError> {
        read_response(&mut BufReader::new(raw), false)
    }

    #[test]
    fn content_length_bodies_follow_each_other_on_one_connection() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Ledger-Position: 7\r\n\r\nhelloHTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nno";
        let mut reader = BufReader::new(&raw[..]);
        let (first, close) = read_response(&mut reader, false).unwrap();
        assert_eq!(
            (first.status, first.body.as_slice(), close),
            (200, &b"hello"[..], false)
        );
        assert_eq!(first.header("x-ledger-position"), Some("7"));
        let (second, _) = read_response(&mut reader, false).unwrap();
        assert_eq!((second.status, second.text().as_str()), (404, "no"));
    }

    #[test]
    fn chunked_bodies_are_joined_and_trailers_skipped() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\nX-Trailer: 1\r\n\r\n";
        let (response, close) = parse(raw).unwrap();
        assert_eq!(response.text(), "Wikipedia ");
        assert!(!close);
    }

    #[test]
    fn a_body_without_framing_runs_to_the_end_and_closes() {
        let (response, close) = parse(b"HTTP/1.1 200 OK\r\n\r\nall of it").unwrap();
        assert_eq!(response.text(), "all of it");
        assert!(close);
        let (_, close) =
            parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(close);
    }

    #[test]
    fn truncated_and_malformed_responses_are_errors() {
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),
            Err(HttpError::Closed)
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-"),
            Err(HttpError::Closed)
        ));
        assert!(matches!(
            parse(b"HTTP/9 abc\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn requests_carry_host_headers_and_length() {
        let mut out = Vec::new();
        write_request(
            &mut out,
            "127.0.0.1:1",
            "POST",
            "/v1/commands",
            &[("Content-Type", "application/json")],
            b"{}",
        )
        .unwrap();
        assert_eq!(
            out,
            b"POST /v1/commands HTTP/1.1\r\nHost: 127.0.0.1:1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
    }
}
