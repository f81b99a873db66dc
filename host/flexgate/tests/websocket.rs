//! WebSocket upgrade through the gateway.

use std::time::Duration;

use flexgate_testkit::futures_util::{SinkExt, StreamExt};
use flexgate_testkit::tokio_tungstenite::tungstenite::Message;
use flexgate_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");

#[tokio::test]
async fn websocket_echo_through_the_gateway() {
    let up = WsEchoUpstream::start().await;
    let gw = Gateway::start(BIN, &yaml::proxy_all(&[up.addr()], "", "")).await;
    let tcp = tokio::net::TcpStream::connect(gw.proxy_addr())
        .await
        .expect("connect");
    let (mut ws, resp) =
        tokio_tungstenite::client_async(format!("ws://{}/chat?room=1", gw.proxy_addr()), tcp)
            .await
            .expect("websocket handshake through the gateway");
    assert_eq!(resp.status(), 101);
    let next = async |ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>| {
        tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo within 5s")
            .expect("stream open")
            .expect("message")
    };
    ws.send(Message::text("hello")).await.expect("send text");
    assert_eq!(next(&mut ws).await, Message::text("hello"));
    let bin: Vec<u8> = (0..=255u8).collect();
    ws.send(Message::binary(bin.clone()))
        .await
        .expect("send binary");
    assert_eq!(next(&mut ws).await, Message::binary(bin));
    let big: Vec<u8> = pattern::pattern_bytes(200_000);
    ws.send(Message::binary(big.clone()))
        .await
        .expect("send big binary");
    assert_eq!(next(&mut ws).await, Message::binary(big));
    for i in 0..20 {
        ws.send(Message::text(format!("m{i}"))).await.expect("send");
    }
    for i in 0..20 {
        assert_eq!(next(&mut ws).await, Message::text(format!("m{i}")));
    }
    ws.close(None).await.expect("close");
    assert_eq!(up.connections(), 1);
}
