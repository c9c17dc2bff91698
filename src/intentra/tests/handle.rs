//! A `Handle` drives a running node from other threads, `Events` reads it from another, and
//! backpressure is visible: `Writable` after `WouldBlock`, `send_timeout` gives up when no
//! room comes. Every loop here is bounded in count and time; nothing asserts on timing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use intentra::proto::EndpointConfig;
use intentra::proto::Keypair;
use intentra::proto::{ConnectError, Mode, SendError};
use intentra::{HandleError, NodeEvent, RecvError};
use intentra::{Node, NodeConfig};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

mod common;

fn node(seed: u64) -> Node {
    node_with_reliable_bound(seed, intentra::proto::DEFAULT_QUEUE_BYTES)
}

fn node_with_reliable_bound(seed: u64, bound: usize) -> Node {
    let mut config = EndpointConfig::new(Keypair::generate(&mut ChaCha20Rng::seed_from_u64(seed)));
    config.reliable.max_queued_bytes = bound;
    config.rate_pps = 100_000_000;
    config.rate_burst = 100_000_000;
    let mut node_config = NodeConfig::new("127.0.0.1:0".parse().unwrap(), config);
    node_config.socket.recv_buffer = Some(4 << 20);
    node_config.socket.send_buffer = Some(4 << 20);
    Node::bind(node_config).unwrap()
}

/// A node whose handle queues at most `commands` commands between two loop turns.
fn node_with_command_queue(seed: u64, commands: usize) -> Node {
    let mut config = EndpointConfig::new(Keypair::generate(&mut ChaCha20Rng::seed_from_u64(seed)));
    config.rate_pps = 100_000_000;
    config.rate_burst = 100_000_000;
    let mut node_config = NodeConfig::new("127.0.0.1:0".parse().unwrap(), config);
    node_config.handle.commands = commands;
    Node::bind(node_config).unwrap()
}

use common::establish as pair;

