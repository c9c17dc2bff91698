//! `check-config`'s output: every option, set or not, under a comment saying
//! what it does.
//!
//! Owns `OPTIONS`, the one table of every key with its meaning and, for the
//! optional ones, what leaving it unset means. Set values are printed from the
//! serialized `Config` (so the output parses back to an equal `Config`); unset
//! ones are printed commented out. A test checks that every serialized key is
//! in the table, so a new option cannot be forgotten here.

use std::fmt::Write as _;

use super::Config;

/// One option: `[section] key`, what it does, and for an optional key the
/// commented-out lines printed when it is unset.
pub(crate) struct OptionDoc {
    pub section: &'static str,
    pub key: &'static str,
    pub doc: &'static str,
    pub unset: Option<&'static str>,
}

const fn opt(section: &'static str, key: &'static str, doc: &'static str) -> OptionDoc {
    OptionDoc {
        section,
        key,
        doc,
        unset: None,
    }
}

const fn unset(
    section: &'static str,
    key: &'static str,
    doc: &'static str,
    example: &'static str,
) -> OptionDoc {
    OptionDoc {
        section,
        key,
        doc,
        unset: Some(example),
    }
}

pub(crate) const SECTIONS: [&str; 7] = ["node", "io", "limits", "timers", "metrics", "log", "hub"];

