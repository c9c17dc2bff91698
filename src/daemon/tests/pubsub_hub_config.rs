//! The `[hub]` section: defaults, what it refuses (one worker, one socket, rule and
//! link syntax), and its conversion into the hub's configuration.

use intentra_daemon::config::Config;

fn check(toml: &str) -> Result<Config, String> {
    let config = Config::from_toml_str(toml).map_err(|e| e.to_string())?;
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

const KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";

#[test]
fn hub_section_defaults_and_round_trip() {
    let config = check("").unwrap();
    assert!(!config.hub.enabled);
    assert_eq!(config.hub.detection_time_ms, 3000);
    assert!(
        !config.to_toml_string().contains("[hub]"),
        "the default is not printed"
    );
    let text = format!(
        "[hub]\nenabled = true\nlinks = [\"{KEY}\"]\nlast_value_cache = true\n[[hub.rules]]\nkey = \"*\"\ntopic = \"md/*\"\nallow = [\"subscribe\"]\n"
    );
    let config = check(&text).unwrap();
    let again = check(&config.to_toml_string()).unwrap();
    assert_eq!(again.hub, config.hub);
    let hub = intentra_daemon::hub::hub_config(
        &config.hub,
        &"2222222222222222222222222222222222222222222222222222222222222222"
            .parse()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(hub.rules.len(), 1);
    assert!(hub.rules[0].allow.subscribe && !hub.rules[0].allow.publish);
    assert_eq!(hub.links.len(), 1);
    assert!(hub.last_value_cache);
    assert_eq!(hub.detection_time, std::time::Duration::from_secs(3));
}

#[test]
fn hub_section_refusals_name_the_key() {
    let cases = [
        (
            "[node]\nworkers = 2\n[hub]\nenabled = true\n",
            "node.workers must be 1",
        ),
        (
            "[node]\nbind = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n[hub]\nenabled = true\n",
            "node.bind must list exactly one",
        ),
        (
            "[hub]\ndetection_time_ms = 10\n",
            "hub.detection_time_ms must be between",
        ),
        ("[hub]\nlinks = [\"nope\"]\n", "hub.links"),
        (
            "[[hub.rules]]\nkey = \"bad\"\ntopic = \"a\"\nallow = [\"publish\"]\n",
            "hub.rules entry 1: key",
        ),
        (
            "[[hub.rules]]\nkey = \"*\"\ntopic = \"\"\nallow = [\"publish\"]\n",
            "hub.rules entry 1: topic",
        ),
        (
            "[[hub.rules]]\nkey = \"*\"\ntopic = \"a\"\nallow = [\"write\"]\n",
            "hub.rules entry 1: allow",
        ),
        ("[hub]\nbogus = 1\n", "bogus"),
    ];
    for (toml, needle) in cases {
        let err = check(toml).unwrap_err();
        assert!(err.contains(needle), "{toml:?}: {err}");
    }
    // Several workers are fine without a hub.
    check("[node]\nworkers = 2\n").unwrap();
}

#[test]
fn hub_transport_timers_follow_the_detection_time_with_a_keepalive_members_can_hear() {
    use std::time::Duration;
    let node = |detection_ms: u64| {
        let config = check(&format!(
            "[hub]\nenabled = true\ndetection_time_ms = {detection_ms}\n"
        ))
        .unwrap();
        let keys = intentra::proto::Keypair::generate(&mut rand_core::OsRng);
        let mut node = intentra::NodeConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            intentra::proto::EndpointConfig::new(keys),
        );
        intentra_daemon::hub::adjust_node_config(&config, &mut node);
        (node.endpoint.keepalive_interval, node.endpoint.idle_timeout)
    };
    assert_eq!(node(3000), (Duration::from_secs(1), Duration::from_secs(9)));
    // A long detection time keeps the keepalive under a member's 10 s idle timeout.
    assert_eq!(
        node(60_000),
        (Duration::from_secs(3), Duration::from_secs(180))
    );
}
