//! `just bench-db` (failover row): N Master power losses under a client writing through the VIP,
//! on two real daemons and two real mariadbd in the network-namespace lab, in the default mode
//! (semi-sync) and in async mode side by side. Per trial: the write outage the client saw (the
//! longest time between two acknowledged inserts), the acknowledged rows missing on the new
//! Master, and what the new Master reported as possibly missing. Needs root (namespaces).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;
use support::*;

struct Trial {
    outage_ms: u64,
    acked: usize,
    lost: usize,
    reported: String,
}

fn trial(tag: &str, semi_sync: bool) -> Trial {
    let extra = if semi_sync { "" } else { "semi_sync = false\n" };
    let (mut lab, mut sa, sb, rt) = db_lab(tag, extra);
    if semi_sync {
        wait_for("semi-sync active on the Master", Duration::from_secs(10), || db_flag(&lab, "a", "semi_sync_active"));
    }
    let (mut writer, ids) = start_writer(&lab);
    wait_for("the client writes", Duration::from_secs(10), || acked_and_outage(&ids).0.len() >= 50);
    power_loss(&mut lab, "a", &mut sa);
    wait_for("b takes over with a writable database", Duration::from_secs(15), || db_flag(&lab, "b", "db_writable"));
    wait_more_acks("the client writes again", &ids, 50, Duration::from_secs(15));
    let _ = writer.kill();
    let _ = writer.wait();
    let (acked, outage_ms) = acked_and_outage(&ids);
    let present = ids_on(&rt, &sb);
    let lost = acked.iter().filter(|i| !present.contains(i)).count();
    let log = lab.log("b");
    let reported = log
        .lines()
        .find_map(|l| l.split_once("promoted at ").map(|(_, r)| r.split(" node=").next().unwrap_or(r).trim().to_string()))
        .unwrap_or_else(|| "no promotion line".into());
    Trial { outage_ms, acked: acked.len(), lost, reported }
}

fn main() {
    // `cargo bench` passes harness flags such as `--bench`; the only argument we take is N.
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5);
    if !lab_available() {
        return;
    }
    println!("Master power loss under writes through the VIP, {n} trials per mode");
    println!("{:<10} {:>5} {:>11} {:>8} {:>6}  new Master reported", "mode", "trial", "outage ms", "acked", "lost");
    let mut rows = Vec::new();
    for (mode, semi) in [("semi-sync", true), ("async", false)] {
        let mut outages = Vec::new();
        let mut lost = 0;
        for i in 0..n {
            let t = trial(&format!("f{}{i}", &mode[..1]), semi);
            println!("{mode:<10} {i:>5} {:>11} {:>8} {:>6}  {}", t.outage_ms, t.acked, t.lost, t.reported);
            outages.push(t.outage_ms);
            lost += t.lost;
        }
        outages.sort_unstable();
        rows.push((mode, outages[outages.len() / 2], outages[outages.len() - 1], lost));
    }
    println!();
    println!("{:<10} {:>14} {:>14} {:>20}", "mode", "outage p50 ms", "outage max ms", "lost acked rows");
    for (mode, p50, max, lost) in rows {
        println!("{mode:<10} {p50:>14} {max:>14} {lost:>20}");
    }
    println!("target: zero lost with semi-sync (the default), outage p50 <= 1500 ms");
}
