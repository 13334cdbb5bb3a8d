//! A small HTTP/1.1 JSON client for the chain API (CLI, relay, tests and benchmarks).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Why a request failed before an HTTP answer came back.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `http://host:port`.
    #[error("node URL {0:?} must look like http://127.0.0.1:8800")]
    BadUrl(String),
    /// No connection.
    #[error("cannot reach the node at {url}: {reason}; is `agora node` running there?")]
    Connect {
        /// The node.
        url: String,
        /// Why.
        reason: String,
    },
    /// The exchange failed.
    #[error("request to {url} failed: {reason}")]
    Http {
        /// The node.
        url: String,
        /// Why.
        reason: String,
    },
    /// No answer in time.
    #[error("the node at {0} did not answer in time")]
    Timeout(String),
}

/// A node's API endpoint.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    authority: String,
    timeout: Duration,
}

impl Client {
    /// A client for `url` (`http://host:port`, trailing slash allowed).
    pub fn new(url: &str) -> Result<Self, ClientError> {
        let base = url.trim_end_matches('/').to_owned();
        let authority = base
            .strip_prefix("http://")
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| ClientError::BadUrl(url.to_owned()))?
            .to_owned();
        Ok(Self {
            base,
            authority,
            timeout: Duration::from_secs(30),
        })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `GET path`: the status and the body parsed as JSON (`Value::Null` when it is not JSON).
    pub async fn get(&self, path: &str) -> Result<(u16, Value), ClientError> {
        self.send("GET", path, None, &[]).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), ClientError> {
        self.send("POST", path, Some(Bytes::from(body.to_string())), &[])
            .await
    }

    /// A request with raw body bytes and extra headers.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Value), ClientError> {
        let (status, bytes) = self.send_raw(method, path, body, headers).await?;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// A request returning the raw body.
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Bytes), ClientError> {
        tokio::time::timeout(self.timeout, self.exchange(method, path, body, headers))
            .await
            .map_err(|_| ClientError::Timeout(self.base.clone()))?
    }

    /// Read a streaming answer (such as server-sent events) until `min_bytes` arrived or
    /// `wait` passed; returns the status and what was read.
    pub async fn read_stream(
        &self,
        path: &str,
        min_bytes: usize,
        wait: Duration,
    ) -> Result<(u16, Bytes), ClientError> {
        let (resp, driver) = self.open("GET", path, None, &[]).await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while out.len() < min_bytes {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        out.extend_from_slice(data);
                    }
                }
                Ok(Some(Err(e))) => return Err(self.http(e)),
                Ok(None) | Err(_) => break,
            }
        }
        driver.abort();
        Ok((status, Bytes::from(out)))
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Bytes), ClientError> {
        let (resp, driver) = self.open(method, path, body, headers).await?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.http(e))?
            .to_bytes();
        driver.abort();
        Ok((status, bytes))
    }

    fn http(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Http {
            url: self.base.clone(),
            reason: e.to_string(),
        }
    }

    /// Connect, send one request, and return the response head with the connection's driver
    /// (abort it when done with the body).
    async fn open(
        &self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<
        (
            hyper::Response<hyper::body::Incoming>,
            tokio::task::JoinHandle<Result<(), hyper::Error>>,
        ),
        ClientError,
    > {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| ClientError::Connect {
                url: self.base.clone(),
                reason: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.http(e))?;
        let driver = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| self.http(e))?;
        let resp = sender.send_request(req).await.map_err(|e| self.http(e))?;
        Ok((resp, driver))
    }
}
