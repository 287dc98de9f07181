//! memcached's administrative commands on a shoald node: what `stats settings` and
//! `stats conns` report, and the `shutdown` switch ([`Admin`], built once by the server from
//! its configuration).
//!
//! Every one of these acts on the node asked and is never forwarded: a cluster's nodes are
//! administered one by one, as memcached servers are.

use crate::config::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Notify;

/// What the administrative commands need from the node, shared by all text sessions.
#[derive(Debug, Default)]
pub struct Admin {
    /// `stats settings` lines after `maxbytes` (which changes with `cache_memlimit` and is
    /// read from the store): memcached's names with shoald's values, only for settings
    /// shoald has.
    pub settings: Vec<(&'static str, String)>,
    /// The memcached port's listening socket (descriptor and address), for `stats conns`.
    pub listening: Option<(i32, SocketAddr)>,
    /// Present with `--enable-shutdown`: the `shutdown` command notifies it and the server
    /// stops gracefully, as on SIGTERM.
    pub shutdown: Option<Arc<Notify>>,
}

impl Admin {
    /// The node's settings under memcached's names, from `config` (`memcache`: the bound
    /// memcached address).
    pub fn new(
        config: &Config,
        listening: Option<(i32, SocketAddr)>,
        shutdown: Option<Arc<Notify>>,
    ) -> Admin {
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
        let threads = match config.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut settings = vec![("maxconns", config.max_connections.to_string())];
        if let Some((_, addr)) = listening {
            settings.push(("tcpport", addr.port().to_string()));
        }
        // No UDP port: 0 is memcached's "off".
        settings.push(("udpport", "0".into()));
        if let Some((_, addr)) = listening {
            settings.push(("inter", addr.ip().to_string()));
        }
        settings.extend([
            // Items are evicted to make room; there is no setting to turn that off.
            ("evictions", "on".to_string()),
            ("shutdown_command", yes_no(shutdown.is_some())),
            ("growth_factor", format!("{:.2}", config.growth_factor)),
            ("num_threads", threads.to_string()),
            ("detail_enabled", "no".into()),
            ("cas_enabled", "yes".into()),
            ("binding_protocol", "ascii".into()),
            ("auth_enabled_sasl", "no".into()),
            ("auth_enabled_ascii", "no".into()),
            ("item_size_max", config.max_value_size.to_string()),
            ("flush_enabled", "yes".into()),
            ("idle_timeout", config.idle_timeout.as_secs().to_string()),
            ("track_sizes", "no".into()),
            ("ssl_enabled", "no".into()),
        ]);
        Admin {
            settings,
            listening,
            shutdown,
        }
    }
}
