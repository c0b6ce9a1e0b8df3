//! The connection table's eviction and idle time.

use super::*;

fn age(slot: &Slot, silent_ms: u64) {
    let now = u64::try_from(slot.start.elapsed().as_millis()).unwrap_or(0);
    // Pretend the table started long ago so that "silent for" can be set back.
    slot.active_ms
        .store(now.saturating_sub(silent_ms), Ordering::Relaxed);
}

fn table(max: usize) -> Table {
    let mut t = Table::new(max);
    t.start = Instant::now()
        .checked_sub(Duration::from_secs(3600))
        .unwrap_or(t.start);
    t
}

#[test]
fn at_the_cap_the_longest_silent_idle_connection_makes_room() {
    let t = table(3);
    let slots: Vec<Arc<Slot>> = (0..3).map(|_| t.admit().unwrap()).collect();
    age(&slots[0], 500);
    age(&slots[1], 9_000);
    age(&slots[2], 20_000);
    let _busy = InFlight::enter(slots[2].clone());
    let new = t.admit().unwrap();
    assert!(slots[1].evict.is_cancelled(), "the longest silent idle one");
    assert!(!slots[0].evict.is_cancelled() && !slots[2].evict.is_cancelled());
    assert_eq!(lock(&t.slots).len(), 3);
    assert!(!new.evict.is_cancelled());
}

#[test]
fn with_a_request_in_flight_everywhere_the_new_connection_is_refused() {
    let t = table(2);
    let a = t.admit().unwrap();
    let b = t.admit().unwrap();
    let busy = (InFlight::enter(a.clone()), InFlight::enter(b.clone()));
    assert!(t.admit().is_none());
    drop(busy);
    assert!(
        t.admit().is_some(),
        "a finished request makes its connection evictable"
    );
    t.release(&a);
    t.release(&b);
    assert!(lock(&t.slots).len() <= 1);
}

#[test]
fn idle_time_counts_from_the_last_byte_and_not_during_a_request() {
    let t = table(4);
    let s = t.admit().unwrap();
    age(&s, 3_000);
    assert!(s.idle_for().unwrap() >= Duration::from_millis(3_000));
    let request = InFlight::enter(s.clone());
    assert_eq!(s.idle_for(), None);
    drop(request);
    assert!(s.idle_for().unwrap() < Duration::from_millis(1_000));
}
