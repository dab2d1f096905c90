//! Starting the sources: serial receivers, replays, the demo fleet and the
//! MQTT intake, each on the intake tracker, so that shutdown can wait for
//! all of them before the writer drains.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

use crate::config::{Broker, Config, Demo, DemoVia};
use crate::daemon::health::Pulses;
use crate::sim::publish::{MqttTarget, SimulateOptions, Target};
use crate::sources::mqtt::{self, Messages};
use crate::sources::receivers::{ReceiverStatus, Receivers};
use crate::sources::{Context, demo, replay, serial};
use crate::store::Store;
use crate::util::tasks::Tasks;

/// Starts every source the configuration names on `intake`; the watchdog
/// sees each loop through `pulses`. The MQTT intake comes first: the demo
/// fleet over MQTT connects to its port. Serial receivers remember their
/// line speed in `store`; their status is returned, in configuration order.
pub fn start(
    config: &Config,
    context: &Context,
    pulses: &Pulses,
    intake: &Tasks,
    store: &Store,
) -> anyhow::Result<Receivers> {
    start_mqtt(config, context, pulses, intake)?;
    let mut receivers = Vec::with_capacity(config.serial.len());
    if !config.serial.is_empty() {
        let speeds = store
            .line_speeds()
            .context("cannot open the store's line speeds")?;
        for s in &config.serial {
            let pulse = pulses.register(format!("serial receiver {}", s.device));
            let status = Arc::new(ReceiverStatus::new(s.device.clone(), &s.path));
            receivers.push(status.clone());
            let line = serial::Line {
                speeds: speeds.clone(),
                status,
            };
            intake.spawn(serial::run(s.clone(), context.clone(), line, pulse));
        }
    }
    for r in &config.replay {
        intake.spawn(replay::run(r.clone(), context.clone()));
    }
    match (&config.demo, &config.mqtt.broker) {
        (Some(d), Broker::Embedded(broker)) if d.via == DemoVia::Mqtt => {
            intake.spawn(demo_over_mqtt(d.clone(), broker.listen, context.clone()));
        }
        (Some(d), _) => {
            intake.spawn(demo::run(d.clone(), context.clone()));
        }
        (None, _) => {}
    }
    Ok(receivers.into())
}

/// Starts the MQTT intake the configuration asks for.
fn start_mqtt(
    config: &Config,
    context: &Context,
    pulses: &Pulses,
    intake: &Tasks,
) -> anyhow::Result<()> {
    let pulse = pulses.register("the MQTT intake");
    let messages = || {
        Messages::new(config.mqtt.topics.clone(), config.mqtt.max_payload, context)
            .with_pulse(pulse.clone())
    };
    match &config.mqtt.broker {
        Broker::Off => {}
        Broker::Embedded(embedded) => {
            let task =
                mqtt::embedded::start(embedded, config.mqtt.max_payload, messages(), intake)?;
            intake.spawn(task);
        }
        Broker::External(external) => {
            let task = mqtt::external::start(
                external,
                config.gateway.id.as_str(),
                messages(),
                context.shutdown.clone(),
            )
            .context("cannot set up the MQTT connection")?;
            intake.spawn(task);
        }
    }
    Ok(())
}

/// The demo fleet as real MQTT trackers: `fixgate simulate` in process,
/// publishing fixgate JSON to our own broker, one connection per vehicle.
async fn demo_over_mqtt(demo: Demo, listen: SocketAddr, context: Context) {
    let host = if listen.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        listen.ip().to_string()
    };
    let options = SimulateOptions {
        target: Target::Mqtt(MqttTarget {
            host,
            port: listen.port(),
            topic: "fleet/demo/device/{device}/fix".into(),
            client_id_prefix: "fixgate-demo-".into(),
            ..MqttTarget::default()
        }),
        devices: demo.vehicles as usize,
        rate_hz: demo.rate_hz,
        center: (demo.center[0], demo.center[1]),
        seed: Some(1),
        prefix: "demo-".into(),
        ..SimulateOptions::default()
    };
    // The server's port is bound before the sources start.
    if let Err(err) = crate::sim::publish::run_until(options, context.shutdown).await {
        tracing::error!("demo fleet over MQTT stopped: {err:#}");
    }
}
