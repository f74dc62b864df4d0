//! A node's local clock under drift: local time runs at (1 + ppm/1e6) of simulated time.

#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    base_global: u64,
    base_local: u64,
    ppm: i64,
}

impl Clock {
    pub fn local(&self, global: u64) -> u64 {
        let dt = global.saturating_sub(self.base_global) as i128;
        let l = self.base_local as i128 + dt * (1_000_000 + self.ppm as i128) / 1_000_000;
        l.max(0) as u64
    }

    /// The first global instant at which local time reaches `local`.
    pub fn global(&self, local: u64) -> u64 {
        let dl = local.saturating_sub(self.base_local) as i128;
        let rate = (1_000_000 + self.ppm as i128).max(1);
        let dg = (dl * 1_000_000 + rate - 1) / rate;
        self.base_global + dg.max(0) as u64
    }

    pub fn set_ppm(&mut self, now: u64, ppm: i64) {
        self.base_local = self.local(now);
        self.base_global = now;
        self.ppm = ppm.clamp(-500_000, 500_000);
    }
}
