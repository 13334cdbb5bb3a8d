//! Real libp2p nodes on loopback: gossip, framed streams, limits and bans.

use std::time::Duration;

use agora_p2p::{Event, Misbehaviour, P2p, P2pConfig, P2pError, read_frame, write_frame};
use futures::StreamExt;
use tokio::sync::mpsc;

const TOPIC: &str = "agora/test/1";

fn config(bootstrap: Vec<libp2p::Multiaddr>) -> P2pConfig {
    P2pConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap,
        topics: vec![TOPIC.to_owned()],
        ..P2pConfig::default()
    }
}

async fn node(seed: u8, bootstrap: Vec<libp2p::Multiaddr>) -> (P2p, mpsc::Receiver<Event>) {
    P2p::start([seed; 32], config(bootstrap)).await.unwrap()
}

async fn addr_of(p: &P2p) -> libp2p::Multiaddr {
    for _ in 0..100 {
        if let Some(a) = p.listen_addrs().await.unwrap().into_iter().next() {
            return a.with(libp2p::multiaddr::Protocol::P2p(p.peer_id()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no listen address");
}

async fn next_gossip(rx: &mut mpsc::Receiver<Event>) -> (String, Vec<u8>) {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
            Ok(Some(Event::Gossip { topic, data, .. })) => return (topic, data),
            Ok(Some(_)) => {}
            other => panic!("no gossip: {other:?}"),
        }
    }
}

async fn wait_for(rx: &mut mpsc::Receiver<Event>, want: impl Fn(&Event) -> bool) -> Event {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
            Ok(Some(e)) if want(&e) => return e,
            Ok(Some(_)) => {}
            other => panic!("event did not come: {other:?}"),
        }
    }
}

