//! The event bus (3.3): the daemon announces what changed (library synced, origin up or down) and consumers
//! react (the kernel-cache invalidator, `musicfs events` watchers).
//!
//! Each consumer has its own queue of `events.capacity` entries, and chooses what happens when it falls
//! behind:
//! - [`Guarantee::Lossless`] (critical consumers): the publisher waits for room, up to [`LOSSLESS_WAIT`]. A
//!   consumer stuck longer than that loses the event, and its next [`Subscription::next`] says so.
//! - [`Guarantee::Lossy`]: events that do not fit are dropped.
//!
//! Either way no loss is silent. It is counted per consumer (`musicfs_events_lost_total`), logged, and
//! handed to the consumer as [`Delivery::Lost`], so that it resynchronises from the source of truth.

use crate::sync_util::lock_or_recover;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a publisher waits for a lossless consumer that is behind.
pub const LOSSLESS_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Guarantee {
    Lossless,
    Lossy,
}

/// What a consumer gets next.
#[derive(Debug, PartialEq)]
pub enum Delivery<E> {
    Event(E),
    /// This many events were lost since the last delivery: resynchronise.
    Lost(u64),
    /// The bus is gone (shutdown).
    Closed,
}

/// One consumer's counters, as `musicfs status` and the metrics show them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConsumerStats {
    pub consumer: String,
    pub guarantee: Guarantee,
    pub delivered: u64,
    pub lost: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    lost: AtomicU64,
    /// Lost and not yet reported to the consumer.
    unreported: AtomicU64,
}

struct Consumer<E> {
    name: String,
    guarantee: Guarantee,
    tx: mpsc::Sender<E>,
    counters: Arc<Counters>,
}

pub struct EventBus<E> {
    capacity: usize,
    lossless_wait: Duration,
    consumers: Mutex<Vec<Consumer<E>>>,
    /// Counters of consumers that went away, so totals never go down.
    departed: Mutex<Vec<ConsumerStats>>,
    published: AtomicU64,
}

pub struct Subscription<E> {
    name: String,
    rx: mpsc::Receiver<E>,
    counters: Arc<Counters>,
}

impl<E: Clone + Send> EventBus<E> {
    pub fn new(capacity: usize) -> EventBus<E> {
        EventBus::with_lossless_wait(capacity, LOSSLESS_WAIT)
    }