pub(crate) const OPTIONS: &[OptionDoc] = &[
    opt("node", "bind", "UDP addresses to listen on; one socket per address and worker."),
    opt("node", "workers", "Worker threads per bind address (SO_REUSEPORT), 1 to 256."),
    unset("node", "key_file", "Secret key file (hex, mode 0600); required by serve. Relative paths are relative to this file's directory.",
          "key_file = \"intentra.key\"   # unset: serve refuses to start"),
    unset("node", "allow_list", "Allow-list: one hex public key per line, # comments; SIGHUP reloads it. Relative to this file's directory.",
          "allow_list = \"allow-list\"   # unset: any peer key is accepted"),
    opt("node", "allow_list_empty_ok", "Accept an allow-list with no keys (refuses every peer); otherwise such a list is an error."),
    opt("node", "bundling", "Smart batching: messages queued together for one peer, and a hub's relays to one peer from one receive batch, go out in as few datagrams as fit (PROTOCOL.md 7.5); a lone message is never delayed. Bundles are received either way."),
    unset("node", "capture", "Write every datagram sent and received to this pcap file, keys to FILE.keylog; with several workers (node.peers counts as one) FILE.worker0, FILE.worker1, ...",
          "capture = \"intentra.pcap\"   # unset: no capture"),
    unset("node", "capture_max_bytes", "Rotate the capture to FILE.1, FILE.2, ... once it would grow past this many bytes.",
          "capture_max_bytes = 1073741824   # unset: one capture file, no size limit"),
    unset("node", "capture_keep", "Rotated capture files kept (FILE.1 newest); older ones are deleted.",
          "capture_keep = 4   # unset: 4"),
    unset("node", "peers", "Peers to keep connected, as [[node.peers]] tables with address and public_key; redialled after every loss.",
          "[[node.peers]]\naddress = \"192.0.2.10:7700\"\npublic_key = \"<64 hex characters>\"   # unset: no outbound peers"),
    opt("io", "driver", "Datagram I/O: auto (io_uring, else mmsg), uring, mmsg, basic."),
    opt("io", "idle", "What an idle worker does: block, backoff, spin (one core at 100%)."),
    opt("io", "batch_size", "Datagrams per receive or send call, 1 to 1024."),
    opt("io", "buffers", "Send slots per worker, at least batch_size."),
    opt("io", "buffer_size", "Bytes per datagram buffer, 1024 to 65535."),
    opt("io", "recv_buffer_bytes", "SO_RCVBUF in bytes: room for bursts and floods while a worker waits for a core (capped by net.core.rmem_max, with a warning)."),
    unset("io", "send_buffer_bytes", "SO_SNDBUF in bytes.",
          "send_buffer_bytes = 8388608   # unset: the kernel default (net.core.wmem_default)"),
    opt("io", "gso", "Use UDP segmentation offload when the kernel has it (falls back at run time)."),
    opt("io", "gro", "Use UDP receive offload when the kernel has it."),
    unset("io", "busy_poll_us", "SO_BUSY_POLL in microseconds.",
          "busy_poll_us = 50   # unset: no busy polling"),
    unset("io", "pin_cores", "One CPU per worker, in worker order.",
          "pin_cores = [2, 3]   # unset: workers are not pinned"),
    opt("limits", "rate_pps", "Per-peer token bucket: packets per second, before any cryptography."),
    opt("limits", "rate_burst", "Per-peer token bucket depth."),
    opt("limits", "handshakes_in_flight", "Handshakes being answered at once; past it a cookie is demanded, and a cookie-proven handshake displaces one that proved nothing."),
    opt("limits", "handshakes_per_ip", "Handshakes in flight from one source (IPv4 address or IPv6 /64), at most handshakes_in_flight; past it a cookie is demanded."),
    opt("limits", "always_cookie", "Demand a cookie round trip for every handshake, not only under load."),
    opt("limits", "handshake_rate", "Handshakes per second answered without a cookie, in total; past it (and the burst) every new handshake must prove its address."),
    opt("limits", "handshake_burst", "Handshakes answered without a cookie in a burst, in total."),
    opt("limits", "handshake_rate_per_source", "Handshakes per second for one source (IPv4 address or IPv6 /64), without a cookie and separately with one."),
    opt("limits", "handshake_burst_per_source", "Handshakes one source gets in a burst, without a cookie and separately with one."),
    opt("limits", "handshake_sources", "Sources whose handshake rates are tracked at once (a new source that finds no room must prove its address)."),
    opt("limits", "strike_threshold", "Protocol violations before a session is closed (strikes)."),
    opt("limits", "strike_decay_ms", "One strike is forgiven per this many milliseconds."),
    opt("limits", "max_peers", "Sessions one worker holds at most."),
    opt("limits", "reliable_queue_bytes", "Bytes of Reliable messages queued per peer (x max_peers at most 4 GiB)."),
    opt("timers", "keepalive_ms", "Keepalive interval of an idle session."),
    opt("timers", "idle_timeout_ms", "A session with nothing authenticated for this long is closed (idle_timeout)."),
    opt("timers", "handshake_timeout_ms", "A handshake not completed in this time is abandoned (handshake_timeout)."),
    opt("timers", "handshake_retry_ms", "First handshake retransmission delay; doubles per retry."),
    opt("timers", "handshake_retry_max_ms", "Longest handshake retransmission delay."),
    opt("timers", "previous_keys_linger_ms", "How long replaced keys still open packets in flight after a rekey."),
    opt("timers", "rekey_after_s", "Session keys are renewed after this many seconds."),
    opt("timers", "reject_after_s", "Keys older than this are refused; more than rekey_after_s."),
    opt("timers", "redial_initial_ms", "First delay before redialling a lost configured peer; doubles per failure, with jitter."),
    opt("timers", "redial_max_ms", "Longest delay between two redials of a configured peer."),
    opt("metrics", "listen", "Prometheus endpoint (GET /metrics, /health) address, or \"off\"."),
    opt("metrics", "per_peer", "Export one series per peer (cardinality grows with the peers)."),
    opt("metrics", "publish_interval_ms", "How often workers publish their counters to the endpoint."),
    opt("log", "level", "A level (error, warn, info, debug, trace, off) or target=level directives, comma-separated."),
    opt("log", "format", "text (no colours unless stderr is a terminal) or json (one object per line)."),
    opt("hub", "enabled", "Run as a publish/subscribe hub (PROTOCOL.md section 19): one worker on one bind address."),
    unset("hub", "links", "Public keys (hex) of the hubs this hub links with; dial them with [[node.peers]] on one side or both.",
          "links = [\"<64 hex characters>\"]   # unset: no linked hubs"),
    opt("hub", "last_value_cache", "Send each new subscriber the topic's last relayed publish."),
    opt("hub", "detection_time_ms", "A member or link not heard from for this long is reported down (silent)."),
    opt("hub", "backlog_per_peer", "Reliable messages held per peer while the transport is full; one more closes the session."),
    opt("hub", "tick_ms", "How often queued Reliable messages are retried and hub timers run."),
    opt("hub", "max_topics", "Most topics the hub tracks."),
    opt("hub", "max_memberships_per_member", "Most subscriptions plus advertisements per member."),
    opt("hub", "per_topic_metrics", "Export per-topic series (members, publishes accepted and relayed) for intentra status."),
    unset("hub", "rules", "Who may publish and subscribe on what, as [[hub.rules]] tables with key (hex or \"*\"), topic (a name or a prefix ending in *) and allow; default deny.",
          "[[hub.rules]]\nkey = \"*\"\ntopic = \"sensors/*\"\nallow = [\"publish\", \"subscribe\"]   # unset: nobody may publish or subscribe"),
];

