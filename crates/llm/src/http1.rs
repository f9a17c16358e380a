//! A lean HTTP/1.1 client for `http://` endpoints: one `POST` at a time per
//! pooled keep-alive connection, driven entirely by the calling task.
//!
//! Why not reqwest here: its pooled client (hyper-util) runs every
//! connection as a task of its own on the tokio I/O thread and hands each
//! request, response head and body chunk across threads through channels.
//! With 10,000 agents talking to a local server that hand-off and hyper's
//! per-request machinery were about 60% of a node's CPU. Here the task that
//! asks writes the request and reads the answer on the socket itself; the
//! reactor only wakes it when bytes arrive. `https://` endpoints (and proxied
//! ones) still go through reqwest (see [`crate::OpenAiConfig`]).
//!
//! Invariants:
//! - A connection is in the idle pool only between exchanges: after a
//!   response read to its end (framed by `Content-Length` or chunked) that
//!   did not ask to close. An error, a close-delimited body or a cancelled
//!   exchange (the future dropped midway) drops the connection, so a pooled
//!   connection never holds bytes of an earlier exchange.
//! - A pooled connection the server closed while idle never fails an
//!   attempt: one found closed (or holding stray bytes) at checkout is
//!   dropped, and an exchange on a reused connection that ends before any
//!   response byte arrived is tried once more on a fresh connection (the
//!   server closed it without answering).
//! - Connections idle for longer than [`IDLE_TIMEOUT`] are dropped, not
//!   reused; a response may be at most [`MAX_RESPONSE`] bytes.
//! - Interim `1xx` answers are skipped; `204` and `304` have no body.

use std::collections::VecDeque;
use std::io::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use httparse::Status;
use reqwest::Url;
use tokio::io::{AsyncWriteExt as _, Interest};
use tokio::net::TcpStream;

/// How long an idle connection may wait for its next request (reqwest's
/// default too).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The largest response accepted, head and body.
pub(crate) const MAX_RESPONSE: usize = 64 << 20;
/// The most header fields a response head may have.
const MAX_HEADERS: usize = 64;
/// The most one read takes from a socket.
const READ_CHUNK: usize = 16 << 10;

/// Where to connect.
#[derive(Debug)]
enum Target {
    /// An IP literal: no name resolution.
    Addr(SocketAddr),
    /// A host name, resolved at each connect.
    Name(String, u16),
}

#[derive(Debug)]
struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// A keep-alive HTTP/1.1 client for one `http://` URL.
#[derive(Debug)]
pub(crate) struct Http1Client {
    target: Target,
    /// `host:port`, for messages.
    authority: String,
    /// The request line and every header but `Content-Length`.
    head: Vec<u8>,
    /// Idle connections, most recently used last.
    idle: Mutex<VecDeque<Idle>>,
}

/// `Content-Length: <u64>` and the blank line ending the head.
const LENGTH_LINE_MAX: usize = "Content-Length: ".len() + 20 + 4;

/// An answer: its status and its body (de-chunked).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// Why an exchange failed, and whether the server can have seen the
/// request at all.
#[derive(Debug)]
struct Failure {
    message: String,
    /// Nothing came back: the write failed, or the connection ended before
    /// the first byte of a response.
    unanswered: bool,
}

