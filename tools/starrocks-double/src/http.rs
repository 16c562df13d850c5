//! A small HTTP/1.1 server layer on tokio: request heads, bodies, responses.
//!
//! Why hand-written: the behaviours under test live in the gaps a framework hides. The FE
//! must answer 307 without reading the body; the BE must answer before `100 Continue` when
//! headers are bad, stall before sending it, count body bytes against `Content-Length`, and
//! sometimes close the socket without any response. Owning the byte stream makes each of
//! these one line.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::load::HeaderSource;

/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query exactly as sent (what the FE puts in `Location`).
    pub target: String,
    /// Percent-decoded path.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub http10: bool,
}

impl HeaderSource for Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Request {
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `Content-Length`, if present and valid.
    pub fn content_length(&self) -> Result<Option<u64>, HttpError> {
        match self.header("content-length") {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| HttpError::BadRequest("invalid Content-Length".into())),
        }
    }

    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    pub fn expects_continue(&self) -> bool {
        self.header("expect")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
    }

    /// Whether the client wants the connection kept after this exchange.
    pub fn keep_alive(&self) -> bool {
        match self.header("connection") {
            Some(v) if v.eq_ignore_ascii_case("close") => false,
            Some(v) if v.eq_ignore_ascii_case("keep-alive") => true,
            _ => !self.http10,
        }
    }

    /// Whether a body follows the head.
    pub fn has_body(&self) -> bool {
        self.is_chunked() || matches!(self.content_length(), Ok(Some(n)) if n > 0)
    }
}

/// A transport-level failure.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("request head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
}

