//! HTTP(S) transport: one batch per POST (ureq, rustls with ring), one
//! request at a time, in order. A 2xx acknowledges the batch; anything else
//! counts as a lost connection, and the core re-sends after a back-off.

use std::sync::Arc;

use super::transport::{self, FromTransport, Side, ToTransport};
use crate::config::UplinkHttp;
use crate::tls::TlsError;
use crate::util::backoff::Backoff;

/// A configured HTTP client for the upstream endpoint.
#[derive(Clone)]
pub struct Endpoint {
    agent: ureq::Agent,
    url: String,
    authorization: Option<String>,
}

impl Endpoint {
    /// Builds the client; TLS files are read now, so that a bad path fails at start-up.
    pub fn new(config: &UplinkHttp) -> Result<Self, TlsError> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &config.ca_file {
            let certs: Vec<ureq::tls::Certificate<'static>> = crate::tls::certs(path)?
                .into_iter()
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        if let Some(client) = &config.client_cert {
            let chain: Vec<ureq::tls::Certificate<'static>> = crate::tls::certs(&client.cert)?
                .into_iter()
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            let key_pem = std::fs::read(&client.key).map_err(|e| TlsError::File {
                path: client.key.clone(),
                why: e.to_string(),
            })?;
            let key = ureq::tls::PrivateKey::from_pem(&key_pem).map_err(|e| TlsError::File {
                path: client.key.clone(),
                why: e.to_string(),
            })?;
            tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .timeout_global(Some(config.timeout))
            // Statuses are ours to judge: a 4xx body is worth logging.
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self {
            agent,
            url: config.url.clone(),
            authorization: config.token.as_ref().map(|t| format!("Bearer {t}")),
        })
    }

    /// POSTs one batch; `Ok` on a 2xx, else why not.
    fn post(&self, bytes: &[u8]) -> Result<(), String> {
        let mut request = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/octet-stream");
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        match request.send(bytes) {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(mut response) => {
                let status = response.status();
                let body = response
                    .body_mut()
                    .with_config()
                    .limit(512)
                    .read_to_string()
                    .unwrap_or_default();
                Err(format!("HTTP {status}: {}", body.trim()))
            }
            Err(err) => Err(err.to_string()),
        }
    }
}

/// Posts batches in order until `shutdown`; a failure is reported as a lost
/// connection and followed by a back-off before the next `Connected`.
pub async fn run(endpoint: Endpoint, mut backoff: Backoff, side: Side) {
    let Side {
        mut rx,
        tx,
        shutdown,
    } = side;
    let endpoint = Arc::new(endpoint);
    let mut generation = 1u64;
    if tx
        .send(FromTransport::Connected { generation })
        .await
        .is_err()
    {
        return;
    }
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = rx.recv() => m,
        };
        let failure = match message {
            None => return,
            Some(ToTransport::Send {
                generation: g,
                token,
                bytes,
            }) if g == generation => {
                let endpoint = endpoint.clone();
                let posted = tokio::task::spawn_blocking(move || endpoint.post(&bytes)).await;
                match posted {
                    Ok(Ok(())) => {
                        backoff.reset();
                        if tx.send(FromTransport::Acked { token }).await.is_err() {
                            return;
                        }
                        None
                    }
                    Ok(Err(reason)) => Some(reason),
                    Err(join) => Some(format!("request task failed: {join}")),
                }
            }
            Some(ToTransport::Reconnect { generation: g }) if g == generation => {
                Some("no acknowledgement in time".to_owned())
            }
            Some(_) => None,
        };
        if let Some(reason) = failure {
            if !transport::lost(&tx, generation, reason, &mut backoff, &shutdown).await {
                return;
            }
            generation += 1;
            if tx
                .send(FromTransport::Connected { generation })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
