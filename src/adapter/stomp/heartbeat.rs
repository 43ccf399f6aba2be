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

/// The intervals of a connection whose client sent `client` (`cx,cy`) to a
/// server offering `server` (`sx,sy`). None when the client's value is malformed.
pub(super) fn negotiate(client: Option<&str>, server: (u64, u64)) -> Option<HeartBeat> {
    let (cx, cy) = match client {
        None => (0, 0),
        Some(value) => parse(value)?,
    };
    let (sx, sy) = server;
    let interval = |a: u64, b: u64| (a != 0 && b != 0).then(|| Duration::from_millis(a.max(b)));
    Some(HeartBeat {
        send: interval(sx, cy),
        receive: interval(cx, sy),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Option<Duration> {
        Some(Duration::from_millis(v))
    }

    #[test]
    fn negotiation_takes_the_larger_value_and_zero_disables() {
        let hb = negotiate(Some("1000,2000"), (500, 3000)).unwrap();
        assert_eq!(hb.send, ms(2000));
        assert_eq!(hb.receive, ms(3000));
        let hb = negotiate(Some("0,2000"), (500, 3000)).unwrap();
        assert_eq!(hb.receive, None);
        assert_eq!(hb.send, ms(2000));
        let hb = negotiate(Some("100,0"), (500, 50)).unwrap();
        assert_eq!(hb.send, None);
        assert_eq!(hb.receive, ms(100));
        assert_eq!(hb.receive_deadline(), ms(200));
        assert_eq!(negotiate(None, (500, 500)), Some(HeartBeat::default()));
        assert_eq!(negotiate(Some("1,1"), (0, 0)), Some(HeartBeat::default()));
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in ["", "1", "a,b", "1,2,3", "-1,0", "1;2"] {
            assert_eq!(negotiate(Some(bad), (1, 1)), None, "{bad}");
        }
        assert_eq!(parse(" 10 , 20 "), Some((10, 20)));
    }
}