/// Why a body could not be read in full.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The peer stopped early, or the deadline passed, before `Content-Length` bytes came.
    #[error("received {received} of {expected:?} bytes")]
    Short {
        received: u64,
        expected: Option<u64>,
    },
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    #[error("malformed chunked body")]
    BadChunk,
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// One response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Close the connection after writing.
    pub close: bool,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
            close: false,
        }
    }

    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response::new(status, "application/json", body)
    }

    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response::new(status, "text/plain; charset=UTF-8", body)
    }

    pub fn header(mut self, k: &str, v: impl Into<String>) -> Response {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn closing(mut self) -> Response {
        self.close = true;
        self
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status)).into_bytes();
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Percent-decodes a URL component (`+` stays `+`, as in paths).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_digit(b[i + 1]), hex_digit(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

/// One client connection, with the bytes read past the current request.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads the next request head. `Ok(None)` when the peer closed between requests.
    pub async fn read_request(&mut self) -> Result<Option<Request>, HttpError> {
        loop {
            if let Some(end) = find_head_end(&self.buf) {
                let head: Vec<u8> = self.buf.drain(..end).collect();
                return parse_head(&head).map(Some);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(HttpError::HeadTooLarge);
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
                    return Ok(None);
                }
                return Err(HttpError::BadRequest(
                    "connection closed inside a request head".into(),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends `HTTP/1.1 100 Continue`.
    pub async fn send_continue(&mut self) -> std::io::Result<()> {
        self.stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await?;
        self.stream.flush().await
    }

    /// Reads the whole body (Content-Length or chunked) before `deadline`.
    pub async fn read_body(
        &mut self,
        req: &Request,
        max: u64,
        deadline: Instant,
    ) -> Result<Vec<u8>, BodyError> {
        if req.is_chunked() {
            return self.read_chunked(max, deadline).await;
        }
        let expected = match req.content_length() {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(Vec::new()),
            Err(_) => {
                return Err(BodyError::Short {
                    received: 0,
                    expected: None,
                })
            }
        };
        if expected > max {
            return Err(BodyError::TooLarge(max));
        }
        // Do not trust the header for the allocation size.
        let mut body = Vec::with_capacity(expected.min(64 << 20) as usize);
        let take = (expected as usize).min(self.buf.len());
        body.extend(self.buf.drain(..take));
        let mut chunk = vec![0u8; 256 * 1024];
        while (body.len() as u64) < expected {
            let want = ((expected - body.len() as u64) as usize).min(chunk.len());
            let read =
                tokio::time::timeout_at(deadline, self.stream.read(&mut chunk[..want])).await;
            match read {
                Ok(Ok(0)) | Err(_) => {
                    return Err(BodyError::Short {
                        received: body.len() as u64,
                        expected: Some(expected),
                    })
                }
                Ok(Ok(n)) => body.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(BodyError::Io(e)),
            }
        }
        Ok(body)
    }

    /// Makes sure `buf` holds at least `n` bytes.
    async fn fill(&mut self, n: usize, deadline: Instant) -> Result<(), BodyError> {
        let mut chunk = vec![0u8; 64 * 1024];
        while self.buf.len() < n {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Err(_) => {
                    return Err(BodyError::Short {
                        received: self.buf.len() as u64,
                        expected: None,
                    })
                }
                Ok(Ok(k)) => self.buf.extend_from_slice(&chunk[..k]),
                Ok(Err(e)) => return Err(BodyError::Io(e)),
            }
        }
        Ok(())
    }

    async fn read_line(&mut self, deadline: Instant) -> Result<String, BodyError> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            if self.buf.len() > MAX_HEAD {
                return Err(BodyError::BadChunk);
            }
            let want = self.buf.len() + 1;
            self.fill(want, deadline).await?;
        }
    }

    async fn read_chunked(&mut self, max: u64, deadline: Instant) -> Result<Vec<u8>, BodyError> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line(deadline).await?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_text, 16).map_err(|_| BodyError::BadChunk)?;
            if size == 0 {
                // Trailers until an empty line.
                while !self.read_line(deadline).await?.is_empty() {}
                return Ok(body);
            }
            if body.len() as u64 + size > max {
                return Err(BodyError::TooLarge(max));
            }
            let size = size as usize;
            self.fill(size + 2, deadline).await?;
            body.extend(self.buf.drain(..size));
            if self.buf.drain(..2).as_slice() != b"\r\n" {
                return Err(BodyError::BadChunk);
            }
        }
    }

    pub async fn respond(&mut self, resp: &Response) -> std::io::Result<()> {
        self.stream.write_all(&resp.to_bytes()).await?;
        self.stream.flush().await
    }

    /// Writes raw bytes (a bare status line for injected 5xx answers, etc.).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Closes after a response whose request body was not read: half-close, then drain what
    /// the client may still be sending for a moment, so the reply is not lost to a TCP reset.
    pub async fn close_unread(mut self) {
        let _ = self.stream.shutdown().await;
        let mut sink = [0u8; 16 * 1024];
        let until = Instant::now() + Duration::from_millis(500);
        while let Ok(Ok(n)) = tokio::time::timeout_at(until, self.stream.read(&mut sink)).await {
            if n == 0 {
                break;
            }
        }
    }

    /// Drops the connection at once, without a response (fault injection).
    pub fn abort(self) {
        drop(self.stream);
    }

    /// Closes after a complete exchange.
    pub async fn close(mut self) {
        let _ = self.stream.shutdown().await;
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn parse_head(head: &[u8]) -> Result<Request, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HttpError::BadRequest("incomplete request head".into()))
        }
        Err(e) => return Err(HttpError::BadRequest(e.to_string())),
    }
    let method = req.method.unwrap_or("").to_owned();
    let target = req.path.unwrap_or("/").to_owned();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target.as_str(), ""),
    };
    let headers = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).trim().to_owned(),
            )
        })
        .collect();
    Ok(Request {
        method,
        path: percent_decode(path),
        query: parse_query(query),
        target: target.clone(),
        headers,
        http10: req.version == Some(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_path_query_and_headers() {
        let r = parse_head(b"PUT /api/d/t/_stream_load?x=1&y=a%20b HTTP/1.1\r\nExpect: 100-continue\r\nlabel: l1\r\n\r\n").unwrap();
        assert_eq!(r.path, "/api/d/t/_stream_load");
        assert_eq!(r.target, "/api/d/t/_stream_load?x=1&y=a%20b");
        assert_eq!(r.query_param("y"), Some("a b"));
        assert!(r.expects_continue());
        assert_eq!(r.header("LABEL"), Some("l1"));
    }

    #[test]
    fn percent_decoding_leaves_bad_escapes() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }
}