impl Http1Client {
    /// A client posting to `url` (scheme `http`), with `Authorization:
    /// Bearer <api_key>` when a key is given.
    pub(crate) fn new(url: &Url, api_key: Option<&str>) -> Result<Http1Client, String> {
        if url.scheme() != "http" {
            return Err(format!("{url} is not an http:// URL"));
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("{url} has no port"))?;
        let host = url.host_str().ok_or_else(|| format!("{url} has no host"))?;
        // IPv6 literals come bracketed, as in the URL.
        let target = match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => Target::Addr(SocketAddr::new(ip, port)),
            Err(_) => Target::Name(host.to_owned(), port),
        };
        let host = host.to_owned();
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        let mut path = url.path().to_owned();
        if let Some(query) = url.query() {
            path.push('?');
            path.push_str(query);
        }
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\n\
             Content-Type: application/json\r\nAccept: application/json\r\n"
        );
        if let Some(key) = api_key {
            if key.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err("the API key holds control characters".into());
            }
            head.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        Ok(Http1Client {
            target,
            authority,
            head: head.into_bytes(),
            idle: Mutex::new(VecDeque::new()),
        })
    }

    /// The whole request for the JSON body `encode` writes (about
    /// `body_size_hint` bytes; head, length, body) as `bytes[start..]` of the
    /// returned `(bytes, start)`. The body
    /// is written after room left for the head, which is then filled in
    /// front of it: no copy of the body.
    pub(crate) fn request<E>(
        &self,
        body_size_hint: usize,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(Vec<u8>, usize), E> {
        let room = self.head.len() + LENGTH_LINE_MAX;
        let mut bytes = Vec::with_capacity(room + body_size_hint);
        bytes.resize(room, 0);
        encode(&mut bytes)?;
        let mut line = [0; LENGTH_LINE_MAX];
        let free = {
            let mut cursor = &mut line[..];
            // The longest length fits: LENGTH_LINE_MAX allows 20 digits.
            let _ = write!(cursor, "Content-Length: {}\r\n\r\n", bytes.len() - room);
            cursor.len()
        };
        let line = &line[..LENGTH_LINE_MAX - free];
        let start = room - line.len() - self.head.len();
        bytes[start..start + self.head.len()].copy_from_slice(&self.head);
        bytes[room - line.len()..room].copy_from_slice(line);
        Ok((bytes, start))
    }

    /// Sends `request` and reads the answer, on an idle connection if there
    /// is one, else on a new one.
    pub(crate) async fn send(&self, request: &[u8]) -> Result<Response, String> {
        if let Some(stream) = self.checkout() {
            match exchange(stream, request).await {
                // Closed by the server while idle: try a fresh connection.
                Err(failure) if failure.unanswered => {}
                result => return self.finish(result),
            }
        }
        let stream = self.connect().await?;
        self.finish(exchange(stream, request).await)
    }

    fn finish(
        &self,
        result: Result<(Response, Option<TcpStream>), Failure>,
    ) -> Result<Response, String> {
        let (response, reusable) = result.map_err(|f| f.message)?;
        if let Some(stream) = reusable {
            self.checkin(stream);
        }
        Ok(response)
    }

    async fn connect(&self) -> Result<TcpStream, String> {
        let connected = match &self.target {
            Target::Addr(addr) => TcpStream::connect(*addr).await,
            Target::Name(host, port) => TcpStream::connect((host.as_str(), *port)).await,
        };
        let stream = connected.map_err(|e| format!("cannot connect to {}: {e}", self.authority))?;
        // The request goes out in one write; never hold its tail back.
        stream
            .set_nodelay(true)
            .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
        Ok(stream)
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        // Pushing and popping leave the queue consistent at every point.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection that is still open.
    fn checkout(&self) -> Option<TcpStream> {
        loop {
            let idle = self.lock().pop_back()?;
            if idle.since.elapsed() > IDLE_TIMEOUT {
                // Every other one is older still.
                self.lock().clear();
                return None;
            }
            // A live idle connection has nothing to read: end of stream means
            // the server closed it, bytes mean it is out of step. The probe
            // costs no system call unless the socket was reported readable.
            let mut probe = [0; 1];
            match idle.stream.try_read(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(idle.stream),
                _ => continue,
            }
        }
    }

    fn checkin(&self, stream: TcpStream) {
        let now = Instant::now();
        let mut idle = self.lock();
        while idle
            .front()
            .is_some_and(|oldest| now.duration_since(oldest.since) > IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        idle.push_back(Idle { stream, since: now });
    }
}

/// Writes `request` on `stream` and reads one response; gives the stream
/// back when it may carry the next exchange.
async fn exchange(
    mut stream: TcpStream,
    request: &[u8],
) -> Result<(Response, Option<TcpStream>), Failure> {
    stream.write_all(request).await.map_err(|e| Failure {
        message: format!("cannot send the request: {e}"),
        unanswered: true,
    })?;
    // Filled once the answer is there, not while it is awaited: 10,000
    // agents waiting on a slow server would otherwise each hold a buffer.
    let mut buf = Vec::new();
    loop {
        let read_error = |e: io::Error, buf: &[u8]| Failure {
            message: format!("cannot read the response: {e}"),
            unanswered: buf.is_empty(),
        };
        stream.readable().await.map_err(|e| read_error(e, &buf))?;
        let read = match read_available(&stream, &mut buf) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(read_error(e, &buf)),
        };
        let eof = read == 0;
        let parsed = parse(&buf, eof).map_err(|message| Failure {
            message,
            unanswered: false,
        })?;
        match parsed {
            Some(parsed) => {
                let reusable = parsed.keep_alive.then(|| {
                    forget_read_readiness(&stream);
                    stream
                });
                return Ok((parsed.into_response(buf), reusable));
            }
            None if eof => {
                return Err(Failure {
                    message: if buf.is_empty() {
                        "the server closed the connection without answering".into()
                    } else {
                        "the server closed the connection mid-response".into()
                    },
                    unanswered: buf.is_empty(),
                });
            }
            None if buf.len() > MAX_RESPONSE => {
                return Err(Failure {
                    message: format!("the response exceeds {MAX_RESPONSE} bytes"),
                    unanswered: false,
                });
            }
            None => {}
        }
    }
}

/// Appends what `stream` has to `buf` (through a stack buffer, so that
/// `buf` grows to what arrived, not by a fixed chunk: a typical answer is a
/// few hundred bytes) and returns how much; 0 at the end of the stream.
fn read_available(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0; READ_CHUNK];
    let read = stream.try_read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..read]);
    Ok(read)
}

