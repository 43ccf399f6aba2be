//! Heart-beat negotiation (STOMP 1.1+), a pure function.
//!
//! The client's CONNECT says `heart-beat:cx,cy` ("I can send every cx ms, I
//! want to receive every cy ms"); the server answers `sx,sy` in CONNECTED.
//! - server → client every max(sx, cy) ms, none when either is 0;
//! - client → server every max(cx, sy) ms, none when either is 0; the server
//!   closes the connection when nothing (frame or heart-beat) arrived within
//!   twice that interval (the spec asks for some tolerance).
//!
//! A missing header means `0,0`. A malformed one is an error.
//!
//! The server's `sx,sy` ([`offer`]): `sx` is the client's own wish `cy`, bounded
//! below by `limits.stomp_min_heartbeat_ms`, so `heart-beat:0,500` gets a beat
//! every 500 ms (RabbitMQ does the same but rounds to whole seconds); `sy` is
//! `limits.stomp_heartbeat_ms`. A configured interval of 0 turns heart-beats off.

use std::time::Duration;

/// Negotiated heart-beat intervals of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct HeartBeat {
    /// How often the server sends one when it has nothing else to send.
    pub(super) send: Option<Duration>,
    /// How often the client promised to send something.
    pub(super) receive: Option<Duration>,
}

impl HeartBeat {
    /// How long the server waits for the client before closing.
    pub(super) fn receive_deadline(&self) -> Option<Duration> {
        self.receive.map(|interval| interval * 2)
    }
}

/// Parses `cx,cy`; None when malformed.
pub(super) fn parse(value: &str) -> Option<(u64, u64)> {
    let (cx, cy) = value.split_once(',')?;
    Some((cx.trim().parse().ok()?, cy.trim().parse().ok()?))
}

/// The client's `cx,cy`: `0,0` when absent, None when malformed.
pub(super) fn client_wish(value: Option<&str>) -> Option<(u64, u64)> {
    match value {
        None => Some((0, 0)),
        Some(value) => parse(value),
    }
}

/// The server's CONNECTED `sx,sy` for a client wishing `cx,cy`: beats as often
/// as the client asks, but not more often than every `min_ms`; `interval_ms`
/// is what the server asks of the client, and 0 turns heart-beats off.
pub(super) fn offer(client: (u64, u64), interval_ms: u64, min_ms: u64) -> (u64, u64) {
    if interval_ms == 0 {
        return (0, 0);
    }
    let (_, cy) = client;
    let sx = if cy == 0 { interval_ms } else { cy.max(min_ms) };
    (sx, interval_ms)
}

/// The intervals of a connection whose client sent `client` (`cx,cy`) to a
/// server offering `server` (`sx,sy`).
pub(super) fn negotiate(client: (u64, u64), server: (u64, u64)) -> HeartBeat {
    let (cx, cy) = client;
    let (sx, sy) = server;
    let interval = |a: u64, b: u64| (a != 0 && b != 0).then(|| Duration::from_millis(a.max(b)));
    HeartBeat {
        send: interval(sx, cy),
        receive: interval(cx, sy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Option<Duration> {
        Some(Duration::from_millis(v))
    }

    #[test]
    fn negotiation_takes_the_larger_value_and_zero_disables() {
        let hb = negotiate((1000, 2000), (500, 3000));
        assert_eq!(hb.send, ms(2000));
        assert_eq!(hb.receive, ms(3000));
        let hb = negotiate((0, 2000), (500, 3000));
        assert_eq!(hb.receive, None);
        assert_eq!(hb.send, ms(2000));
        let hb = negotiate((100, 0), (500, 50));
        assert_eq!(hb.send, None);
        assert_eq!(hb.receive, ms(100));
        assert_eq!(hb.receive_deadline(), ms(200));
        assert_eq!(negotiate((0, 0), (500, 500)), HeartBeat::default());
        assert_eq!(negotiate((1, 1), (0, 0)), HeartBeat::default());
    }

    #[test]
    fn the_offer_follows_the_client_wish_above_the_floor() {
        // The case: a beat every 500 ms, not every 10 s.
        assert_eq!(offer((0, 500), 10_000, 500), (500, 10_000));
        assert_eq!(
            negotiate((0, 500), offer((0, 500), 10_000, 500)).send,
            ms(500)
        );
        assert_eq!(offer((0, 20_000), 10_000, 500), (20_000, 10_000));
        // Below the floor: the floor.
        assert_eq!(offer((0, 100), 10_000, 500), (500, 10_000));
        assert_eq!(
            negotiate((0, 100), offer((0, 100), 10_000, 500)).send,
            ms(500)
        );
        // No wish: the configured interval, and no beats.
        assert_eq!(offer((0, 0), 10_000, 500), (10_000, 10_000));
        assert_eq!(negotiate((0, 0), offer((0, 0), 10_000, 500)).send, None);
        // Heart-beats configured off.
        assert_eq!(offer((1000, 1000), 0, 500), (0, 0));
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in ["", "1", "a,b", "1,2,3", "-1,0", "1;2"] {
            assert_eq!(client_wish(Some(bad)), None, "{bad}");
        }
        assert_eq!(client_wish(None), Some((0, 0)));
        assert_eq!(parse(" 10 , 20 "), Some((10, 20)));
    }
}
