//! What a SIGHUP can change in a running daemon: the log level and the
//! geofences (see [`crate::daemon::fence_watch`]). Every other setting is bound into
//! open sockets, the store and running tasks, so a change to it is named in
//! the log as needing a restart rather than half applied.

use crate::config::Config;

/// The sections that differ between the running and the re-read
/// configuration and only take effect after a restart.
pub fn needs_restart(running: &Config, reread: &Config) -> Vec<&'static str> {
    // Named field by field, so that a new section cannot be forgotten here.
    let Config {
        gateway,
        store,
        pipeline,
        feed,
        log: _,
        serial,
        replay,
        demo,
        mqtt,
        http,
        devices,
        filter,
        uplink,
        geofence: _,
        map,
        groups,
        // Reloaded by the access watch (crate::readers::feed::access::watch).
        access: _,
        gpsd,
    } = reread;
    let mut changed = Vec::new();
    let mut check = |name, same: bool| {
        if !same {
            changed.push(name);
        }
    };
    check("gateway", running.gateway == *gateway);
    check("store", running.store == *store);
    check("pipeline", running.pipeline == *pipeline);
    check("feed", running.feed == *feed);
    check("serial", running.serial == *serial);
    check("replay", running.replay == *replay);
    check("demo", running.demo == *demo);
    check("mqtt", running.mqtt == *mqtt);
    check("http", running.http == *http);
    check("devices", running.devices == *devices);
    check("filter", running.filter == *filter);
    check("uplink", running.uplink == *uplink);
    check("map", running.map == *map);
    check("group", running.groups == *groups);
    check("gpsd", running.gpsd == *gpsd);
    changed
}

/// Applies what can be applied of a re-read configuration and logs the rest.
/// `running` becomes the configuration in force for the next comparison:
/// only its reloadable parts change.
pub fn apply(running: &mut Config, reread: &Config) {
    if running.log != reread.log {
        match crate::daemon::logging::set_level(&reread.log.level) {
            Ok(()) => {
                tracing::info!(level = %reread.log.level, "log level changed (SIGHUP)");
                running.log = reread.log.clone();
            }
            Err(err) => tracing::error!("log level NOT changed: {err}"),
        }
    }
    running.geofence = reread.geofence.clone();
    let stale = needs_restart(running, reread);
    if !stale.is_empty() {
        tracing::warn!(
            sections = %stale.join(", "),
            "configuration changes that take effect only after a restart (systemctl restart fixgate)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sections_that_cannot_be_reloaded_need_a_restart() {
        let running = Config::default();
        let mut reread = running.clone();
        reread.log.level = "debug".to_owned();
        reread.geofence.watch_interval = std::time::Duration::from_secs(9);
        assert!(needs_restart(&running, &reread).is_empty());
        reread.feed.max_clients += 1;
        reread.store.cache_mb += 1;
        assert_eq!(needs_restart(&running, &reread), ["store", "feed"]);
    }
}