/// Marks `stream`, whose answer was read to its end, as having nothing to
/// read, without a system call. tokio still remembers the readiness that
/// delivered the answer; left alone, the next checkout's probe and the
/// next exchange's first read would each make a `recv` that finds nothing.
/// Only readiness already seen is forgotten (an end of stream never is):
/// bytes or a close that arrive later are reported afresh.
fn forget_read_readiness(stream: &TcpStream) {
    let _ = stream.try_io(Interest::READABLE, || {
        Err::<(), _>(io::ErrorKind::WouldBlock.into())
    });
}

/// Where a complete response's body is.
#[derive(Debug, PartialEq, Eq)]
enum Body {
    /// These bytes of the buffer.
    At(Range<usize>),
    /// Decoded from chunks.
    Chunked(Vec<u8>),
}

/// A complete response in a buffer.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    status: u16,
    body: Body,
    /// HTTP/1.1, no `Connection: close`, framed by length or chunks, and
    /// nothing after its end.
    keep_alive: bool,
}

impl Parsed {
    fn into_response(self, mut buf: Vec<u8>) -> Response {
        let body = match self.body {
            Body::At(range) => {
                buf.truncate(range.end);
                buf.drain(..range.start);
                buf
            }
            Body::Chunked(body) => body,
        };
        Response {
            status: self.status,
            body,
        }
    }
}

/// How a response's body ends.
enum Framing {
    Length(usize),
    Chunked,
    /// At the end of the stream.
    Close,
}

