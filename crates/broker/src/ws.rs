//! MQTT over WebSocket (§6 of MQTT 5): binary frames on path `/` or `/mqtt` with the `mqtt`
//! subprotocol, optionally only from allowed origins. The WebSocket is bridged to a byte stream
//! so the connection task is the same for every transport.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// WebSocket listener rules.
#[derive(Debug, Clone, Default)]
pub struct WsPolicy {
    /// Allowed `Origin` values; empty allows any origin (and clients that send none).
    pub allowed_origins: Vec<String>,
    /// Largest WebSocket message accepted, in bytes.
    pub max_message_size: usize,
}

fn refuse(status: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_owned()));
    *r.status_mut() = status;
    r
}

/// Performs the WebSocket handshake and returns a byte stream carrying the MQTT bytes, or the
/// reason the upgrade was refused (already answered with an HTTP error).
pub(crate) async fn accept<S>(stream: S, policy: &WsPolicy) -> Result<DuplexStream, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut refusal = None;
    // the callback's signature is tungstenite's; its error type is an HTTP response
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let path = req.uri().path();
        if path != "/" && path != "/mqtt" {
            refusal = Some(format!("path {path:?} (use / or /mqtt)"));
            return Err(refuse(
                StatusCode::NOT_FOUND,
                "MQTT is served on / and /mqtt",
            ));
        }
        let offers_mqtt = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == "mqtt");
        if !offers_mqtt {
            refusal = Some("no 'mqtt' subprotocol offered".into());
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "the 'mqtt' WebSocket subprotocol is required",
            ));
        }
        if !policy.allowed_origins.is_empty() {
            let origin = req
                .headers()
                .get("origin")
                .and_then(|o| o.to_str().ok())
                .unwrap_or("");
            if !policy.allowed_origins.iter().any(|o| o == origin) {
                refusal = Some(format!("origin {origin:?} is not allowed"));
                return Err(refuse(StatusCode::FORBIDDEN, "origin not allowed"));
            }
        }
        resp.headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
        Ok(resp)
    };
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(policy.max_message_size);
    config.max_frame_size = Some(policy.max_message_size);
    let ws = match tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config))
        .await
    {
        Ok(ws) => ws,
        Err(e) => return Err(refusal.unwrap_or_else(|| format!("WebSocket handshake failed: {e}"))),
    };
    let (app, bridge) = tokio::io::duplex(64 * 1024);
    tokio::spawn(pump(ws, bridge));
    Ok(app)
}

/// Moves bytes between the WebSocket and the duplex stream until either side ends.
async fn pump<S>(ws: tokio_tungstenite::WebSocketStream<S>, bridge: DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let (mut from_app, mut to_app) = tokio::io::split(bridge);
    let inbound = async {
        while let Some(Ok(msg)) = source.next().await {
            match msg {
                Message::Binary(data) => {
                    let written = to_app.write_all(&data).await;
                    if written.is_err() {
                        break;
                    }
                }
                // MQTT travels in binary frames only [MQTT-6.0.0-1]
                Message::Text(_) | Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = to_app.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from_app.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
}
