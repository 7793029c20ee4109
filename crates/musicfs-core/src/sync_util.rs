//! Locks that a panicking holder does not poison for everyone else (2.9): one home for the "recover a
//! poisoned lock" idiom every crate uses instead of `lock().unwrap()`.
//!
//! Why recovering is safe here: a `std` lock is poisoned when a thread panics while holding it, and from
//! then on every `lock()` returns an error. Unwrapping that error would turn one panicking request into a
//! filesystem that panics on every request after it. MusicFS's locks guard state that is valid between any
//! two statements that change it: a value swapped in whole (the tree, a mode), a map or list that an insert
//! or remove leaves whole, counters and timestamps, or a SQLite connection whose unfinished transaction
//! rusqlite rolls back when it is dropped. None of them is left half-updated by a panic, so the guard a
//! poisoned lock still hands out ([`PoisonError::into_inner`]) is as good as any other. A lock guarding
//! state that a panic *could* leave half-written must not use these helpers.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `mutex.lock()`, taking the guard from a poisoned lock too (see the module doc for why that is safe).
pub fn lock_or_recover<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `lock.read()`, taking the guard from a poisoned lock too (see the module doc for why that is safe).
pub fn read_or_recover<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// `lock.write()`, taking the guard from a poisoned lock too (see the module doc for why that is safe).
pub fn write_or_recover<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// `mutex.into_inner()`, taking the value from a poisoned mutex too (see the module doc for why that is safe).
pub fn into_inner_or_recover<T>(mutex: Mutex<T>) -> T {
    mutex.into_inner().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The helpers' own check; 2.9 itself is proven on the filesystem (`crates/musicfs-fuse/src/fs.rs`).
    #[test]
    fn a_lock_poisoned_by_a_panicking_holder_still_hands_out_its_value() {
        let mutex = Arc::new(Mutex::new(vec![1]));
        let rw = Arc::new(RwLock::new(1));
        let (m, r) = (mutex.clone(), rw.clone());
        let panicked = std::thread::spawn(move || {
            let _held = m.lock();
            let _written = r.write();
            panic!("a holder panics");
        })
        .join();
        assert!(panicked.is_err() && mutex.is_poisoned() && rw.is_poisoned(), "both locks really are poisoned");

        lock_or_recover(&mutex).push(2);
        assert_eq!(*lock_or_recover(&mutex), [1, 2]);
        *write_or_recover(&rw) += 1;
        assert_eq!(*read_or_recover(&rw), 2);
        let mutex = Arc::try_unwrap(mutex).unwrap();
        assert_eq!(into_inner_or_recover(mutex), [1, 2]);
    }
}
