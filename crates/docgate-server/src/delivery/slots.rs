//! Delivery slots: how many deliveries run at once on this replica, and how many of them one
//! provider may hold.
//!
//! All providers share `delivery.worker_concurrency`. A provider that accepts connections
//! and never answers keeps each of its deliveries for a whole `attempt_timeout` (and its
//! short backoffs, slept in place); with one shared pool, its backlog — always the oldest
//! due work — took every slot, and the other providers' uploads waited behind it for as long
//! as it stayed broken. So with more than one provider, each may hold at most three quarters
//! of the slots: the others always find some free.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The slots, overall and per provider.
#[derive(Debug)]
pub struct DeliverySlots {
    all: Arc<Semaphore>,
    per_provider: HashMap<String, Arc<Semaphore>>,
}

/// One running delivery's place: given back when dropped.
#[derive(Debug)]
pub struct DeliverySlot {
    _all: OwnedSemaphorePermit,
    _provider: Option<OwnedSemaphorePermit>,
}

impl DeliverySlots {
    pub fn new(total: usize, providers: &[&str]) -> Self {
        let total = total.max(1);
        let share = provider_share(total, providers.len());
        DeliverySlots {
            all: Arc::new(Semaphore::new(total)),
            per_provider: providers
                .iter()
                .map(|&p| (p.to_owned(), Arc::new(Semaphore::new(share))))
                .collect(),
        }
    }

    fn provider(&self, provider: &str) -> Option<Arc<Semaphore>> {
        self.per_provider.get(provider).cloned()
    }

    /// Slots `provider` could take now.
    pub fn free_for(&self, provider: &str) -> usize {
        let all = self.all.available_permits();
        match self.per_provider.get(provider) {
            Some(own) => all.min(own.available_permits()),
            None => all,
        }
    }

    /// A slot for `provider` now, if one is free.
    pub fn try_take(&self, provider: &str) -> Option<DeliverySlot> {
        let own = match self.provider(provider) {
            Some(own) => Some(own.try_acquire_owned().ok()?),
            None => None,
        };
        Some(DeliverySlot {
            _all: self.all.clone().try_acquire_owned().ok()?,
            _provider: own,
        })
    }

    /// A slot for `provider`, waiting for one (first come, first served).
    pub async fn take(&self, provider: &str) -> Option<DeliverySlot> {
        let own = match self.provider(provider) {
            Some(own) => Some(own.acquire_owned().await.ok()?),
            None => None,
        };
        Some(DeliverySlot {
            _all: self.all.clone().acquire_owned().await.ok()?,
            _provider: own,
        })
    }

    /// A slot for `provider` within `wait`.
    pub async fn take_within(&self, provider: &str, wait: Duration) -> Option<DeliverySlot> {
        tokio::time::timeout(wait, self.take(provider))
            .await
            .ok()
            .flatten()
    }
}

/// What one of `providers` providers may hold of `total` slots.
fn provider_share(total: usize, providers: usize) -> usize {
    if providers <= 1 {
        total
    } else {
        (total - (total / 4).max(1)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_provider_takes_them_all_several_leave_a_quarter_to_the_others() {
        assert_eq!(provider_share(16, 1), 16);
        assert_eq!(provider_share(16, 4), 12);
        assert_eq!(provider_share(2, 2), 1);
        assert_eq!(provider_share(1, 3), 1);
    }

    #[tokio::test]
    async fn a_provider_at_its_share_leaves_slots_to_the_others() {
        let slots = DeliverySlots::new(4, &["stuck", "fine"]);
        let held: Vec<DeliverySlot> = (0..3)
            .map(|_| slots.try_take("stuck").expect("within its share"))
            .collect();
        assert!(slots.try_take("stuck").is_none(), "its share is 3 of 4");
        assert_eq!(slots.free_for("stuck"), 0);
        assert_eq!(slots.free_for("fine"), 1);
        let fine = slots.try_take("fine").expect("the one left");
        assert!(slots.try_take("fine").is_none(), "none left overall");
        drop(held);
        assert_eq!(
            slots.free_for("fine"),
            2,
            "three back overall, two of its share left"
        );
        drop(fine);
    }
}
