//! The checks of a configuration that need this host (the secret file, the interfaces and their
//! subnets, the control socket's path), shared by `check-config` and `run`: a file that
//! `check-config` calls valid is one that `run` accepts, and `run` refuses before touching
//! anything what `check-config` would name.

use crate::config::{ConfigProblem, NodeConfig};
use std::net::IpAddr;

pub fn check(cfg: &NodeConfig) -> Vec<ConfigProblem> {
    let f = &cfg.file;
    let mut out = Vec::new();
    let mut problem = |field: &str, reason: String| out.push(ConfigProblem { field: field.into(), reason });
    if let Err(e) = ridondato_adapters::auth_codec::Key::from_file(&f.node.secret_file) {
        problem("node.secret_file", e);
    }
    if let Some(Err(e)) = f.api.as_ref().map(|a| crate::api::auth::Token::from_file(&a.token_file)) {
        problem("api.token_file", e);
    }
    if let Some((cert, key)) = f.api.as_ref().and_then(|a| a.tls_cert_file.as_ref().zip(a.tls_key_file.as_ref())) {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(key).map(|m| m.permissions().mode() & 0o777) {
            Ok(mode) if mode & 0o077 != 0 => problem("api.tls_key_file", format!("{} is readable by others (mode {mode:o}): chmod 600 it", key.display())),
            _ => {}
        }
        // The error names the file (api.tls_cert_file or api.tls_key_file) and what is wrong.
        if let Err(e) = crate::api::serve::tls_config(cert, key) {
            problem("api.tls", e);
        }
    }
    // `run` replaces a socket left by an earlier run: never a file that is not a socket (a
    // typo could otherwise delete the configuration itself).
    if let Ok(meta) = std::fs::symlink_metadata(&f.node.control_socket) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            problem("node.control_socket", format!("{} exists and is not a socket: refusing to replace it", f.node.control_socket.display()));
        }
    }
    let ifaces = ridondato_adapters::lan::local_interfaces();
    let local = |ip: IpAddr| ifaces.iter().any(|(_, addrs)| addrs.iter().any(|(a, _)| *a == ip));
    if local(f.node.peer_ip) {
        problem("node.peer_ip", format!("{} is an address of this host, not the peer's", f.node.peer_ip));
    }
    if let Some(ip) = f.node.management_ip.filter(|ip| !local(*ip)) {
        problem("node.management_ip", format!("{ip} is not an address of this host"));
    }
    for (i, s) in f.shared_ips.iter().enumerate() {
        let Some((_, addrs)) = ifaces.iter().find(|(name, _)| *name == s.interface) else {
            let names: Vec<&str> = ifaces.iter().map(|(n, _)| n.as_str()).collect();
            problem(&format!("shared_ip[{i}].interface"), format!("no interface {} on this host (it has {})", s.interface, names.join(", ")));
            continue;
        };
        // An IPv4 VIP outside every subnet of its interface is not reachable by ARP from the
        // clients' LAN (IPv6 neighbours reach any on-link prefix: not checked).
        if s.address.is_ipv4() && !addrs.iter().any(|(a, p)| same_net(*a, s.address, (*p).min(s.prefix))) {
            let have: Vec<String> = addrs.iter().filter(|(a, _)| a.is_ipv4()).map(|(a, p)| format!("{a}/{p}")).collect();
            problem(
                &format!("shared_ip[{i}].address"),
                format!(
                    "{} is outside every IPv4 subnet of {} ({}): clients on that LAN would not reach it",
                    s.address,
                    s.interface,
                    if have.is_empty() { "none".into() } else { have.join(", ") }
                ),
            );
        }
    }
    out
}

fn same_net(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_compare_by_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(same_net(ip("198.18.4.1"), ip("198.18.4.100"), 24));
        assert!(!same_net(ip("198.18.4.1"), ip("198.18.5.100"), 24));
        assert!(same_net(ip("198.18.4.1"), ip("198.19.5.100"), 15));
    }
}
