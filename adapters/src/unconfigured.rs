//! A backend for components the configuration leaves out. The core never asks them anything;
//! if it did, the error says so instead of pretending success.

use crate::traits::*;
use async_trait::async_trait;
use ridondato_core::{NodeId, PersistedState, Position};

#[derive(Debug, Default, Clone, Copy)]
pub struct NotConfigured;

fn no<T>(what: &str) -> AdapterResult<T> {
    Err(AdapterError::new(format!("{what} is not configured on this node")))
}

#[async_trait]
impl Vip for NotConfigured {
    async fn raise(&self) -> AdapterResult<()> {
        no("the virtual IP")
    }
    async fn drop_vip(&self) -> AdapterResult<()> {
        no("the virtual IP")
    }
    async fn garp(&self) -> AdapterResult<()> {
        no("the virtual IP")
    }
    async fn probe(&self) -> AdapterResult<bool> {
        no("the virtual IP")
    }
    async fn held(&self) -> AdapterResult<bool> {
        no("the virtual IP")
    }
    async fn link_up(&self) -> AdapterResult<bool> {
        no("the virtual IP")
    }
}

#[async_trait]
impl Db for NotConfigured {
    async fn catch_up(&self, _: Position) -> AdapterResult<()> {
        no("the database")
    }
    async fn promote(&self, _: Option<Position>) -> AdapterResult<()> {
        no("the database")
    }
    async fn fence(&self) -> AdapterResult<Position> {
        no("the database")
    }
    async fn replicate_from(&self, _: NodeId) -> AdapterResult<()> {
        no("the database")
    }
    async fn report(&self) -> AdapterResult<DbReport> {
        no("the database")
    }
    async fn copy_from_peer(&self, _: NodeId, _: ProgressFn) -> AdapterResult<()> {
        no("the database")
    }
}

#[async_trait]
impl Mongo for NotConfigured {
    async fn promote(&self) -> AdapterResult<()> {
        no("MongoDB")
    }
    async fn demote(&self) -> AdapterResult<()> {
        no("MongoDB")
    }
    async fn resync(&self, _: ProgressFn) -> AdapterResult<()> {
        no("MongoDB")
    }
}

#[async_trait]
impl FsSync for NotConfigured {
    async fn push_start(&self, _: NodeId) -> AdapterResult<()> {
        no("file sync")
    }
    async fn push_stop(&self) -> AdapterResult<()> {
        no("file sync")
    }
    async fn resync_from(&self, _: NodeId, _: ProgressFn) -> AdapterResult<()> {
        no("file sync")
    }
}

#[async_trait]
impl CloudIp for NotConfigured {
    async fn associate(&self, _: NodeId) -> AdapterResult<()> {
        no("the cloud public IP")
    }
    async fn holder(&self) -> AdapterResult<Option<NodeId>> {
        no("the cloud public IP")
    }
    async fn instance_running(&self, _: NodeId) -> AdapterResult<bool> {
        no("the cloud API")
    }
}

#[async_trait]
impl Services for NotConfigured {
    async fn start(&self) -> AdapterResult<()> {
        no("services")
    }
    async fn stop(&self) -> AdapterResult<()> {
        no("services")
    }
}

#[async_trait]
impl StateStore for NotConfigured {
    async fn load(&self) -> AdapterResult<Option<PersistedState>> {
        no("a state store")
    }
    async fn save(&self, _: &PersistedState) -> AdapterResult<()> {
        no("a state store")
    }
}