#[test]
fn a_million_realtime_messages_from_a_producer_thread_are_all_accounted_for() {
    const N: u64 = 1_000_000;
    const IN_FLIGHT: u64 = 1024;
    let mut a = node(1);
    let mut b = node(2);
    let peer = pair(&mut a, &mut b);
    let delivered = Arc::new(AtomicU64::new(0));
    let rx_dropped = Arc::new(AtomicU64::new(0));
    let counter = delivered.clone();
    b.on_message(move |_, _, _| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let dropped = rx_dropped.clone();
    b.every(Duration::from_millis(1), move |ctx| {
        dropped.store(ctx.stats().dropped_total(), Ordering::Relaxed);
    });
    let handle = a.handle();
    let (a_stop, b_stop) = (a.shutdown_handle(), b.shutdown_handle());
    let b_thread = std::thread::spawn(move || {
        b.run_for(Duration::from_secs(300)).unwrap();
        b
    });
    let a_thread = std::thread::spawn(move || {
        a.run_for(Duration::from_secs(300)).unwrap();
        a
    });
    // The producer keeps at most IN_FLIGHT messages unaccounted for, far fewer than the
    // receiver's 4 MiB socket buffer holds, so the kernel never has to drop one.
    let producer = {
        let handle = handle.clone();
        let delivered = delivered.clone();
        let rx_dropped = rx_dropped.clone();
        std::thread::spawn(move || {
            let payload = [0x17u8; 64];
            let (mut queued, mut refused) = (0u64, 0u64);
            let mut stalls = 0u64;
            while queued + refused < N {
                let accounted = delivered.load(Ordering::Relaxed)
                    + rx_dropped.load(Ordering::Relaxed)
                    + handle.stats().failed.total();
                if queued > accounted + IN_FLIGHT {
                    stalls += 1;
                    assert!(stalls < 50_000_000, "the receiver stopped accounting");
                    std::thread::yield_now();
                    continue;
                }
                match handle.send(peer, Mode::Realtime, &payload) {
                    Ok(()) => queued += 1,
                    Err(HandleError::QueueFull(_)) => refused += 1,
                    Err(err) => panic!("send: {err}"),
                }
            }
            (queued, refused)
        })
    };
    let (queued, refused) = producer.join().unwrap();
    // Let the last ones land, then stop both loops.
    for _ in 0..2_000 {
        let stats = handle.stats();
        if stats.sent + stats.failed.total() == queued
            && delivered.load(Ordering::Relaxed) + rx_dropped.load(Ordering::Relaxed) >= stats.sent
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    a_stop.shutdown();
    handle.shutdown();
    b_stop.shutdown();
    let a = a_thread.join().unwrap();
    let b = b_thread.join().unwrap();
    let stats = handle.stats();
    let a_stats = a.stats();
    let b_stats = b.stats();
    let got = delivered.load(Ordering::Relaxed);
    // Producer: queued or refused at once.
    assert_eq!(queued + refused, N);
    // Sender's loop: every queued message sealed or failed with a reason.
    assert_eq!(stats.sent + stats.failed.total(), queued, "{stats:?}");
    assert!(stats.batches < stats.commands, "batched: {stats:?}");
    // Receiver: every sealed one (less any the sender's driver counted undeliverable)
    // delivered or dropped with a reason. (Receiver drops may also count a control packet.)
    let sent_on_wire = stats.sent - a_stats.packets_send_dropped.min(stats.sent);
    assert!(got <= stats.sent);
    assert!(
        got + b_stats.dropped_total() >= sent_on_wire,
        "delivered {got} of {sent_on_wire}; receiver {b_stats:?}; sender {a_stats:?}"
    );
    assert!(got > 0);
}

#[test]
fn events_reach_a_reader_thread_and_overflow_is_counted() {
    let mut a = node(3);
    let mut config = EndpointConfig::new(Keypair::generate(&mut ChaCha20Rng::seed_from_u64(4)));
    config.rate_pps = 100_000_000;
    config.rate_burst = 100_000_000;
    let mut b_config = NodeConfig::new("127.0.0.1:0".parse().unwrap(), config);
    b_config.handle.events = 16;
    let mut b = Node::bind(b_config).unwrap();
    let mut events = b.events();
    let peer = pair(&mut a, &mut b);
    let mut buf = [0u8; 2048];
    // PeerUp arrived through the queue.
    let mut saw_up = false;
    while let Ok(event) = events.try_recv(&mut buf) {
        saw_up |= matches!(event, NodeEvent::PeerUp { .. });
    }
    assert!(saw_up);
    assert_eq!(events.try_recv(&mut buf), Err(RecvError::Empty));
    assert_eq!(
        events.recv_timeout(&mut buf, Duration::from_millis(1)),
        Err(RecvError::Timeout)
    );
    // 100 messages into a 16-slot queue nobody reads meanwhile: 16 kept, 84 counted.
    for i in 0..100u32 {
        a.send(peer, Mode::Realtime, &i.to_le_bytes()).unwrap();
        if i % 10 == 9 {
            for _ in 0..5 {
                b.turn(Duration::from_millis(1)).unwrap();
            }
        }
    }
    for _ in 0..20 {
        b.turn(Duration::from_millis(1)).unwrap();
    }
    let drops = events.drops();
    let mut got = 0u64;
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4];
        let mut got = 0;
        while let Ok(event) = events.try_recv(&mut buf) {
            if let NodeEvent::Message { len, .. } = event {
                assert_eq!(len, 4);
                got += 1;
            }
        }
        // Too small a buffer leaves the message queued.
        (got, events)
    });
    let (n, mut events) = reader.join().unwrap();
    got += n;
    assert_eq!(
        got + drops.messages_no_slot + drops.messages_no_bytes,
        100,
        "{drops:?}"
    );
    assert!(drops.messages_no_slot > 0);
    a.send(peer, Mode::Realtime, &[7u8; 100]).unwrap();
    for _ in 0..20 {
        b.turn(Duration::from_millis(1)).unwrap();
    }
    let mut small = [0u8; 10];
    assert_eq!(
        events.try_recv(&mut small),
        Err(RecvError::BufferTooSmall { needed: 100 })
    );
    assert!(matches!(
        events.try_recv(&mut buf),
        Ok(NodeEvent::Message { len: 100, .. })
    ));
    drop(b);
    assert_eq!(events.try_recv(&mut buf), Err(RecvError::Closed));
}

