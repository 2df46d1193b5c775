//! `--store` values and a store chosen at run time.

use crate::error::{Result, StoreError};
use crate::etcd::{EtcdOptions, EtcdStore};
use crate::handles::{Leadership, Registration, Watch};
use crate::local::LocalStore;
use crate::{Created, Entry, Store, Swap};
use std::time::Duration;

/// A parsed `--store` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `etcd://host:port[,host:port...]`
    Etcd { endpoints: Vec<String> },
}

impl StoreSpec {
    pub fn parse(s: &str) -> Result<Self> {
        let bad =
            |why: &str| StoreError::Config(format!("--store {s:?}: {why} (expected etcd://host:port[,host:port...])"));
        let rest = s.trim().strip_prefix("etcd://").ok_or_else(|| bad("unknown scheme"))?;
        let endpoints: Vec<String> = rest.split(',').map(|e| e.trim().trim_end_matches('/').to_string()).collect();
        for e in &endpoints {
            let (host, port) = e.rsplit_once(':').ok_or_else(|| bad(&format!("endpoint {e:?} has no port")))?;
            if host.is_empty() || host.contains('/') || port.parse::<u16>().is_err() {
                return Err(bad(&format!("endpoint {e:?} is not host:port")));
            }
        }
        Ok(StoreSpec::Etcd { endpoints })
    }
}

/// The key prefix of a trust domain's shared state.
pub fn prefix_for(trust_domain: &str) -> String {
    format!("/meshca/{trust_domain}/")
}

/// Either store, chosen by configuration.
#[derive(Clone)]
pub enum AnyStore {
    Local(LocalStore),
    Etcd(Box<EtcdStore>),
}

impl AnyStore {
    /// Connect to the store named by `spec` with `base` as the remaining options.
    pub async fn connect(spec: &StoreSpec, mut base: EtcdOptions) -> Result<Self> {
        match spec {
            StoreSpec::Etcd { endpoints } => {
                base.endpoints = endpoints.clone();
                Ok(AnyStore::Etcd(Box::new(EtcdStore::connect(base).await?)))
            }
        }
    }
}

macro_rules! both {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Local($s) => $e,
            AnyStore::Etcd($s) => $e,
        }
    };
}

impl Store for AnyStore {
    fn describe(&self) -> String {
        both!(self, s => s.describe())
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        both!(self, s => s.get(key).await)
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        both!(self, s => s.list(prefix).await)
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Created> {
        both!(self, s => s.create(key, value).await)
    }
    async fn compare_and_swap(&self, key: &str, mod_revision: i64, value: Vec<u8>) -> Result<Swap> {
        both!(self, s => s.compare_and_swap(key, mod_revision, value).await)
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        both!(self, s => s.delete(key).await)
    }
    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<Watch> {
        both!(self, s => s.watch(prefix, after_revision).await)
    }
    async fn register(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<Registration> {
        both!(self, s => s.register(key, value, ttl).await)
    }
    async fn campaign(&self, election: &str, id: &str, ttl: Duration) -> Result<Leadership> {
        both!(self, s => s.campaign(election, id, ttl).await)
    }
    async fn leader(&self, election: &str) -> Result<Option<String>> {
        both!(self, s => s.leader(election).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints_and_rejects_junk() {
        assert_eq!(
            StoreSpec::parse("etcd://h1:2379,127.0.0.1:22379").unwrap(),
            StoreSpec::Etcd { endpoints: vec!["h1:2379".into(), "127.0.0.1:22379".into()] }
        );
        for bad in ["redis://h:1", "etcd://", "etcd://h1", "etcd://h1:x", "etcd://:2379"] {
            let e = StoreSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--store") && e.contains(bad), "{e}");
        }
    }
}
