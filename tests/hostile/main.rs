//! Hostile input, tried as an attacker would: floods of forged senders, long
//! and made-up host names, 64 KB datagrams while a sink is down, and garbage at
//! full speed. Each test asserts the bound the README promises (log lines
//! within the global budget, memory within the worst-case formula).
//!
//! A test binary of its own, and its tests run one at a time, so that what
//! they measure (loss, peak memory) is not disturbed by the other end-to-end
//! tests running beside them.

#[allow(dead_code)]
#[path = "../e2e/harness/mod.rs"]
mod harness;

mod floods;
mod memory;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Held by each test for its whole run.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}