/// Renders the configuration; see `Config::to_annotated_toml`.
pub(crate) fn render(config: &Config) -> String {
    let mut value = match toml::Value::try_from(config) {
        Ok(toml::Value::Table(table)) => table,
        Ok(_) | Err(_) => return config.to_toml_string(),
    };
    // `[hub]` is left out of the file form while it is all defaults; printed here in full.
    if let Ok(hub) = toml::Value::try_from(&config.hub) {
        value.insert("hub".to_owned(), hub);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# intentra configuration: every option, with its effective value.\n\
         # Commented-out lines are unset options, with what leaving them unset means."
    );
    for section in SECTIONS {
        let table = value.get(section).and_then(toml::Value::as_table);
        let _ = writeln!(out, "\n[{section}]");
        for doc in OPTIONS
            .iter()
            .filter(|d| d.section == section && !is_table_array(d))
        {
            let _ = writeln!(out, "# {}", doc.doc);
            if let Some(note) = overridden(config, doc) {
                let _ = writeln!(out, "# {note}");
            }
            match table.and_then(|t| t.get(doc.key)) {
                Some(v) => {
                    let _ = writeln!(out, "{} = {v}", doc.key);
                }
                None => commented(&mut out, doc.unset.unwrap_or(doc.key)),
            }
        }
        // Arrays of tables close their section, so they come after its plain keys.
        for doc in OPTIONS
            .iter()
            .filter(|d| d.section == section && is_table_array(d))
        {
            render_table_array(&mut out, doc, table);
        }
    }
    out
}

/// What the daemon runs with instead of the option's value, when something else decides
/// it: a hub derives its sessions' timers from `hub.detection_time_ms`.
fn overridden(config: &Config, doc: &OptionDoc) -> Option<String> {
    if !config.hub.enabled || doc.section != "timers" {
        return None;
    }
    let (keepalive, idle_timeout) = crate::hub::session_timers(config.hub.detection_time_ms);
    let effective = match doc.key {
        "keepalive_ms" => keepalive,
        "idle_timeout_ms" => idle_timeout,
        _ => return None,
    };
    Some(format!(
        "[hub] is enabled: the hub runs with {} ms, from hub.detection_time_ms ({} ms), whatever is set here.",
        effective.as_millis(),
        config.hub.detection_time_ms
    ))
}

/// `[[node.peers]]` and `[[hub.rules]]`: printed as tables of their own.
fn is_table_array(doc: &OptionDoc) -> bool {
    matches!((doc.section, doc.key), ("node", "peers") | ("hub", "rules"))
}