    /// A bus whose lossless consumers may hold the publisher up for `wait`; tests use a short one.
    pub fn with_lossless_wait(capacity: usize, wait: Duration) -> EventBus<E> {
        EventBus {
            capacity: capacity.max(1),
            lossless_wait: wait,
            consumers: Mutex::new(Vec::new()),
            departed: Mutex::new(Vec::new()),
            published: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    pub fn subscribe(&self, consumer: &str, guarantee: Guarantee) -> Subscription<E> {
        let (tx, rx) = mpsc::channel(self.capacity);
        let counters = Arc::new(Counters::default());
        lock_or_recover(&self.consumers).push(Consumer {
            name: consumer.to_owned(),
            guarantee,
            tx,
            counters: counters.clone(),
        });
        Subscription { name: consumer.to_owned(), rx, counters }
    }

    /// Hands `event` to every consumer. Returns once each has it queued, or lost it (counted and logged).
    pub async fn publish(&self, event: E) {
        self.published.fetch_add(1, Ordering::Relaxed);
        let mut waiting = Vec::new();
        {
            let mut consumers = lock_or_recover(&self.consumers);
            let mut departed = Vec::new();
            for (i, c) in consumers.iter().enumerate() {
                match c.tx.try_send(event.clone()) {
                    Ok(()) => {
                        c.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Full(event)) if c.guarantee == Guarantee::Lossless => {
                        waiting.push((c.name.clone(), c.tx.clone(), c.counters.clone(), event));
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => lose(&c.name, c.guarantee, &c.counters),
                    Err(mpsc::error::TrySendError::Closed(_)) => departed.push(i),
                }
            }
            for i in departed.into_iter().rev() {
                let c = consumers.remove(i);
                merge(&mut lock_or_recover(&self.departed), stats_of(&c));
            }
        }
        for (name, tx, counters, event) in waiting {
            match tokio::time::timeout(self.lossless_wait, tx.send(event)).await {
                Ok(Ok(())) => {
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(_)) => {} // The consumer went away meanwhile.
                Err(_) => lose(&name, Guarantee::Lossless, &counters),
            }
        }
    }

    /// Counters per consumer name (consumers of the same name, such as `musicfs events` clients, are
    /// summed), including consumers that went away.
    pub fn stats(&self) -> Vec<ConsumerStats> {
        let mut all = lock_or_recover(&self.departed).clone();
        for c in lock_or_recover(&self.consumers).iter() {
            merge(&mut all, stats_of(c));
        }
        all
    }

    /// Events lost across all consumers.
    pub fn lost_total(&self) -> u64 {
        self.stats().iter().map(|s| s.lost).sum()
    }
}

fn stats_of<E>(c: &Consumer<E>) -> ConsumerStats {
    ConsumerStats {
        consumer: c.name.clone(),
        guarantee: c.guarantee,
        delivered: c.counters.delivered.load(Ordering::Relaxed),
        lost: c.counters.lost.load(Ordering::Relaxed),
    }
}

fn merge(all: &mut Vec<ConsumerStats>, one: ConsumerStats) {
    match all.iter_mut().find(|s| s.consumer == one.consumer) {
        Some(s) => {
            s.delivered += one.delivered;
            s.lost += one.lost;
        }
        None => all.push(one),
    }
}

fn lose(consumer: &str, guarantee: Guarantee, counters: &Counters) {
    let lost = counters.lost.fetch_add(1, Ordering::Relaxed) + 1;
    counters.unreported.fetch_add(1, Ordering::Relaxed);
    // Once per episode, and then at every power of two, so a stuck consumer cannot flood the log.
    if lost.is_power_of_two() {
        tracing::warn!(consumer, ?guarantee, lost, "3.3 event consumer is behind: events lost, it will resync");
    }
}

impl<E> Subscription<E> {
    /// The next event. Once the queued events are taken, a loss since the last report comes as
    /// [`Delivery::Lost`]: the consumer has seen everything that was queued and should now resync.
    pub async fn next(&mut self) -> Delivery<E> {
        match self.rx.try_recv() {
            Ok(event) => return Delivery::Event(event),
            Err(mpsc::error::TryRecvError::Disconnected) => return Delivery::Closed,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        if let Some(lost) = self.take_lost() {
            return Delivery::Lost(lost);
        }
        match self.rx.recv().await {
            Some(event) => Delivery::Event(event),
            None => Delivery::Closed,
        }
    }

    fn take_lost(&mut self) -> Option<u64> {
        let n = self.counters.unreported.swap(0, Ordering::Relaxed);
        (n > 0).then(|| {
            tracing::info!(consumer = %self.name, lost = n, "3.3 consumer told of lost events; resynchronising");
            n
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn lost_of(bus: &EventBus<u32>, consumer: &str) -> u64 {
        bus.stats().iter().find(|s| s.consumer == consumer).map_or(u64::MAX, |s| s.lost)
    }

    /// Proves L1: 3.3
    #[tokio::test]
    async fn a_lagging_lossy_consumer_loses_events_counted_and_is_told_to_resync() {
        let bus = EventBus::new(4);
        let mut watcher = bus.subscribe("watcher", Guarantee::Lossy);
        for n in 0..10 {
            bus.publish(n).await;
        }
        assert_eq!(lost_of(&bus, "watcher"), 6);
        assert_eq!(bus.lost_total(), 6);
        for n in 0..4 {
            assert_eq!(watcher.next().await, Delivery::Event(n), "what fit is delivered in order");
        }
        assert_eq!(watcher.next().await, Delivery::Lost(6), "the loss is reported, not skipped over");
        bus.publish(10).await;
        assert_eq!(watcher.next().await, Delivery::Event(10), "reported once; then events flow again");
        assert_eq!(bus.published(), 11);
    }

    /// Proves L1: 3.3
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_lossless_consumer_gets_every_event_in_order() {
        let bus = Arc::new(EventBus::new(2));
        let mut critical = bus.subscribe("invalidator", Guarantee::Lossless);
        let mut lossy = bus.subscribe("watcher", Guarantee::Lossy);
        let consumer = tokio::spawn(async move {
            let mut seen = Vec::new();
            while seen.len() < 20 {
                match critical.next().await {
                    Delivery::Event(n) => seen.push(n),
                    other => panic!("a lossless consumer got {other:?}"),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        });
        for n in 0..20 {
            bus.publish(n).await;
        }
        assert_eq!(consumer.await.unwrap(), (0..20).collect::<Vec<_>>());
        assert_eq!(lost_of(&bus, "invalidator"), 0);
        assert_eq!(lost_of(&bus, "watcher"), 18, "the idle lossy consumer beside it lost what did not fit");
        assert_eq!(lossy.next().await, Delivery::Event(0));
    }

    /// Proves L1: 3.3
    #[tokio::test]
    async fn a_stuck_lossless_consumer_holds_the_publisher_only_for_the_bound_and_learns_of_its_loss() {
        let bus = EventBus::with_lossless_wait(1, Duration::from_millis(50));
        let mut stuck = bus.subscribe("invalidator", Guarantee::Lossless);
        let started = Instant::now();
        for n in 0..3 {
            bus.publish(n).await;
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(100), "the publisher waited for room each time: {took:?}");
        assert!(took < Duration::from_secs(5), "but not without a bound: {took:?}");
        assert_eq!(lost_of(&bus, "invalidator"), 2);
        assert_eq!(stuck.next().await, Delivery::Event(0));
        assert_eq!(stuck.next().await, Delivery::Lost(2));
    }

    #[tokio::test]
    async fn a_departed_consumer_keeps_its_counts_and_does_not_block_publishing() {
        let bus = EventBus::new(1);
        let gone = bus.subscribe("gone", Guarantee::Lossless);
        bus.publish(1).await;
        drop(gone);
        tokio::time::timeout(Duration::from_secs(1), bus.publish(2)).await.expect("publish does not wait");
        let stats = bus.stats();
        assert_eq!(stats.len(), 1);
        assert_eq!((stats[0].delivered, stats[0].lost), (1, 0));
    }
}