/// The response at the start of `buf`, if it is all there; `eof` says the
/// stream ended after `buf` (which completes a close-delimited body).
fn parse(buf: &[u8], eof: bool) -> Result<Option<Parsed>, String> {
    let mut start = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Response::new(&mut headers);
        let head_len = match head.parse(&buf[start..]) {
            Ok(Status::Complete(len)) => len,
            Ok(Status::Partial) => return Ok(None),
            Err(e) => return Err(format!("invalid HTTP response head: {e}")),
        };
        let status = head.code.unwrap_or_default();
        let body_start = start + head_len;
        if (100..200).contains(&status) && status != 101 {
            // An interim answer (100 Continue, 103 Early Hints): the final
            // one follows.
            start = body_start;
            continue;
        }
        if status == 101 {
            return Err("the server switched protocols unasked".into());
        }
        let (framing, suspect) = framing(status, head.headers)?;
        let closes = head.version != Some(1) || suspect || asks_to_close(head.headers);
        let rest = &buf[body_start..];
        let (body, end) = match framing {
            Framing::Length(len) if rest.len() >= len => {
                (Body::At(body_start..body_start + len), body_start + len)
            }
            Framing::Length(_) => return Ok(None),
            Framing::Chunked => match dechunk(rest)? {
                Some((body, used)) => (Body::Chunked(body), body_start + used),
                None => return Ok(None),
            },
            Framing::Close if eof => {
                return Ok(Some(Parsed {
                    status,
                    body: Body::At(body_start..buf.len()),
                    keep_alive: false,
                }));
            }
            Framing::Close => return Ok(None),
        };
        return Ok(Some(Parsed {
            status,
            body,
            keep_alive: !closes && !eof && end == buf.len(),
        }));
    }
}

/// Whether a `Connection` header lists `close`.
fn asks_to_close(headers: &[httparse::Header<'_>]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// How the body of a `status` answer with `headers` is delimited (RFC 9112,
/// section 6.3), and whether the answer is suspect (both `Transfer-Encoding`
/// and `Content-Length`: read as chunked, then the connection is closed).
fn framing(status: u16, headers: &[httparse::Header<'_>]) -> Result<(Framing, bool), String> {
    if status == 204 || status == 304 {
        return Ok((Framing::Length(0), false));
    }
    let mut length = None;
    let mut encoded = None;
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding of the last field decides.
            let last = header
                .value
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or_default();
            encoded = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value.trim_ascii())
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or("invalid Content-Length")?;
            if length.is_some_and(|l| l != value) {
                return Err("conflicting Content-Length fields".into());
            }
            length = Some(value);
        }
    }
    let suspect = encoded.is_some() && length.is_some();
    let framing = match (encoded, length) {
        (Some(true), _) => Framing::Chunked,
        (Some(false), _) => Framing::Close,
        (None, Some(len)) if len > MAX_RESPONSE => {
            return Err(format!("the response exceeds {MAX_RESPONSE} bytes"));
        }
        (None, Some(len)) => Framing::Length(len),
        (None, None) => Framing::Close,
    };
    Ok((framing, suspect))
}