fn render_table_array(out: &mut String, doc: &OptionDoc, section: Option<&toml::Table>) {
    let entries = section
        .and_then(|t| t.get(doc.key))
        .and_then(toml::Value::as_array);
    let _ = writeln!(out, "# {}", doc.doc);
    match entries {
        Some(entries) if !entries.is_empty() => {
            for entry in entries.iter().filter_map(toml::Value::as_table) {
                let _ = writeln!(out, "[[{}.{}]]", doc.section, doc.key);
                for (key, value) in entry {
                    let _ = writeln!(out, "{key} = {value}");
                }
            }
        }
        _ => commented(out, doc.unset.unwrap_or(doc.key)),
    }
}

/// An unset option's example, each line commented out.
fn commented(out: &mut String, example: &str) {
    for line in example.lines() {
        let _ = writeln!(out, "# {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key the serializer can write is documented, and nothing else is.
    #[test]
    fn every_serialized_key_is_documented() {
        let mut config = Config::default();
        config.node.key_file = Some("k".into());
        config.node.allow_list = Some("a".into());
        config.node.capture = Some("c".into());
        config.node.capture_max_bytes = Some(1 << 20);
        config.node.capture_keep = Some(2);
        config.node.peers.push(super::super::PeerConfig {
            address: "127.0.0.1:1".parse().unwrap(),
            public_key: "11".repeat(32).parse().unwrap(),
        });
        config.io.recv_buffer_bytes = Some(1 << 20);
        config.io.send_buffer_bytes = Some(1 << 20);
        config.io.busy_poll_us = Some(5);
        config.io.pin_cores = Some(vec![0]);
        config.hub.links = vec!["a".to_owned()];
        config.hub.rules.push(super::super::HubRule {
            key: "*".to_owned(),
            topic: "sensors/*".to_owned(),
            allow: vec!["publish".to_owned()],
        });
        let Ok(toml::Value::Table(table)) = toml::Value::try_from(&config) else {
            panic!("config serializes to a table");
        };
        let mut serialized = Vec::new();
        for (section, keys) in &table {
            assert!(SECTIONS.contains(&section.as_str()), "{section}");
            for key in keys.as_table().unwrap().keys() {
                serialized.push((section.clone(), key.clone()));
            }
        }
        for (section, key) in &serialized {
            assert!(
                OPTIONS.iter().any(|d| d.section == section && d.key == key),
                "{section}.{key} is not documented in OPTIONS"
            );
        }
        for doc in OPTIONS {
            assert!(
                serialized
                    .iter()
                    .any(|(s, k)| s == doc.section && k == doc.key),
                "{}.{} is documented but not an option",
                doc.section,
                doc.key
            );
        }
        let printed = render(&config);
        assert_eq!(
            Config::from_toml_str(&printed).unwrap(),
            config,
            "{printed}"
        );
        // Found by the config fuzz target: a set [hub] section was left out.
        let mut with_hub = config.clone();
        with_hub.hub.enabled = true;
        let printed = render(&with_hub);
        assert_eq!(
            Config::from_toml_str(&printed).unwrap(),
            with_hub,
            "{printed}"
        );
        // Every option is printed, set or not: unset ones commented out, each line of an
        // example table commented, and [hub] in full even at its defaults.
        let defaults = render(&Config::default());
        assert_eq!(Config::from_toml_str(&defaults).unwrap(), Config::default());
        for doc in OPTIONS {
            assert!(
                defaults.contains(doc.key),
                "{} missing:\n{defaults}",
                doc.key
            );
        }
        // A hub's session timers come from its detection time: the output says so.
        let hub_printed = render(&with_hub);
        assert!(
            hub_printed.contains("# [hub] is enabled: the hub runs with 9000 ms"),
            "{hub_printed}"
        );
        assert!(!defaults.contains("[hub] is enabled"));
        for line in [
            "# key_file = ",
            "# capture_max_bytes = ",
            "# capture_keep = ",
            "# [[node.peers]]\n# address = ",
            "[hub]\n",
            "detection_time_ms = 3000\n",
            "# [[hub.rules]]\n# key = ",
        ] {
            assert!(defaults.contains(line), "{line:?} missing:\n{defaults}");
        }
    }
}
