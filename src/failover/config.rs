//! The `[failover]` settings: which routing table, route protocol, rule
//! priorities and firewall mark meshnode uses for gateway failover.
//!
//! Plain values with documented defaults; the config loader fills them and
//! [`FailoverConfig::validate`] rejects values that would make meshnode touch
//! the kernel's own tables or rules.

use super::FailoverError;

/// Where meshnode puts its failover state in the kernel. Everything meshnode
/// installs carries these tags, and only state with these tags is ever
/// removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FailoverConfig {
    /// Routing table holding the failover default route. Default 7734, an
    /// arbitrary number far from the kernel's reserved 253 (`default`), 254
    /// (`main`) and 255 (`local`) and from small numbers that admins and
    /// other daemons tend to pick. 0 and 253..=255 are rejected.
    pub table: u32,
    /// Route and rule protocol number (`proto` in `ip route` / `ip rule`)
    /// tagging everything meshnode installs. Default 158, unassigned in
    /// `/etc/iproute2/rt_protos`. 0..=4 (unspec, redirect, kernel, boot,
    /// static) are rejected: they are what other tools use.
    pub protocol: u8,
    /// `P`: priority of the `lookup main suppress_prefixlength 0` rule; the
    /// fwmark rule uses `P - 1` and the rule for our table `P + 1`. Default
    /// 7734: after the `local` rule (0), well before `main` (32766), which
    /// all three must precede. Must be within 2..=32764.
    pub rule_priority: u32,
    /// Firewall mark (SO_MARK) of sockets that must always use the node's own
    /// uplink, i.e. connectivity probes (see [`super::mark_socket`]).
    /// Default 0x6d6e ("mn"). Must not be 0: a rule for mark 0 would match
    /// every unmarked packet and disable failover.
    pub fwmark: u32,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            table: 7734,
            protocol: 158,
            rule_priority: 7734,
            fwmark: 0x6d6e,
        }
    }
}

impl FailoverConfig {
    /// Priority of the `fwmark <mark> lookup main` rule (`P - 1`).
    pub fn mark_rule_priority(&self) -> u32 {
        self.rule_priority.saturating_sub(1)
    }

    /// Priority of the `lookup main suppress_prefixlength 0` rule (`P`).
    pub fn suppress_rule_priority(&self) -> u32 {
        self.rule_priority
    }

    /// Priority of the `lookup <table>` rule (`P + 1`).
    pub fn table_rule_priority(&self) -> u32 {
        self.rule_priority.saturating_add(1)
    }

    /// True when `priority` is one of the three rule priorities of ours.
    pub fn is_our_priority(&self, priority: u32) -> bool {
        (self.mark_rule_priority()..=self.table_rule_priority()).contains(&priority)
    }

    /// Checks the values; the error names the field and why it is refused.
    pub fn validate(&self) -> Result<(), FailoverError> {
        let invalid = |msg: String| Err(FailoverError::InvalidConfig(msg));
        if self.table == 0 || (253..=255).contains(&self.table) {
            return invalid(format!(
                "table {} is reserved by the kernel (0 unspec, 253 default, 254 main, 255 local)",
                self.table
            ));
        }
        if self.protocol <= 4 {
            return invalid(format!(
                "protocol {} is reserved (0 unspec, 1 redirect, 2 kernel, 3 boot, 4 static); \
                 pick an unassigned number from /etc/iproute2/rt_protos",
                self.protocol
            ));
        }
        if !(2..=32764).contains(&self.rule_priority) {
            return invalid(format!(
                "rule_priority {} out of range 2..=32764 (rules use P-1, P and P+1, \
                 after the local rule 0 and before the main rule 32766)",
                self.rule_priority
            ));
        }
        if self.fwmark == 0 {
            return invalid(
                "fwmark 0 would match every unmarked packet and disable failover".to_string(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = FailoverConfig::default();
        assert_eq!(
            (c.table, c.protocol, c.rule_priority, c.fwmark),
            (7734, 158, 7734, 0x6d6e)
        );
        c.validate().expect("defaults are valid");
        assert_eq!(
            (
                c.mark_rule_priority(),
                c.suppress_rule_priority(),
                c.table_rule_priority()
            ),
            (7733, 7734, 7735)
        );
        assert!(c.is_our_priority(7733) && c.is_our_priority(7735));
        assert!(!c.is_our_priority(7732) && !c.is_our_priority(7736));
    }

    #[test]
    fn reserved_values_are_rejected() {
        let d = FailoverConfig::default();
        for bad in [
            FailoverConfig { table: 254, ..d },
            FailoverConfig { table: 0, ..d },
            FailoverConfig { table: 255, ..d },
            FailoverConfig { protocol: 4, ..d },
            FailoverConfig { protocol: 0, ..d },
            FailoverConfig {
                rule_priority: 1,
                ..d
            },
            FailoverConfig {
                rule_priority: 32765,
                ..d
            },
            FailoverConfig { fwmark: 0, ..d },
        ] {
            let err = bad.validate().expect_err("must be rejected");
            assert!(
                matches!(err, FailoverError::InvalidConfig(_)),
                "{bad:?}: {err}"
            );
        }
        FailoverConfig {
            table: 256,
            protocol: 5,
            rule_priority: 2,
            fwmark: 1,
        }
        .validate()
        .expect("edge values are fine");
    }
}