/// Decodes a chunked body at the start of `data`: the body and the bytes
/// it took (trailers included), or `None` if it is not all there yet.
fn dechunk(data: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(&data[at..]) {
            Ok(Status::Complete(found)) => found,
            Ok(Status::Partial) => return Ok(None),
            Err(_) => return Err("invalid chunk size".into()),
        };
        at += size_len;
        if size == 0 {
            // Trailer fields, ignored, up to an empty line.
            loop {
                let Some(line) = data[at..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                at += line + 2;
                if line == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| body.len().saturating_add(s) <= MAX_RESPONSE)
            .ok_or_else(|| format!("the response exceeds {MAX_RESPONSE} bytes"))?;
        let Some(chunk) = data.get(at..at + size + 2) else {
            return Ok(None);
        };
        if !chunk.ends_with(b"\r\n") {
            return Err("a chunk does not end with CRLF".into());
        }
        body.extend_from_slice(&chunk[..size]);
        at += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> Parsed {
        parse(buf, false).unwrap().expect("a complete response")
    }

    /// Every proper prefix of `buf` is incomplete (not an error).
    fn incomplete_until_the_end(buf: &[u8]) {
        for cut in 0..buf.len() {
            assert_eq!(parse(&buf[..cut], false), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn http1_reads_a_length_framed_response() {
        let buf =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        incomplete_until_the_end(buf);
        let parsed = complete(buf);
        assert_eq!((parsed.status, parsed.keep_alive), (200, true));
        assert_eq!(parsed.into_response(buf.to_vec()).body, b"{}".to_vec());
    }

    #[test]
    fn http1_reads_a_chunked_response_with_extensions_and_trailers() {
        let buf = b"HTTP/1.1 503 Busy\r\ntransfer-encoding: gzip, chunked\r\n\r\n\
                    4;x=y\r\nbusy\r\n1\r\n!\r\n0\r\nX-Trailer: 1\r\n\r\n";
        incomplete_until_the_end(buf);
        let parsed = complete(buf);
        assert_eq!((parsed.status, parsed.keep_alive), (503, true));
        assert_eq!(parsed.into_response(Vec::new()).body, b"busy!".to_vec());
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n";
        assert!(parse(bad, false).is_err());
        let both = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n\
                     2\r\nok\r\n0\r\n\r\n";
        let parsed = complete(both);
        assert!(
            !parsed.keep_alive,
            "chunked wins, then the connection closes"
        );
        assert_eq!(parsed.into_response(Vec::new()).body, b"ok".to_vec());
    }

    #[test]
    fn http1_close_delimited_body_ends_at_eof_and_is_not_reused() {
        let buf = b"HTTP/1.1 200 OK\r\n\r\n{\"a\":1}";
        assert_eq!(parse(buf, false), Ok(None));
        let parsed = parse(buf, true).unwrap().unwrap();
        assert!(!parsed.keep_alive);
        assert_eq!(
            parsed.into_response(buf.to_vec()).body,
            b"{\"a\":1}".to_vec()
        );
    }

    #[test]
    fn http1_reuse_only_for_keep_alive_http11_with_nothing_after() {
        let close =
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n";
        assert!(!complete(close).keep_alive);
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(!complete(old).keep_alive);
        let extra = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nstray";
        assert!(!complete(extra).keep_alive);
        let no_content = b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n";
        assert_eq!(
            complete(no_content).body,
            Body::At(no_content.len()..no_content.len())
        );
    }

    #[test]
    fn http1_skips_interim_answers() {
        let buf = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
        let parsed = complete(buf);
        assert_eq!(parsed.status, 200);
        assert_eq!(parsed.into_response(buf.to_vec()).body, b"x".to_vec());
        assert!(parse(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false).is_err());
    }

    #[test]
    fn http1_rejects_bad_heads_and_lengths() {
        for buf in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
            b"SMTP ready\r\n\r\n",
        ] {
            assert!(
                parse(buf, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn http1_builds_the_request_head_once() {
        let url = Url::parse("http://[::1]:8080/v1/chat/completions?x=1").unwrap();
        let client = Http1Client::new(&url, Some("sk-1")).unwrap();
        let request = |client: &Http1Client, body: &[u8]| {
            let (bytes, start) = client
                .request(body.len(), |out| {
                    out.extend_from_slice(body);
                    Ok::<_, ()>(())
                })
                .unwrap();
            String::from_utf8(bytes[start..].to_vec()).unwrap()
        };
        assert_eq!(
            request(&client, b"{}"),
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: [::1]:8080\r\n\
             Content-Type: application/json\r\nAccept: application/json\r\n\
             Authorization: Bearer sk-1\r\nContent-Length: 2\r\n\r\n{}"
        );
        let long = vec![b'x'; 12_345];
        assert!(request(&client, &long).contains("Content-Length: 12345\r\n\r\nxxx"));
        let default_port = Url::parse("http://localhost/v1").unwrap();
        let client = Http1Client::new(&default_port, None).unwrap();
        assert!(request(&client, b"").starts_with("POST /v1 HTTP/1.1\r\nHost: localhost\r\n"));
        assert!(Http1Client::new(&url, Some("a\nb")).is_err());
        assert!(Http1Client::new(&Url::parse("https://x/").unwrap(), None).is_err());
    }
}
