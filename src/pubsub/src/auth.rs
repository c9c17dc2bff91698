//! Authorization at a hub: which public key may publish or subscribe on which topic.
//!
//! Default deny: a request no rule allows is refused, so a forgotten rule fails closed.

use crate::MemberKey;

/// Whose requests a rule covers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyPattern {
    /// Every key (`*`).
    Any,
    /// One key.
    Key(MemberKey),
}

/// Which topics a rule covers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicPattern {
    /// Exactly this name.
    Exact(String),
    /// Every name that starts with this prefix (`md/` covers `md/btc-usd`); the
    /// empty prefix covers every topic.
    Prefix(String),
}

impl TopicPattern {
    /// Parses the configuration form: a trailing `*` makes a prefix (`md/*`, or `*`
    /// alone for every topic); anything else is an exact name.
    pub fn parse(s: &str) -> TopicPattern {
        match s.strip_suffix('*') {
            Some(prefix) => TopicPattern::Prefix(prefix.to_owned()),
            None => TopicPattern::Exact(s.to_owned()),
        }
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            TopicPattern::Exact(n) => n == name,
            TopicPattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

/// The permissions a rule grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Permissions {
    /// May advertise and publish.
    pub publish: bool,
    /// May subscribe.
    pub subscribe: bool,
}

/// One authorization rule: `key` may do `allow` on topics matching `topic`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Whose requests.
    pub key: KeyPattern,
    /// Which topics.
    pub topic: TopicPattern,
    /// What is allowed.
    pub allow: Permissions,
}

impl Rule {
    /// A rule letting every key publish and subscribe on every topic (for tests and
    /// closed networks where the transport's allow-list already authorizes).
    pub fn allow_all() -> Rule {
        Rule {
            key: KeyPattern::Any,
            topic: TopicPattern::Prefix(String::new()),
            allow: Permissions {
                publish: true,
                subscribe: true,
            },
        }
    }

    fn covers(&self, key: &MemberKey, topic: &str) -> bool {
        let key_ok = match &self.key {
            KeyPattern::Any => true,
            KeyPattern::Key(k) => k == key,
        };
        key_ok && self.topic.matches(topic)
    }
}

/// Whether `key` may publish (`publish == true`) or subscribe on `topic`: allowed
/// when any rule covering them grants it. Rules only grant; there is no deny rule,
/// so their order does not matter.
pub fn is_allowed(rules: &[Rule], key: &MemberKey, topic: &str, publish: bool) -> bool {
    rules.iter().any(|r| {
        r.covers(key, topic)
            && if publish {
                r.allow.publish
            } else {
                r.allow.subscribe
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_deny_and_prefixes() {
        let a = MemberKey([1; 32]);
        let b = MemberKey([2; 32]);
        let rules = [
            Rule {
                key: KeyPattern::Key(a),
                topic: TopicPattern::parse("md/*"),
                allow: Permissions {
                    publish: true,
                    subscribe: false,
                },
            },
            Rule {
                key: KeyPattern::Any,
                topic: TopicPattern::parse("md/btc-usd"),
                allow: Permissions {
                    publish: false,
                    subscribe: true,
                },
            },
        ];
        assert!(is_allowed(&rules, &a, "md/eth", true));
        assert!(!is_allowed(&rules, &b, "md/eth", true));
        assert!(!is_allowed(&rules, &a, "md/eth", false));
        assert!(is_allowed(&rules, &b, "md/btc-usd", false));
        assert!(!is_allowed(&rules, &a, "other", true));
        assert!(!is_allowed(&[], &a, "md/eth", false));
        assert!(is_allowed(&[Rule::allow_all()], &b, "x", true));
    }
}
