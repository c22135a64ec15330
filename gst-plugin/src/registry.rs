//! Process-wide registries of what several elements share: an inference engine per
//! `engine` name (`effnetclassify`) and an MQTT connection per broker settings
//! (`effnetpublish`). The registry holds weak references only: a shared value lives as
//! long as an element that started with it, and is dropped (its `Drop` shutting it down)
//! when the last of them stops.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

pub(crate) struct Registry<V> {
    entries: Mutex<BTreeMap<String, Weak<V>>>,
}

impl<V> Registry<V> {
    pub const fn new() -> Self {
        Self {
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    /// The live value under `key` if `compatible` accepts it, else a new one from
    /// `create`. The registry stays locked while `create` runs, so that two elements
    /// starting at once with the same key share one value.
    pub fn get_or_create<E>(
        &self,
        key: &str,
        compatible: impl FnOnce(&V) -> Result<(), E>,
        create: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, value| value.strong_count() > 0);
        if let Some(value) = entries.get(key).and_then(Weak::upgrade) {
            compatible(&value)?;
            return Ok(value);
        }
        let value = Arc::new(create()?);
        entries.insert(key.to_owned(), Arc::downgrade(&value));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_shared_while_alive_and_recreated_after() {
        static REGISTRY: Registry<u32> = Registry::new();
        let a = REGISTRY
            .get_or_create::<()>("k", |_| Ok(()), || Ok(1))
            .unwrap();
        let b = REGISTRY
            .get_or_create::<()>("k", |_| Ok(()), || Ok(2))
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(
            REGISTRY.get_or_create("k", |_| Err("refused"), || Ok(3)),
            Err("refused")
        );
        drop((a, b));
        let c = REGISTRY
            .get_or_create::<()>("k", |_| Ok(()), || Ok(4))
            .unwrap();
        assert_eq!(*c, 4);
    }
}
