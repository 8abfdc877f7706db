//! A minimal HTTP/1.1 client over one kept-alive TCP connection, written for the load
//! generator: it formats a request into a reused buffer, parses the response head with
//! `httparse` and reads exactly `content-length` bytes of body, so the tool spends its CPU on
//! the server's behalf as little as possible.

use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most header lines a response may have.
const RESPONSE_HEADERS_MAX: usize = 32;
/// The largest response head accepted.
const RESPONSE_HEAD_BYTES_MAX: usize = 16 * 1024;
/// The largest response body accepted: a full batch answer fits many times over.
const RESPONSE_BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("malformed response: {0}")]
    Malformed(String),
}

/// A status and a body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// One kept-alive connection.
pub struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    host: String,
    write_buffer: Vec<u8>,
    read_buffer: BytesMut,
}

impl Connection {
    pub async fn connect(address: SocketAddr) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            peer: address,
            host: address.to_string(),
            write_buffer: Vec::with_capacity(1024),
            read_buffer: BytesMut::with_capacity(16 * 1024),
        })
    }

    /// The server's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Sends one request and waits for its response.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Response, ClientError> {
        self.write_buffer.clear();
        self.write_buffer.extend_from_slice(method.as_bytes());
        self.write_buffer.push(b' ');
        self.write_buffer.extend_from_slice(path.as_bytes());
        self.write_buffer.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        self.write_buffer.extend_from_slice(self.host.as_bytes());
        self.write_buffer
            .extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
        self.write_buffer
            .extend_from_slice(body.len().to_string().as_bytes());
        self.write_buffer.extend_from_slice(b"\r\n\r\n");
        self.write_buffer.extend_from_slice(body);
        self.stream.write_all(&self.write_buffer).await?;
        self.read_response().await
    }

    pub async fn get(&mut self, path: &str) -> Result<Response, ClientError> {
        self.request("GET", path, b"").await
    }

    async fn read_response(&mut self) -> Result<Response, ClientError> {
        loop {
            if let Some((status, head_length, body_length)) = self.parse_head()? {
                while self.read_buffer.len() < head_length + body_length {
                    self.fill().await?;
                }
                self.read_buffer.advance(head_length);
                let body = self.read_buffer.split_to(body_length).freeze();
                return Ok(Response { status, body });
            }
            if RESPONSE_HEAD_BYTES_MAX < self.read_buffer.len() {
                return Err(ClientError::Malformed("response head too long".to_owned()));
            }
            self.fill().await?;
        }
    }

    /// The status, head length and body length, once the whole head has arrived.
    fn parse_head(&self) -> Result<Option<(u16, usize, usize)>, ClientError> {
        let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
        let mut response = httparse::Response::new(&mut headers);
        let head_length = match response.parse(&self.read_buffer) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(error) => return Err(ClientError::Malformed(error.to_string())),
        };
        let status = response
            .code
            .ok_or_else(|| ClientError::Malformed("no status".to_owned()))?;
        let mut body_length = 0;
        for header in response.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                body_length = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|value| value.trim().parse::<usize>().ok())
                    .ok_or_else(|| ClientError::Malformed("bad content-length".to_owned()))?;
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(ClientError::Malformed(
                    "chunked responses are not expected".to_owned(),
                ));
            }
        }
        if RESPONSE_BODY_BYTES_MAX < body_length {
            return Err(ClientError::Malformed("response body too long".to_owned()));
        }
        Ok(Some((status, head_length, body_length)))
    }

    async fn fill(&mut self) -> Result<(), ClientError> {
        if self.read_buffer.capacity() - self.read_buffer.len() < 4096 {
            self.read_buffer.reserve(16 * 1024);
        }
        if self.stream.read_buf(&mut self.read_buffer).await? == 0 {
            return Err(ClientError::Closed);
        }
        Ok(())
    }
}

/// The `error.code` of an error body, or `http_<status>` when the body has none.
pub(super) fn error_code(response: &Response) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        code: String,
    }
    serde_json::from_slice::<Body>(&response.body)
        .map(|body| body.error.code)
        .unwrap_or_else(|_| format!("http_{}", response.status))
}