#[test]
fn writable_fires_once_acks_free_a_window_that_said_would_block() {
    // A memory-constrained sender (the 512-byte bound) whose window fills after five sends.
    let mut a = node_with_reliable_bound(5, 512);
    let mut b = node(6);
    let peer = pair(&mut a, &mut b);
    let writable = Arc::new(AtomicBool::new(false));
    let flag = writable.clone();
    a.on_writable(move |_, p| {
        assert_eq!(p, peer);
        flag.store(true, Ordering::Relaxed);
    });
    let mut a_events = a.events();
    // Fill the window while b does not run (no ACKs).
    let payload = [1u8; 100];
    let mut refused = false;
    for _ in 0..64 {
        match a.send(peer, Mode::Reliable, &payload) {
            Ok(()) => {}
            Err(SendError::WouldBlock) => {
                refused = true;
                break;
            }
            Err(err) => panic!("{err}"),
        }
    }
    assert!(refused, "the window never filled");
    a.turn(Duration::ZERO).unwrap();
    assert!(!writable.load(Ordering::Relaxed), "no ACK yet, no room");
    for _ in 0..2_000 {
        if writable.load(Ordering::Relaxed) {
            break;
        }
        b.turn(Duration::from_millis(1)).unwrap();
        a.turn(Duration::from_millis(1)).unwrap();
    }
    assert!(writable.load(Ordering::Relaxed), "Writable never fired");
    let mut buf = [0u8; 64];
    let mut saw = false;
    while let Ok(event) = a_events.try_recv(&mut buf) {
        saw |= event == NodeEvent::Writable { peer };
    }
    assert!(saw, "the event queue got Writable too");
    assert!(a.send(peer, Mode::Reliable, &payload).is_ok());
}

#[test]
fn send_timeout_gives_up_when_no_room_comes_and_sends_when_it_does() {
    let mut a = node(7);
    let mut b = node(8);
    let peer = pair(&mut a, &mut b);
    let payload = [2u8; 100];
    // b stops acknowledging: it is not turned again until the end.
    while a.send(peer, Mode::Reliable, &payload).is_ok() {}
    let handle = a.handle();
    let stop = a.shutdown_handle();
    let a_thread = std::thread::spawn(move || {
        a.run_for(Duration::from_secs(60)).unwrap();
        a
    });
    let r = handle.send_timeout(peer, Mode::Reliable, &payload, Duration::from_millis(50));
    assert_eq!(r, Err(HandleError::Timeout));
    // Realtime needs no room.
    assert_eq!(
        handle.send_timeout(peer, Mode::Realtime, &payload, Duration::from_secs(10)),
        Ok(())
    );
    // Now b runs and acknowledges: room comes, the send goes.
    let b_stop = b.shutdown_handle();
    let b_thread = std::thread::spawn(move || {
        b.run_for(Duration::from_secs(60)).unwrap();
    });
    let r = handle.send_timeout(peer, Mode::Reliable, &payload, Duration::from_secs(30));
    assert_eq!(r, Ok(()));
    stop.shutdown();
    handle.shutdown();
    b_stop.shutdown();
    let a = a_thread.join().unwrap();
    b_thread.join().unwrap();
    let stats = a.handle_stats();
    assert!(stats.abandoned <= 1, "{stats:?}");
    // A closed node answers at once.
    drop(a);
    assert_eq!(
        handle.send(peer, Mode::Realtime, b"x"),
        Err(HandleError::Closed)
    );
}

#[test]
fn a_full_command_queue_answers_at_once_and_commands_queue_before_the_node_runs() {
    let mut a = node_with_command_queue(9, 4);
    let mut b = node(10);
    let mut events = b.events();
    let handle = a.handle();
    // Before a runs: a connect and a publish queue up; the queue's bound is kept.
    handle.connect(b.local_addr(), b.public_key()).unwrap();
    handle.publish(Mode::Realtime, b"early").unwrap();
    handle.publish(Mode::Realtime, b"early").unwrap();
    handle.publish(Mode::Realtime, b"early").unwrap();
    assert_eq!(
        handle.publish(Mode::Realtime, b"early"),
        Err(HandleError::QueueFull(intentra::Full::Slots))
    );
    let mut buf = [0u8; 64];
    let mut up = false;
    for _ in 0..5_000 {
        a.turn(Duration::from_millis(1)).unwrap();
        b.turn(Duration::from_millis(1)).unwrap();
        if let Ok(NodeEvent::PeerUp { .. }) = events.try_recv(&mut buf) {
            up = true;
            break;
        }
    }
    assert!(up, "the queued connect ran");
    assert_eq!(a.handle_stats().commands, 4);
}

