//! Health checks for load balancers, as Patroni answers them: 200 only where the answer is
//! "send traffic here", 503 otherwise, with a small JSON body saying why. No token needed.

use ridondato_core::{Components, Mode, NodeId, Role, Status};

/// What the checks need to know of the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Facts {
    pub components: Components,
    pub mode: Mode,
    pub node: NodeId,
}

/// `/master`: the Master with its address held (VIP, or the public IP in cloud mode) and its
/// services running.
pub fn master(s: &Status, f: &Facts) -> (bool, String) {
    let address = match f.mode {
        Mode::Lan => !f.components.vip || s.vip_held,
        // Proven by the API, not assumed: unknown is not held.
        Mode::Cloud => s.cloud_holder == Some(f.node),
    };
    let services = !f.components.services || s.services_running;
    let why = match (s.role == Role::Master, address, services) {
        (false, _, _) => format!("this node is {}", s.role),
        (true, false, _) => "Master without its address".to_string(),
        (true, true, false) => "Master, services not running".to_string(),
        (true, true, true) => "Master".to_string(),
    };
    (why == "Master", why)
}

/// `/slave[?lag=MS]`: a Slave that hears its Master, replicates, needs no resync, and (if
/// asked) lags by no more than `max_lag_ms`.
pub fn slave(s: &Status, f: &Facts, max_lag_ms: Option<u64>) -> (bool, String) {
    let why = if s.role != Role::Slave {
        format!("this node is {}", s.role)
    } else if !s.peer.alive || s.peer.role != Some(Role::Master) {
        "Slave without a Master heard".to_string()
    } else if s.needs_resync {
        "Slave waiting for a resync".to_string()
    } else if f.components.db && !s.db_replicating {
        "Slave whose database does not replicate".to_string()
    } else if let (Some(max), Some(lag)) = (max_lag_ms, s.db_lag_ms) {
        if lag > max {
            format!("Slave lagging {lag} ms (more than {max})")
        } else {
            "Slave".to_string()
        }
    } else if max_lag_ms.is_some() && f.components.db && s.db_lag_ms.is_none() {
        "Slave whose lag is unknown".to_string()
    } else {
        "Slave".to_string()
    };
    (why == "Slave", why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridondato_core::{Config, Node};

    fn facts(db: bool) -> Facts {
        Facts { components: Components { vip: true, db, mongo: false, fs: false, services: true }, mode: Mode::Lan, node: NodeId(1) }
    }

    fn status(role: Role) -> Status {
        let mut s = Node::new(Config::lan(NodeId(1), NodeId(2))).status();
        s.role = role;
        s
    }

    #[test]
    fn master_needs_the_role_the_address_and_the_services() {
        let mut s = status(Role::Master);
        assert_eq!(master(&s, &facts(false)), (false, "Master without its address".into()));
        s.vip_held = true;
        assert_eq!(master(&s, &facts(false)), (false, "Master, services not running".into()));
        s.services_running = true;
        assert_eq!(master(&s, &facts(false)), (true, "Master".into()));
        assert!(!master(&status(Role::Slave), &facts(false)).0);
    }

    #[test]
    fn slave_needs_a_master_replication_and_the_lag_asked_for() {
        let mut s = status(Role::Slave);
        assert_eq!(slave(&s, &facts(true), None).1, "Slave without a Master heard");
        s.peer.alive = true;
        s.peer.role = Some(Role::Master);
        assert_eq!(slave(&s, &facts(true), None).1, "Slave whose database does not replicate");
        s.db_replicating = true;
        assert_eq!(slave(&s, &facts(true), None), (true, "Slave".into()));
        assert_eq!(slave(&s, &facts(true), Some(100)).1, "Slave whose lag is unknown");
        s.db_lag_ms = Some(250);
        assert_eq!(slave(&s, &facts(true), Some(100)).1, "Slave lagging 250 ms (more than 100)");
        assert!(slave(&s, &facts(true), Some(300)).0);
        s.needs_resync = true;
        assert!(!slave(&s, &facts(true), None).0);
    }
}
