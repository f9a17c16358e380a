//! The HTTP/1.1 server side of the mock LLM: one connection's requests in
//! order, each answered by a handler.
//!
//! Why not hyper: the mock stands in for a model that runs on another
//! machine, yet in the benchmarks it runs on the node's own cores, so what
//! it spends per request is taken from the node. hyper's header maps,
//! body channels and response encoding were about a quarter of the mock's
//! CPU; this is the part of a server a chat-completions client exercises,
//! with `httparse` reading the heads.
//!
//! Invariants:
//! - Requests on a connection are read and answered strictly in order;
//!   bytes of a next (pipelined) request are kept for it.
//! - A request body must be framed by `Content-Length` (every client we
//!   test sends one): a chunked request is answered `411 Length Required`
//!   and the connection closed, as is any request the server cannot frame
//!   (`400`) or that is too large (`413`, `431`). `Expect: 100-continue` is
//!   honoured.
//! - The connection stays open after an answer unless the client asked to
//!   close it (or spoke HTTP/1.0 without `keep-alive`); an answer that
//!   closes says `connection: close`.
//! - Every answer carries `date`, `content-type: application/json` and
//!   `content-length`.
//! - No buffer is held between requests: an idle connection costs its
//!   socket only.

use std::future::Future;
use std::io::{self, Write as _};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

/// The longest request head accepted.
const MAX_HEAD: usize = 64 << 10;
/// The largest request body accepted.
const MAX_BODY: usize = 64 << 20;
/// The most header fields a request may have.
const MAX_HEADERS: usize = 64;
/// The most one read takes from a socket.
const READ_CHUNK: usize = 16 << 10;

/// A request as the handler sees it.
#[derive(Debug)]
pub(crate) struct Request {
    /// `POST`, `GET`, ...
    pub(crate) method: String,
    /// The request target as sent (path and query).
    pub(crate) target: String,
    /// The `Authorization` header, if any (and valid UTF-8).
    pub(crate) authorization: Option<String>,
    /// The body, exactly as sent.
    pub(crate) body: Arc<[u8]>,
}

/// A request head, read.
struct Head {
    method: String,
    target: String,
    authorization: Option<String>,
    /// Head bytes, then `length` body bytes.
    head_len: usize,
    length: usize,
    keep_alive: bool,
    expect_continue: bool,
}

/// An answer the server gives by itself, then closes the connection.
struct Refusal {
    status: u16,
    message: String,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// Serves the requests of `stream` until the client closes it, asks to
/// close, or sends what cannot be read. `handle` answers each request with
/// a status and a JSON body; `refused` renders the server's own refusals.
pub(crate) async fn serve_connection<F, Fut>(
    mut stream: TcpStream,
    handle: F,
    refused: fn(&str) -> String,
) where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = (u16, String)>,
{
    // Answers go out whole, in one write; never hold one back.
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let head = loop {
            match parse_head(&buf) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(refusal) => {
                    let body = refused(&refusal.message);
                    let _ = send(&mut stream, refusal.status, &body, false).await;
                    return;
                }
            }
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        };
        let end = head.head_len + head.length;
        if head.expect_continue
            && buf.len() < end
            && stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }
        while buf.len() < end {
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        }
        let body: Arc<[u8]> = Arc::from(&buf[head.head_len..end]);
        buf.drain(..end);
        if buf.is_empty() {
            // Released while the answer is prepared (and delayed).
            buf = Vec::new();
        }
        let request = Request {
            method: head.method,
            target: head.target,
            authorization: head.authorization,
            body,
        };
        let (status, text) = handle(request).await;
        if send(&mut stream, status, &text, head.keep_alive)
            .await
            .is_err()
            || !head.keep_alive
        {
            return;
        }
    }
}

/// Waits for bytes and appends them to `buf`; false at the end of the
/// stream or on an error.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    loop {
        if stream.readable().await.is_err() {
            return false;
        }
        match read_available(stream, buf) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
    }
}

/// Appends what `stream` has to `buf` (through a stack buffer, so that
/// `buf` grows to what arrived, a request of a few KiB, not by a fixed
/// chunk) and returns how much; 0 at the end of the stream.
fn read_available(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0; READ_CHUNK];
    let read = stream.try_read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..read]);
    Ok(read)
}

/// The head at the start of `buf`, if it is all there.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(Refusal::new(431, "the request head is too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Refusal::new(400, format!("invalid HTTP request: {e}"))),
    };
    let mut length = None;
    let mut close = false;
    let mut keep_alive = false;
    let mut expect_continue = false;
    let mut authorization = None;
    for header in request.headers.iter() {
        let name = header.name;
        let value = header.value.trim_ascii();
        if name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or_else(|| Refusal::new(400, "invalid Content-Length"))?;
            if length.is_some_and(|l| l != parsed) {
                return Err(Refusal::new(400, "conflicting Content-Length fields"));
            }
            length = Some(parsed);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Refusal::new(411, "send the body with a Content-Length"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = std::str::from_utf8(value).ok().map(str::to_owned);
        }
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY {
        return Err(Refusal::new(413, "the request body is too large"));
    }
    Ok(Some(Head {
        method: request.method.unwrap_or_default().to_owned(),
        target: request.path.unwrap_or_default().to_owned(),
        authorization,
        head_len,
        length,
        keep_alive: !close && (request.version == Some(1) || keep_alive),
        expect_continue,
    }))
}

/// Writes one answer.
async fn send(stream: &mut TcpStream, status: u16, body: &str, keep_alive: bool) -> io::Result<()> {
    stream
        .write_all(&response(status, body, keep_alive, SystemTime::now()))
        .await
}