/// A connect carries its address and key through the command queue's bytes: a refused one
/// comes back as `ConnectFailed` naming exactly what was asked, every field of an IPv6
/// address included.
#[test]
fn a_refused_handle_connect_reports_the_address_and_key_it_was_given() {
    let mut a = node(23);
    let mut events = a.events();
    let handle = a.handle();
    let own_key = a.public_key();
    let v6: SocketAddr = SocketAddr::V6(std::net::SocketAddrV6::new(
        "fe80::1:2:3:4".parse().unwrap(),
        40_001,
        0x000a_bcde,
        7,
    ));
    let v4: SocketAddr = "192.0.2.9:65535".parse().unwrap();
    handle.connect(v6, own_key).unwrap();
    handle.connect(v4, own_key).unwrap();
    let mut buf = [0u8; 64];
    let mut failed = Vec::new();
    for _ in 0..1_000 {
        a.turn(Duration::from_millis(1)).unwrap();
        while let Ok(event) = events.try_recv(&mut buf) {
            if let NodeEvent::ConnectFailed {
                addr,
                public_key,
                error,
            } = event
            {
                failed.push((addr, public_key, error));
            }
        }
        if failed.len() == 2 {
            break;
        }
    }
    assert_eq!(
        failed,
        [
            (v6, own_key, ConnectError::SelfConnect),
            (v4, own_key, ConnectError::SelfConnect)
        ]
    );
    assert_eq!(a.handle_stats().connect_failed, 2);
}

/// `send_wait` turns a full command queue into a wait instead of an error: a producer
/// pushing far more than the queue holds through a running node never sees `QueueFull`,
/// and every message reaches the loop.
#[test]
fn send_wait_sleeps_through_a_full_queue_and_every_message_reaches_the_loop() {
    const N: u64 = 20_000;
    let mut a = node_with_command_queue(21, 8);
    let mut b = node(22);
    let peer = pair(&mut a, &mut b);
    let handle = a.handle();
    let stop = a.shutdown_handle();
    let a_thread = std::thread::spawn(move || {
        a.run_for(Duration::from_secs(300)).unwrap();
    });
    let producer = {
        let handle = handle.clone();
        std::thread::spawn(move || {
            for i in 0..N {
                let result = handle.send_wait(
                    peer,
                    Mode::Realtime,
                    &i.to_le_bytes(),
                    Duration::from_secs(60),
                );
                assert_eq!(result, Ok(()), "message {i}");
            }
        })
    };
    producer.join().unwrap();
    for _ in 0..2_000 {
        if handle.stats().commands == N {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.shutdown();
    a_thread.join().unwrap();
    let stats = handle.stats();
    assert_eq!(stats.commands, N, "{stats:?}");
    assert_eq!(stats.sent + stats.failed.total(), N, "{stats:?}");
    assert!(stats.batches >= N / 8, "at most 8 a batch: {stats:?}");
}

/// A waiter gives up at its deadline when the loop does not run, is woken when the loop
/// takes the queue, and is told when the node goes away.
#[test]
fn send_wait_gives_up_at_its_deadline_wakes_on_a_drain_and_sees_the_node_close() {
    let mut a = node_with_command_queue(23, 2);
    let handle = a.handle();
    handle.publish(Mode::Realtime, b"one").unwrap();
    handle.publish(Mode::Realtime, b"two").unwrap();
    // Nobody drains: the deadline passes and the message is not queued.
    assert_eq!(
        handle.publish_wait(Mode::Realtime, b"three", Duration::from_millis(20)),
        Err(HandleError::QueueFull(intentra::Full::Slots))
    );
    // A waiter with a long deadline is woken by the loop's next turn.
    let waiter = {
        let handle = handle.clone();
        std::thread::spawn(move || {
            handle.publish_wait(Mode::Realtime, b"three", Duration::from_secs(60))
        })
    };
    // Bounded in turns; whenever the waiter started waiting, the next turn that drains
    // the queue wakes it.
    for _ in 0..10_000 {
        if waiter.is_finished() {
            break;
        }
        a.turn(Duration::from_millis(1)).unwrap();
    }
    assert_eq!(waiter.join().unwrap(), Ok(()));
    // Full again, and the node goes away while a thread waits: it hears `Closed`.
    while handle.publish(Mode::Realtime, b"fill").is_ok() {}
    let waiter = {
        let handle = handle.clone();
        std::thread::spawn(move || {
            handle.publish_wait(Mode::Realtime, b"late", Duration::from_secs(60))
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    drop(a);
    assert_eq!(waiter.join().unwrap(), Err(HandleError::Closed));
}
