//! `backend healthcheck`: GET the local health endpoint; for image HEALTHCHECKs in images that
//! have no shell or curl.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::settings::ServerSettings;

const PATH: &str = "/api/v1/health";
const TIMEOUT: Duration = Duration::from_secs(3);

/// Where the server listens, as seen from the same host: a wildcard bind means loopback.
pub fn local_addr(server: &ServerSettings) -> SocketAddr {
    let ip = match server.host {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, server.port)
}

/// Succeeds when the health endpoint answers 200 within the timeout.
pub async fn check(addr: SocketAddr) -> anyhow::Result<()> {
    tokio::time::timeout(TIMEOUT, get_health(addr))
        .await
        .with_context(|| format!("no answer from {addr} within {TIMEOUT:?}"))?
}

async fn get_health(addr: SocketAddr) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::get(PATH)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let status = sender.send_request(request).await?.status();
    if status != http::StatusCode::OK {
        bail!("GET {PATH} answered {status}");
    }
    Ok(())
}