/// An answer's bytes: status line, headers, body.
fn response(status: u16, body: &str, keep_alive: bool, now: SystemTime) -> Vec<u8> {
    let status = if (100..=999).contains(&status) {
        status
    } else {
        500
    };
    let mut bytes = Vec::with_capacity(160 + body.len());
    // Writing to a Vec cannot fail.
    let _ = write!(
        bytes,
        "HTTP/1.1 {status} {}\r\ndate: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n",
        reason(status),
        httpdate::fmt_http_date(now),
        body.len(),
        if keep_alive {
            ""
        } else {
            "connection: close\r\n"
        },
    );
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

/// The reason phrase of the statuses the mock gives (clients ignore it).
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http1_server_reads_heads_in_pieces() {
        let request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\
                        Content-Length: 2\r\nAuthorization: Bearer k\r\n\r\n{}";
        let head_end = request.len() - 2;
        for cut in 0..head_end {
            assert!(
                matches!(parse_head(&request[..cut]), Ok(None)),
                "cut at {cut}"
            );
        }
        let head = parse_head(request).ok().flatten().unwrap();
        assert_eq!((head.head_len, head.length), (head_end, 2));
        assert_eq!(head.authorization.as_deref(), Some("Bearer k"));
        assert!(head.keep_alive && !head.expect_continue);
        assert_eq!(
            (head.method.as_str(), head.target.as_str()),
            ("POST", "/v1/chat/completions")
        );
    }

    #[test]
    fn http1_server_keep_alive_rules() {
        let keep = |head: &[u8]| parse_head(head).ok().flatten().unwrap().keep_alive;
        assert!(!keep(b"POST / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!keep(b"POST / HTTP/1.0\r\n\r\n"));
        assert!(keep(b"POST / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        let expect =
            parse_head(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
        assert!(expect.ok().flatten().unwrap().expect_continue);
    }

    #[test]
    fn http1_server_refuses_what_it_cannot_frame() {
        for (head, status) in [
            (
                &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
                411,
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
                413,
            ),
            (b"NOT HTTP\r\n\r\n", 400),
        ] {
            let refusal = parse_head(head).err().expect("a refusal");
            assert_eq!(refusal.status, status, "{}", String::from_utf8_lossy(head));
        }
        let huge = [&b"POST / HTTP/1.1\r\nX: "[..], &vec![b'a'; MAX_HEAD]].concat();
        assert_eq!(parse_head(&huge).err().map(|r| r.status), Some(431));
    }

    #[test]
    fn http1_server_answers_with_length_date_and_close() {
        let now = SystemTime::UNIX_EPOCH;
        let text = String::from_utf8(response(404, "{}", false, now)).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 404 Not Found\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\n\
             content-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
        );
        let text = String::from_utf8(response(7, "", true, now)).unwrap();
        assert!(text.starts_with("HTTP/1.1 500 Internal Server Error\r\n"));
        assert!(!text.contains("connection"));
    }

    /// Reads one answer: its head (as text) and body.
    async fn answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> (String, String) {
        use tokio::io::AsyncReadExt as _;
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.parse().unwrap());
                if buf.len() >= end + 4 + length {
                    let body =
                        String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
                    buf.drain(..end + 4 + length);
                    return (head, body);
                }
            }
            let mut chunk = [0; 4096];
            let read = stream.read(&mut chunk).await.unwrap();
            assert!(read > 0, "the server closed early");
            buf.extend_from_slice(&chunk[..read]);
        }
    }

    fn post(body: &str, extra: &str) -> String {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    const BODY: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

    #[tokio::test]
    async fn http1_server_pipelines_continues_and_closes_over_a_socket() {
        let server = crate::MockLlmServer::start();
        let mut stream = TcpStream::connect(server.addr()).await.unwrap();
        let mut buf = Vec::new();

        // Two requests in one write: answered in order.
        let two = post(BODY, "") + &post(BODY, "");
        stream.write_all(two.as_bytes()).await.unwrap();
        for _ in 0..2 {
            let (head, body) = answer(&mut stream, &mut buf).await;
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            assert!(head.contains("\r\ndate: "), "{head}");
            assert!(body.contains("chat.completion"), "{body}");
        }

        // Expect: 100-continue, then the body.
        let request = post(BODY, "Expect: 100-continue\r\n");
        let (head, body) = request.split_at(request.len() - BODY.len());
        stream.write_all(head.as_bytes()).await.unwrap();
        let (interim, _) = answer(&mut stream, &mut buf).await;
        assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
        stream.write_all(body.as_bytes()).await.unwrap();
        assert!(
            answer(&mut stream, &mut buf)
                .await
                .0
                .starts_with("HTTP/1.1 200 OK")
        );

        // Another path: 404, the connection stays; then one that closes.
        let get = "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n";
        stream.write_all(get.as_bytes()).await.unwrap();
        assert!(
            answer(&mut stream, &mut buf)
                .await
                .0
                .starts_with("HTTP/1.1 404 Not Found")
        );
        stream
            .write_all(post(BODY, "Connection: close\r\n").as_bytes())
            .await
            .unwrap();
        let (head, _) = answer(&mut stream, &mut buf).await;
        assert!(head.contains("connection: close"), "{head}");
        let mut rest = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest)
            .await
            .unwrap();
        assert!(rest.is_empty() && buf.is_empty());
        assert_eq!(server.request_count(), 4, "the 404 is not a completion");

        // A chunked body is refused, and the connection closed.
        let mut stream = TcpStream::connect(server.addr()).await.unwrap();
        let chunked =
            "POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        stream.write_all(chunked.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let (head, body) = answer(&mut stream, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 411 Length Required"), "{head}");
        assert!(body.contains("Content-Length"), "{body}");
        let mut rest = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest)
            .await
            .unwrap();
        assert!(rest.is_empty());
    }
}
