//! Proves the network-namespace lab (tests/common/netns.rs) works: two real
//! meshnode processes on one bridge, content over the bridge, packet capture,
//! a cut and a heal, and nothing left behind. Needs root (skips otherwise).
//! The pcap parser's unit tests run everywhere.

#[path = "common/netns.rs"]
mod netns;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use meshnode::api::client::PublishOptions;
use netns::{Lab, Packet, Proto};

#[tokio::test]
async fn two_nodes_on_a_bridge_publish_capture_cut_heal() {
    let test = "two_nodes_on_a_bridge_publish_capture_cut_heal";
    if netns::skip_unless_root(test) || netns::skip_unless_tool(test, "tcpdump") {
        return;
    }
    let t0 = Instant::now();
    let lab = Lab::new("smoke");
    let lan = lab.bridge("lan");
    let a = lab.host("a", &[lan]);
    let b = lab.host("b", &[lan]);
    assert_eq!(a.ifname(lan), "eth0");
    assert_ne!(a.ip(lan), b.ip(lan));

    let dir_a = lab.dir().join("a");
    let dir_b = lab.dir().join("b");
    let cfg_a = a.base_config("N0CALL", "a", &dir_a, lan) + "[discovery]\nmdns = false\n";
    let cfg_b = b.base_config("N0CALL", "b", &dir_b, lan) + "[discovery]\nmdns = false\n";
    let mut node_a = a.spawn_meshnode(&dir_a, &cfg_a).await;
    let node_b = b.spawn_meshnode(&dir_b, &cfg_b).await;
    assert_eq!(node_a.addr(), SocketAddr::new(a.ip(lan).into(), 8080));
    let started = t0.elapsed();

    // The control socket works from the root namespace.
    let status = node_b.control().get("/api/v1/status").await.unwrap();
    assert_eq!(status["node"], "N0CALL-b", "{status}");
    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    node_a
        .control()
        .publish_bytes(
            data.clone(),
            &PublishOptions {
                path: "/lab/hello.bin".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    let url_path = "/n0call.radio/lab/hello.bin";
    let cap = lab.capture(lan);
    let (st, _, body) = netns::http_get(node_a.addr(), url_path).await;
    assert_eq!(st, 200);
    assert_eq!(body.as_ref(), data.as_slice());
    // Host B asks A across the bridge (a frame forwarded between two ports).
    let a_ip = a.ip(lan);
    let out = b.exec(
        "bash",
        &[
            "-c",
            &format!(
                "exec 3<>/dev/tcp/{a_ip}/8080 && printf 'GET /api/v1/status HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
            ),
        ],
    );
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && answer.starts_with("HTTP/1.") && answer.contains("N0CALL-a"),
        "B -> A: {answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packets = cap.stop();

    let a_http = SocketAddr::new(a_ip.into(), 8080);
    let is_get_to_a =
        |p: &Packet| p.is_tcp() && p.dst_addr() == a_http && p.payload.starts_with(b"GET ");
    assert!(
        packets
            .iter()
            .any(|p| is_get_to_a(p) && p.src == IpAddr::V4(lab.bridge_ip(lan))),
        "no GET from the test process to {a_http} in {} packets",
        packets.len()
    );
    assert!(
        packets
            .iter()
            .any(|p| is_get_to_a(p) && p.src == IpAddr::V4(b.ip(lan))),
        "no GET from B to {a_http} (forwarded between bridge ports) in {} packets",
        packets.len()
    );
    // A's status answer names its listen address.
    assert!(
        packets
            .iter()
            .any(|p| p.is_tcp() && p.src_addr() == a_http && netns::payload_mentions(p, a_ip)),
        "A's status answer does not mention {a_ip}"
    );
    assert!(
        !packets
            .iter()
            .any(|p| netns::payload_mentions(p, Ipv4Addr::new(10, 199, 99, 99)))
    );

    // Cut: nothing gets through; heal: it works again.
    lab.cut(&a, lan);
    let t_cut = Instant::now();
    let r = netns::try_http_get(node_a.addr(), url_path, Duration::from_millis(1500)).await;
    assert!(
        r.is_err(),
        "GET through a cut link answered: {:?}",
        r.map(|r| r.0)
    );
    assert!(t_cut.elapsed() >= Duration::from_millis(1400));
    lab.heal(&a, lan);
    let healed = Instant::now();
    loop {
        match netns::try_http_get(node_a.addr(), url_path, Duration::from_secs(1)).await {
            Ok((st, _, body)) => {
                assert_eq!(st, 200);
                assert_eq!(body.as_ref(), data.as_slice());
                break;
            }
            Err(e) => assert!(
                healed.elapsed() < Duration::from_secs(10),
                "no answer 10 s after heal: {e}"
            ),
        }
    }
    let after_heal = healed.elapsed();

    // Restart on the same dir keeps the content; SIGTERM exits 0.
    assert_eq!(node_a.stop().await, Some(0), "{}", node_a.log());
    node_a.start().await;
    let (st, _, body) = netns::http_get(node_a.addr(), url_path).await;
    assert_eq!((st.as_u16(), body.len()), (200, data.len()));
    assert!(node_a.log().contains("==== start #2"));

    // Everything is gone after the drop.
    let resources = lab.resources();
    assert_eq!(resources.len(), 5, "{resources:?}"); // 2 netns, 2 veths, 1 bridge
    drop(node_a);
    drop(node_b);
    drop(lab);
    let left = existing_lab_resources(&resources);
    assert!(left.is_empty(), "left behind: {left:?}");
    eprintln!(
        "netns smoke: nodes up after {started:?}, link back {after_heal:?} after heal, total {:?}",
        t0.elapsed()
    );
}

/// Which of `names` still exist as namespaces or links.
fn existing_lab_resources(names: &[String]) -> Vec<String> {
    let run = |args: &[&str]| {
        let o = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let mut present: Vec<String> = run(&["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    present.extend(
        run(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string()),
    );
    names
        .iter()
        .filter(|n| present.contains(n))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------
// pcap parser, on hand-built files

fn pcap(frames: &[Vec<u8>], little_endian: bool) -> Vec<u8> {
    let w32 = |out: &mut Vec<u8>, v: u32| {
        out.extend_from_slice(&if little_endian {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        })
    };
    let w16 = |out: &mut Vec<u8>, v: u16| {
        out.extend_from_slice(&if little_endian {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        })
    };
    let mut out = Vec::new();
    w32(&mut out, 0xa1b2_c3d4);
    w16(&mut out, 2);
    w16(&mut out, 4);
    w32(&mut out, 0); // thiszone
    w32(&mut out, 0); // sigfigs
    w32(&mut out, 262_144); // snaplen
    w32(&mut out, 1); // Ethernet
    for (i, f) in frames.iter().enumerate() {
        w32(&mut out, 1_700_000_000 + i as u32);
        w32(&mut out, 250_000);
        w32(&mut out, f.len() as u32);
        w32(&mut out, f.len() as u32);
        out.extend_from_slice(f);
    }
    out
}

fn ethernet(ethertype: u16, vlan: Option<u16>, l3: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    if let Some(v) = vlan {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f.resize(f.len().max(60), 0); // Ethernet padding
    f
}

fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], options: &[u8], l4: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let ihl = 20 + options.len();
    let mut h = vec![0x40 | (ihl / 4) as u8, 0];
    h.extend_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(options);
    h.extend_from_slice(l4);
    h
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn tcp(sport: u16, dport: u16, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&1000u32.to_be_bytes()); // seq
    t.extend_from_slice(&2000u32.to_be_bytes()); // ack
    t.push((((20 + options.len()) / 4) as u8) << 4);
    t.push(flags);
    t.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, checksum, urgent
    t.extend_from_slice(options);
    t.extend_from_slice(payload);
    t
}

fn sample_frames() -> Vec<Vec<u8>> {
    let udp_frame = ethernet(
        0x0800,
        None,
        &ipv4(
            17,
            [10, 200, 0, 1],
            [10, 200, 0, 2],
            &[],
            &udp(4000, 5353, b"hello"),
        ),
    );
    // MSS, NOP, NOP, timestamps (16 bytes of options); IP options NOP x3 + EOL
    let tcp_opts = [2, 4, 0x05, 0xb4, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    let tcp_frame = ethernet(
        0x0800,
        Some(7),
        &ipv4(
            6,
            [10, 200, 0, 254],
            [10, 200, 0, 1],
            &[1, 1, 1, 0],
            &tcp(40000, 8080, 0x18, &tcp_opts, b"GET /x HTTP/1.1\r\n\r\n"),
        ),
    );
    let arp = ethernet(0x0806, None, &[0, 1, 8, 0, 6, 4, 0, 1]);
    // IPv6 with a hop-by-hop header, UDP whose payload names 10.200.0.1 in text
    let mut v6 = vec![0x60, 0, 0, 0];
    let l4 = udp(5353, 5353, b"peer 10.200.0.1:8080");
    v6.extend_from_slice(&((8 + l4.len()) as u16).to_be_bytes());
    v6.extend_from_slice(&[0, 255]); // next header: hop-by-hop
    let mut src = [0u8; 16];
    src[0] = 0xfd;
    src[15] = 1;
    let mut dst = src;
    dst[15] = 2;
    v6.extend_from_slice(&src);
    v6.extend_from_slice(&dst);
    v6.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop: PadN
    v6.extend_from_slice(&l4);
    let v6_frame = ethernet(0x86dd, None, &v6);
    vec![udp_frame, tcp_frame, arp, v6_frame]
}

fn check_sample(packets: &[Packet]) {
    assert_eq!(packets.len(), 3, "{packets:?}"); // ARP skipped
    let u = &packets[0];
    assert_eq!(u.proto, Proto::Udp);
    assert_eq!(u.src, IpAddr::from([10, 200, 0, 1]));
    assert_eq!(u.dst, IpAddr::from([10, 200, 0, 2]));
    assert_eq!((u.src_port, u.dst_port), (4000, 5353));
    assert_eq!(u.payload, b"hello"); // without the Ethernet padding
    assert_eq!(u.ts, Duration::from_millis(1_700_000_000_250));

    let t = &packets[1];
    assert_eq!(t.proto, Proto::Tcp);
    assert_eq!(t.src, IpAddr::from([10, 200, 0, 254]));
    assert_eq!(t.dst_addr(), "10.200.0.1:8080".parse().unwrap());
    assert_eq!(t.src_port, 40000);
    assert_eq!(t.tcp_flags, 0x18);
    assert_eq!(t.payload, b"GET /x HTTP/1.1\r\n\r\n");

    let v6 = &packets[2];
    assert_eq!(v6.proto, Proto::Udp);
    assert_eq!(v6.src, "fd00::1".parse::<IpAddr>().unwrap());
    assert_eq!(v6.dst, "fd00::2".parse::<IpAddr>().unwrap());
    assert_eq!(v6.payload, b"peer 10.200.0.1:8080");
}

#[test]
fn pcap_parser_reads_hand_built_files() {
    let frames = sample_frames();
    check_sample(&netns::parse_pcap(&pcap(&frames, true)).unwrap());
    check_sample(&netns::parse_pcap(&pcap(&frames, false)).unwrap());

    // A last record cut short (tcpdump killed mid-write) ends the list.
    let mut file = pcap(&frames, true);
    file.extend_from_slice(&[0; 8]);
    file.extend_from_slice(&100u32.to_le_bytes());
    file.extend_from_slice(&100u32.to_le_bytes());
    file.extend_from_slice(&[0x45; 30]);
    check_sample(&netns::parse_pcap(&file).unwrap());

    assert!(netns::parse_pcap(b"\x0a\x0d\x0d\x0a and more bytes, pcapng").is_err());
    assert!(netns::parse_pcap(&[0xd4, 0xc3, 0xb2, 0xa1]).is_err());
    assert_eq!(netns::parse_pcap(&pcap(&[], true)).unwrap(), vec![]);
}

#[test]
fn payload_mentions_raw_and_dotted_addresses() {
    let packets = netns::parse_pcap(&pcap(&sample_frames(), true)).unwrap();
    let ip = Ipv4Addr::new(10, 200, 0, 1);
    assert!(netns::payload_mentions(&packets[2], ip)); // dotted text
    assert!(!netns::payload_mentions(&packets[0], ip));
    assert!(!netns::payload_mentions(
        &packets[2],
        Ipv4Addr::new(10, 200, 0, 2)
    ));

    let mention = |data: &[u8]| netns::bytes_mention(data, ip);
    assert!(mention(&[0xde, 10, 200, 0, 1, 0xad])); // raw bytes
    assert!(mention(b"10.200.0.1"));
    assert!(mention(b"[\"10.200.0.1:8080\"]"));
    assert!(!mention(b"10.200.0.12"));
    assert!(!mention(b"110.200.0.1"));
    assert!(!mention(b"10.200.0.2 and 10.200.1.1"));
    assert!(!mention(&[10, 200, 0, 2, 1]));
}
