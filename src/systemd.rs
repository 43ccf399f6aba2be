//! Tells systemd what the broker is doing (`Type=notify` in dist/tern.service):
//! ready once every listener is bound, reloading around a SIGHUP reload,
//! stopping at shutdown. Each call is a no-op when `NOTIFY_SOCKET` is unset (not
//! started by systemd). Only the `tern` process speaks for the service, so the
//! library calls these only where main asked for a reload ([`crate::server::Reloader`]).

#[cfg(unix)]
use sd_notify::NotifyState;

/// Every listener is bound: systemd may start the units ordered after tern.
pub fn ready(status: &str) {
    #[cfg(unix)]
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
    #[cfg(not(unix))]
    let _ = status;
}

/// A configuration reload starts; [`reloaded`] ends it. systemd holds
/// `systemctl reload` until then.
pub fn reloading() {
    #[cfg(unix)]
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(error) => tracing::warn!(%error, "cannot tell systemd of the reload"),
    }
}

/// The reload is over (whatever its outcome: a failed reload keeps the running
/// configuration, which still serves).
pub fn reloaded() {
    #[cfg(unix)]
    send(&[NotifyState::Ready]);
}

/// Shutdown has started.
pub fn stopping() {
    #[cfg(unix)]
    send(&[NotifyState::Stopping]);
}

#[cfg(unix)]
fn send(states: &[NotifyState]) {
    // Never unset NOTIFY_SOCKET: that is unsound once threads run, and later
    // notifications need it.
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}
