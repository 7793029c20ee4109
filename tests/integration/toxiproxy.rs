//! `Toxiproxy` gives a working Toxiproxy API, driven only through noxious-client: proxies pass traffic,
//! a latency toxic really delays it (and updating or removing it changes that), disabling refuses new
//! connections and cuts live ones, enabling restores the same port, and reset clears everything.

use crate::support::{Echo, connect_and_echo, round_trip};
use musicfs_test_utils::servers::noxious_client::{StreamDirection, Toxic, ToxicKind};
use musicfs_test_utils::servers::tokio;
use musicfs_test_utils::servers::tokio::io::{AsyncReadExt, AsyncWriteExt};
use musicfs_test_utils::servers::tokio::net::TcpStream;
use musicfs_test_utils::servers::toxiproxy::Toxiproxy;
use std::time::Duration;

fn latency(name: &str, ms: u64) -> Toxic {
    Toxic {
        kind: ToxicKind::Latency { latency: ms, jitter: 0 },
        name: name.to_owned(),
        toxicity: 1.0,
        direction: StreamDirection::Downstream,
    }
}

#[tokio::test(crate = "musicfs_test_utils::servers::tokio")]
async fn latency_toxic_delays_round_trips_until_removed() {
    let echo = Echo::start();
    let toxiproxy = Toxiproxy::start().unwrap();
    eprintln!("Toxiproxy ({:?}) started in {:?} at {}", toxiproxy.kind(), toxiproxy.started_in, toxiproxy.api_url());
    let (proxy, listen) = toxiproxy.create_proxy("echo", echo.addr).await.unwrap();
    assert_ne!(listen.port(), 0);
    assert_ne!(listen, echo.addr);
    let (mut stream, plain) = connect_and_echo(listen, b"ping").await;
    eprintln!("round trip without toxics: {plain:?}");

    proxy.add_toxic(&latency("slow", 300)).await.unwrap();
    let toxics = proxy.toxics().await.unwrap();
    assert_eq!(toxics.len(), 1);
    assert_eq!(toxics[0].name, "slow");
    // New connections and the one already open both get the toxic.
    let (_fresh, slow) = connect_and_echo(listen, b"pong").await;
    assert!(slow >= Duration::from_millis(300), "a 300 ms latency toxic added only {slow:?}");
    let (back, slow_live) = round_trip(&mut stream, b"live").await.unwrap();
    assert_eq!(back, b"live");
    assert!(slow_live >= Duration::from_millis(300), "the open connection was delayed only {slow_live:?}");

    let kind = ToxicKind::Latency { latency: 2500, jitter: 0 };
    proxy.update_toxic("slow", 1.0, kind, StreamDirection::Downstream).await.unwrap();
    let (_, slower) = connect_and_echo(listen, b"ping").await;
    assert!(slower >= Duration::from_millis(2500), "after the update to 2500 ms the round trip took {slower:?}");

    proxy.remove_toxic("slow").await.unwrap();
    assert!(proxy.toxics().await.unwrap().is_empty());
    let (_, again) = connect_and_echo(listen, b"ping").await;
    assert!(again < Duration::from_secs(2), "with the toxic removed the round trip still took {again:?}");
    assert!(proxy.remove_toxic("slow").await.is_err(), "removing a missing toxic succeeded");
}

#[tokio::test(crate = "musicfs_test_utils::servers::tokio")]
async fn disabling_refuses_and_cuts_connections_and_enabling_restores_the_same_port() {
    let echo = Echo::start();
    let toxiproxy = Toxiproxy::start().unwrap();
    let client = toxiproxy.client();
    let (mut proxy, listen) = toxiproxy.create_proxy("cut", echo.addr).await.unwrap();
    let (mut live, _) = connect_and_echo(listen, b"hello").await;

    proxy.disable().await.unwrap();
    assert!(!client.proxy("cut").await.unwrap().is_enabled());
    let refused = TcpStream::connect(listen).await;
    assert!(refused.is_err(), "a disabled proxy accepted a connection");
    // The open connection is cut: the next read ends (EOF or reset) instead of echoing.
    let _ = live.write_all(b"still there?").await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), live.read(&mut buf)).await;
    match read {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("a connection through a disabled proxy still echoed {n} bytes"),
        Err(_) => panic!("a connection through a disabled proxy was left hanging, not cut"),
    }

    proxy.enable().await.unwrap();
    let reread = client.proxy("cut").await.unwrap();
    assert!(reread.is_enabled());
    assert_eq!(reread.config.listen, listen.to_string(), "re-enabling moved the proxy");
    connect_and_echo(listen, b"back again").await;

    let all = client.proxies().await.unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), vec!["cut"]);
    reread.delete().await.unwrap();
    assert!(client.proxy("cut").await.is_err(), "a deleted proxy is still there");
    assert!(TcpStream::connect(listen).await.is_err(), "a deleted proxy still accepts");
}

#[tokio::test(crate = "musicfs_test_utils::servers::tokio")]
async fn reset_enables_every_proxy_and_removes_every_toxic() {
    let echo = Echo::start();
    let toxiproxy = Toxiproxy::start().unwrap();
    let client = toxiproxy.client();
    let (mut a, listen_a) = toxiproxy.create_proxy("a", echo.addr).await.unwrap();
    let (b, listen_b) = toxiproxy.create_proxy("b", echo.addr).await.unwrap();
    a.add_toxic(&latency("slow_a", 1000)).await.unwrap();
    a.disable().await.unwrap();
    b.add_toxic(&latency("slow_b", 1000)).await.unwrap();
    assert!(TcpStream::connect(listen_a).await.is_err());

    client.reset_state().await.unwrap();
    for (name, listen) in [("a", listen_a), ("b", listen_b)] {
        let proxy = client.proxy(name).await.unwrap();
        assert!(proxy.is_enabled(), "{name} is still disabled after reset");
        assert!(proxy.toxics().await.unwrap().is_empty(), "{name} kept toxics after reset");
        let (_, took) = connect_and_echo(listen, b"ping").await;
        assert!(took < Duration::from_secs(1), "{name} still slow after reset: {took:?}");
    }
}

#[tokio::test(crate = "musicfs_test_utils::servers::tokio")]
async fn populate_creates_proxies_and_a_rename_keeps_them_working() {
    use musicfs_test_utils::servers::free_port;
    use musicfs_test_utils::servers::noxious_client::ProxyConfig;
    let echo = Echo::start();
    let toxiproxy = Toxiproxy::start().unwrap();
    let client = toxiproxy.client();
    let configs: Vec<ProxyConfig> = ["one", "two"]
        .iter()
        .map(|name| ProxyConfig {
            name: (*name).to_owned(),
            listen: format!("127.0.0.1:{}", free_port().unwrap()),
            upstream: echo.addr.to_string(),
            enabled: true,
            rand_seed: None,
        })
        .collect();
    let created = client.populate(&configs).await.unwrap();
    assert_eq!(created.len(), 2);
    for config in &configs {
        connect_and_echo(config.listen.parse().unwrap(), b"populated").await;
    }

    let mut one = client.proxy("one").await.unwrap();
    one.change_name("uno").await.unwrap();
    let mut names: Vec<String> = client.proxies().await.unwrap().into_keys().collect();
    names.sort();
    assert_eq!(names, ["two", "uno"]);
    connect_and_echo(configs[0].listen.parse().unwrap(), b"renamed").await;
    assert!(client.create_proxy("two", "127.0.0.1:0", &echo.addr.to_string()).await.is_err(), "duplicate accepted");
}