/// Publish until the mesh has formed and the other side sees the message.
async fn gossip_until_seen(from: &P2p, to: &mut mpsc::Receiver<Event>, data: &[u8]) {
    for _ in 0..100 {
        // Before the mesh forms there may be nobody to send to.
        let _ = from.publish(TOPIC, data.to_vec()).await;
        if let Ok(Some(Event::Gossip { data: got, .. })) =
            tokio::time::timeout(Duration::from_millis(200), to.recv()).await
            && got == data
        {
            return;
        }
    }
    panic!("gossip never arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_gossip_and_stream_frames() {
    let (a, mut a_events) = node(1, vec![]).await;
    let a_addr = addr_of(&a).await;
    let (b, mut b_events) = node(2, vec![a_addr]).await;
    wait_for(&mut a_events, |e| *e == Event::Connected(b.peer_id())).await;
    gossip_until_seen(&b, &mut a_events, b"hello a").await;
    a.publish(TOPIC, b"hello b".to_vec()).await.unwrap();
    let (topic, data) = next_gossip(&mut b_events).await;
    assert_eq!(
        (topic.as_str(), data.as_slice()),
        (TOPIC, b"hello b".as_slice())
    );

    // A streaming protocol: one request frame, many response frames, then end of stream.
    let mut incoming = a.accept("/agora/test-stream/1").unwrap();
    assert!(matches!(
        a.accept("/agora/test-stream/1"),
        Err(P2pError::AlreadyAccepted(_))
    ));
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            let req = read_frame(&mut stream, 1024).await.unwrap().unwrap();
            for i in 0..5u8 {
                let mut out = req.clone();
                out.push(i);
                write_frame(&mut stream, &out).await.unwrap();
            }
            use futures::AsyncWriteExt;
            let _ = stream.close().await;
        }
    });
    let mut s = b
        .open_stream(a.peer_id(), "/agora/test-stream/1")
        .await
        .unwrap();
    write_frame(&mut s, b"req").await.unwrap();
    let mut frames = Vec::new();
    while let Some(f) = read_frame(&mut s, 1024).await.unwrap() {
        frames.push(f);
    }
    assert_eq!(frames.len(), 5);
    assert_eq!(frames[4], b"req\x04");

    // A frame above the reader's limit is refused before it is read.
    let mut incoming = a.accept("/agora/test-limit/1").unwrap();
    let server = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.unwrap();
        read_frame(&mut stream, 8).await
    });
    let mut s = b
        .open_stream(a.peer_id(), "/agora/test-limit/1")
        .await
        .unwrap();
    write_frame(&mut s, &[0u8; 100]).await.unwrap();
    let result = server.await.unwrap();
    assert!(
        matches!(result, Err(P2pError::FrameTooLarge { len: 100, max: 8 })),
        "{result:?}"
    );

    // An unknown protocol is a typed error.
    let err = b
        .open_stream(a.peer_id(), "/agora/nobody/1")
        .await
        .unwrap_err();
    assert!(matches!(err, P2pError::Stream { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_peer_is_banned_and_disconnected() {
    let (a, mut a_events) = node(3, vec![]).await;
    let a_addr = addr_of(&a).await;
    let (b, _b_events) = node(4, vec![a_addr.clone()]).await;
    wait_for(&mut a_events, |e| *e == Event::Connected(b.peer_id())).await;
    // Malformed messages lower the score; the fifth crosses the ban line.
    for _ in 0..5 {
        a.report(b.peer_id(), Misbehaviour::Malformed);
    }
    wait_for(&mut a_events, |e| *e == Event::Banned(b.peer_id())).await;
    wait_for(&mut a_events, |e| *e == Event::Disconnected(b.peer_id())).await;
    assert_eq!(a.banned().await.unwrap(), vec![b.peer_id()]);
    // It cannot come back while banned.
    b.dial(a_addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!a.peers().await.unwrap().contains(&b.peer_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_is_banned() {
    let (a, mut a_events) = P2p::start(
        [5; 32],
        P2pConfig {
            max_messages_per_sec: 20,
            ..config(vec![])
        },
    )
    .await
    .unwrap();
    let a_addr = addr_of(&a).await;
    let (b, _b_events) = node(6, vec![a_addr]).await;
    wait_for(&mut a_events, |e| *e == Event::Connected(b.peer_id())).await;
    gossip_until_seen(&b, &mut a_events, b"first").await;
    for i in 0..2_000u32 {
        // Once banned, nobody receives: publishing then says so.
        let _ = b.publish(TOPIC, i.to_le_bytes().to_vec()).await;
    }
    wait_for(&mut a_events, |e| *e == Event::Banned(b.peer_id())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_gossip_is_dropped_and_penalised() {
    let (a, mut a_events) = node(7, vec![]).await;
    let a_addr = addr_of(&a).await;
    let (b, _b_events) = P2p::start(
        [8; 32],
        P2pConfig {
            max_message_bytes: 4 << 20,
            ..config(vec![a_addr])
        },
    )
    .await
    .unwrap();
    wait_for(&mut a_events, |e| *e == Event::Connected(b.peer_id())).await;
    gossip_until_seen(&b, &mut a_events, b"before").await;
    // Twice the limit: read, dropped, penalised; the peer can still send what is within it.
    b.publish(TOPIC, vec![1u8; 2 << 20]).await.unwrap();
    gossip_until_seen(&b, &mut a_events, b"after").await;
    // Oversized messages keep costing score until the peer is banned.
    for _ in 0..5 {
        let _ = b.publish(TOPIC, vec![2u8; 2 << 20]).await;
    }
    wait_for(&mut a_events, |e| *e == Event::Banned(b.peer_id())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_peer_that_starts_later_is_redialled() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let later: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let (a, mut a_events) = node(9, vec![later.clone()]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (b, _b_events) = P2p::start(
        [10; 32],
        P2pConfig {
            listen: vec![later],
            ..config(vec![])
        },
    )
    .await
    .unwrap();
    wait_for(&mut a_events, |e| *e == Event::Connected(b.peer_id())).await;
    assert!(a.peers().await.unwrap().contains(&b.peer_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_carries_gossip_and_streams_too() {
    let quic = |bootstrap| P2pConfig {
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
        bootstrap,
        topics: vec![TOPIC.to_owned()],
        ..P2pConfig::default()
    };
    let (a, mut a_events) = P2p::start([11; 32], quic(vec![])).await.unwrap();
    let a_addr = addr_of(&a).await;
    assert!(a_addr.to_string().contains("/quic-v1"), "{a_addr}");
    let (b, _b_events) = P2p::start([12; 32], quic(vec![a_addr])).await.unwrap();
    wait_for(&mut a_events, |e| *e == Event::Connected(b.peer_id())).await;
    gossip_until_seen(&b, &mut a_events, b"over quic").await;
    let mut incoming = a.accept("/agora/test-quic/1").unwrap();
    tokio::spawn(async move {
        let (_, mut s) = incoming.next().await.unwrap();
        let req = read_frame(&mut s, 64).await.unwrap().unwrap();
        write_frame(&mut s, &req).await.unwrap();
    });
    let mut s = b
        .open_stream(a.peer_id(), "/agora/test-quic/1")
        .await
        .unwrap();
    write_frame(&mut s, b"echo").await.unwrap();
    assert_eq!(read_frame(&mut s, 64).await.unwrap().unwrap(), b"echo");
}

/// Two nodes that list each other as bootstrap peers and start at the same moment dial each
/// other at once. With dials from the listening port that made one TCP connection by
/// simultaneous open, on which both sides acted as the dialer and the subscriptions were lost:
/// a node then never learned that its peer had joined the topic. Each of several pairs must
/// gossip both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_dial_each_other_at_once_still_learn_each_others_topics() {
    for pair in 0..6u8 {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (pa, pb) = (free(), free());
        let (ka, kb) = ([100 + 2 * pair; 32], [101 + 2 * pair; 32]);
        let addr = |port: u16, key: [u8; 32]| -> libp2p::Multiaddr {
            format!("/ip4/127.0.0.1/tcp/{port}")
                .parse::<libp2p::Multiaddr>()
                .unwrap()
                .with(libp2p::multiaddr::Protocol::P2p(
                    agora_p2p::peer_id_from_seed(key),
                ))
        };
        let start = |key: [u8; 32], port: u16, other: libp2p::Multiaddr| {
            P2p::start(
                key,
                P2pConfig {
                    listen: vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()],
                    ..config(vec![other])
                },
            )
        };
        let (a, b) = tokio::join!(start(ka, pa, addr(pb, kb)), start(kb, pb, addr(pa, ka)));
        let ((a, mut a_events), (b, mut b_events)) = (a.unwrap(), b.unwrap());
        let data = vec![pair; 8];
        tokio::time::timeout(
            Duration::from_secs(15),
            gossip_until_seen(&a, &mut b_events, &data),
        )
        .await
        .unwrap_or_else(|_| panic!("pair {pair}: a's gossip never reached b"));
        tokio::time::timeout(
            Duration::from_secs(15),
            gossip_until_seen(&b, &mut a_events, &data),
        )
        .await
        .unwrap_or_else(|_| panic!("pair {pair}: b's gossip never reached a"));
    }
}
