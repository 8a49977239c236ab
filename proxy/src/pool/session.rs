//! The start of a client session of transaction mode: the client is greeted with the
//! ParameterStatus values of its pool's connections and the proxy's own BackendKeyData, then
//! relayed with a [`PooledSource`], which takes a connection of the pool per transaction; the cancel
//! key follows the backend serving the client at the moment.
//! Not for: startup and authentication (see `server`), the relay (see `session`).

use super::{PooledSource, Pools};
use crate::metrics as m;
use crate::net::cancel::CancelRegistry;
use crate::net::tls::BoxStream;
use crate::session::upstream_source::UpstreamKey;
use crate::session::{self, RelaySettings, SessionEnd, SessionHook};
use crate::wire::frame;
use pgwire::messages::startup::{BackendKeyData, SecretKey};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info};

/// Greets the client and relays its session in transaction mode until it ends.
pub async fn serve(
    pools: &Arc<Pools>,
    cancels: &Arc<CancelRegistry>,
    mut client: BoxStream,
    key: UpstreamKey,
    hook: &mut dyn SessionHook,
    settings: RelaySettings,
) -> anyhow::Result<()> {
    let key = Arc::new(key);
    let mut greeting = match pools.clone().greeting(key.clone()).await {
        Ok(greeting) => greeting,
        Err(refused) => {
            frame::send_fatal(&mut client, refused.code(), refused.message()).await;
            return Ok(());
        }
    };
    let registration = cancels.register_detached();
    let client_key = registration.client_key();
    greeting.extend_from_slice(&frame::encode(&BackendKeyData::new(
        client_key.pid,
        SecretKey::I32(client_key.secret),
    )));
    greeting.extend_from_slice(&frame::ready_for_query(b'I'));
    client.write_all(&greeting).await?;
    info!(role = %settings.role, "session started in transaction mode");
    let source = PooledSource::new(pools.clone(), key, registration);
    metrics::gauge!(m::SESSIONS_ACTIVE).increment(1.0);
    let ended = session::relay_through(client, source, None, b'I', hook, settings).await;
    metrics::gauge!(m::SESSIONS_ACTIVE).decrement(1.0);
    match ended {
        Ok(end) => {
            debug!(?end, "session ended");
            if end == SessionEnd::ServerClosed {
                info!("PostgreSQL closed the session's pooled connection");
            }
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}
