//! Frame commands (the first line of every frame).

/// A STOMP command. Names are case-sensitive on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    // Client frames.
    Connect,
    Stomp,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    Disconnect,
    // Server frames.
    Connected,
    Message,
    Receipt,
    Error,
}

/// Length of the longest command name (`UNSUBSCRIBE`); lets the decoder reject a
/// garbage command line early instead of buffering it.
pub(crate) const MAX_COMMAND_LEN: usize = 11;

impl Command {
    /// Every command, client commands first.
    pub const ALL: [Command; 15] = [
        Command::Connect,
        Command::Stomp,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Ack,
        Command::Nack,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Disconnect,
        Command::Connected,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ];

    /// The wire spelling of the command.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Connected => "CONNECTED",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// Parses an exact, case-sensitive command name (without the EOL).
    pub fn parse(s: &[u8]) -> Option<Command> {
        Command::ALL
            .into_iter()
            .find(|c| c.as_str().as_bytes() == s)
    }

    /// True for frames a client sends to the server; a broker rejects the others.
    pub fn is_client(self) -> bool {
        !matches!(
            self,
            Command::Connected | Command::Message | Command::Receipt | Command::Error
        )
    }

    /// The connection-opening frames, whose headers are never escaped because the
    /// version is not negotiated yet when they are sent (`STOMP` is the 1.1+ alias
    /// of `CONNECT`, so it gets the same treatment).
    pub(crate) fn is_handshake(self) -> bool {
        matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_every_command() {
        for c in Command::ALL {
            assert_eq!(Command::parse(c.as_str().as_bytes()), Some(c));
            assert!(c.as_str().len() <= MAX_COMMAND_LEN);
        }
    }

    #[test]
    fn parse_is_case_sensitive_and_exact() {
        assert_eq!(Command::parse(b"send"), None);
        assert_eq!(Command::parse(b"SEND "), None);
        assert_eq!(Command::parse(b""), None);
    }

    #[test]
    fn client_and_server_sets() {
        assert!(Command::Send.is_client());
        assert!(!Command::Message.is_client());
        assert_eq!(Command::ALL.iter().filter(|c| c.is_client()).count(), 11);
    }
}
