//! What the targets share: one monitor on a temporary store, opened once
//! per fuzzing process, with a manual clock and no background threads.

use std::sync::{Arc, OnceLock};

use scopemon::{Config, ManualClock, Monitor};

/// The fixed time of the fixture's clock (2023-11-14T22:13:50Z, 30 s into
/// its minute), the `now` of `now-5m` and of timestamp checks.
pub const NOW_MS: i64 = 1_700_000_030_000;

pub struct Fixture {
    pub monitor: Monitor,
    _dir: tempfile::TempDir,
}

/// The shared monitor. Its series limits are small and its hot cap 8 MiB,
/// so a long run neither grows without bound nor spends its time in
/// registries of a million series; callers flush when it is at the cap.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = Config::with_data_dir(dir.path());
        config.storage.series_limit = 512;
        config.storage.series_limit_per_namespace = 128;
        config.storage.max_hot_bytes = 8 << 20;
        let monitor = Monitor::builder(config)
            .clock(Arc::new(ManualClock::new(NOW_MS)))
            .background(false)
            .open()
            .expect("the fixture's store opens");
        Fixture { monitor, _dir: dir }
    })
}
