//! Everything that ends a STOMP connection, and the ERROR frame each one is
//! answered with: the single place internal errors become protocol replies.

use bytes::Bytes;
use tern_stomp::{Command, Frame, Version};

use super::destination::DestinationError;
use crate::adapter::serve::Ended;
use crate::adapter::WriteError;
use crate::core::router::PublishRefused;
use crate::core::session::KickReason;

/// The versions this server speaks, as the ERROR refusing a client lists them.
const SUPPORTED_VERSIONS: &str = "1.0,1.1,1.2";

#[derive(Debug, thiserror::Error)]
pub enum StompAdapterError {
    /// Malformed bytes, unknown command, frame over the limits.
    #[error("{0}")]
    Codec(#[from] tern_stomp::StompError),
    /// Worded as RabbitMQ's STOMP plugin starts it (`Missing header`), which
    /// clients migrating from it match on.
    #[error("Missing header: {header} ({command} frames require it)")]
    MissingHeader {
        command: Command,
        header: &'static str,
    },
    #[error("invalid '{header}' header {value:?}: {reason}")]
    InvalidHeader {
        header: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{0}")]
    Destination(#[from] DestinationError),
    #[error("message could not be stored: {0}")]
    Store(#[from] crate::core::commit::CoreError),
    #[error("unexpected {0} frame")]
    UnexpectedFrame(Command),
    #[error("the first frame must be CONNECT or STOMP, not {0}")]
    NotConnected(Command),
    #[error("no common protocol version: this server supports 1.0, 1.1 and 1.2")]
    UnsupportedVersion,
    #[error("{0}")]
    NotAuthorized(&'static str),
    #[error("server is at its connection limit, try again later")]
    ServerBusy,
    #[error("subscription id {0:?} is already in use on this connection")]
    DuplicateSubscription(String),
    #[error("no subscription with id {0:?}")]
    UnknownSubscription(String),
    #[error("too many subscriptions on one connection (limit {0})")]
    TooManySubscriptions(usize),
    #[error("{command} of unknown message id {id:?} (never delivered, already acknowledged, or its subscription is gone)")]
    UnknownAck { command: Command, id: String },
    #[error("transaction {0:?} is already open")]
    DuplicateTransaction(String),
    #[error("no open transaction {0:?}")]
    UnknownTransaction(String),
    #[error("{0}")]
    TransactionLimit(&'static str),
    #[error("{0}")]
    OverBudget(#[from] crate::adapter::budget::OverBudget),
    #[error("frame not complete within limits.frame_timeout_secs ({0} s)")]
    FrameTimeout(u64),
    #[error("not authorized to {action} {destination}")]
    Denied {
        action: &'static str,
        destination: String,
    },
    #[error("message refused: {0}")]
    Refused(#[from] PublishRefused),
    #[error("{0}")]
    Stream(#[from] crate::core::stream::StreamError),
    /// A `selector` header that does not parse: where and what was expected.
    #[error("{0}")]
    Selector(#[from] crate::core::selector::SelectorError),
    #[error("the subscriptions of one connection to {0} must share one selector (it is one consumer of the queue)")]
    QueueSelectorMismatch(String),
    #[error("no heart-beat or frame from the client within {0} ms")]
    HeartBeatTimeout(u128),
    #[error("session ended by the server")]
    Kicked,
    #[error("server shutting down")]
    ShuttingDown,
    #[error("connection closed by peer")]
    PeerClosed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl StompAdapterError {
    /// The ERROR frame telling the client why, or None when nobody can read one.
    /// `receipt` is the `receipt` header of the frame that failed.
    pub fn error_frame(&self, receipt: Option<&str>) -> Option<Frame> {
        if matches!(
            self,
            StompAdapterError::PeerClosed | StompAdapterError::Io(_)
        ) {
            return None;
        }
        let message = self.to_string();
        let mut frame = Frame::new(Command::Error).with_header("message", message.clone());
        if let Some(receipt) = receipt {
            frame = frame.with_header("receipt-id", receipt);
        }
        let body = if matches!(self, StompAdapterError::UnsupportedVersion) {
            frame = frame.with_header("version", SUPPORTED_VERSIONS);
            // RabbitMQ's exact body, which clients display and users match on.
            Bytes::from(format!("Supported versions are {SUPPORTED_VERSIONS}\n"))
        } else {
            Bytes::from(message + "\n")
        };
        Some(
            frame
                .with_header("content-type", "text/plain")
                .with_body(body),
        )
    }

    /// Short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            StompAdapterError::Codec(_) => "malformed",
            StompAdapterError::MissingHeader { .. } | StompAdapterError::InvalidHeader { .. } => {
                "bad_header"
            }
            StompAdapterError::Destination(_) => "bad_destination",
            StompAdapterError::UnexpectedFrame(_) | StompAdapterError::NotConnected(_) => {
                "protocol_error"
            }
            StompAdapterError::UnsupportedVersion => "unsupported_version",
            StompAdapterError::NotAuthorized(_) | StompAdapterError::Denied { .. } => {
                "not_authorized"
            }
            StompAdapterError::ServerBusy => "server_busy",
            StompAdapterError::DuplicateSubscription(_)
            | StompAdapterError::UnknownSubscription(_)
            | StompAdapterError::TooManySubscriptions(_) => "bad_subscription",
            StompAdapterError::UnknownAck { .. } => "unknown_ack",
            StompAdapterError::DuplicateTransaction(_)
            | StompAdapterError::UnknownTransaction(_)
            | StompAdapterError::TransactionLimit(_) => "bad_transaction",
            StompAdapterError::Refused(PublishRefused::Queue(_)) => "queue_full",
            StompAdapterError::Refused(PublishRefused::StoreFull { .. }) => "store_full",
            StompAdapterError::Refused(PublishRefused::SubscriberFull { .. }) => "subscriber_full",
            StompAdapterError::Refused(PublishRefused::RetainedFull(_)) => "retained_full",
            StompAdapterError::Refused(PublishRefused::ClusterBusy) => "cluster_busy",
            StompAdapterError::Refused(
                PublishRefused::SchemaInvalid(_) | PublishRefused::PayloadNotUtf8,
            ) => "payload_invalid",
            StompAdapterError::Stream(_) => "bad_stream",
            StompAdapterError::Selector(_) | StompAdapterError::QueueSelectorMismatch(_) => {
                "bad_selector"
            }
            StompAdapterError::HeartBeatTimeout(_) => "heart_beat_timeout",
            StompAdapterError::OverBudget(_) => "buffer_budget",
            StompAdapterError::FrameTimeout(_) => "frame_timeout",
            StompAdapterError::Kicked => "kicked",
            StompAdapterError::ShuttingDown => "shutdown",
            StompAdapterError::PeerClosed => "peer_closed",
            StompAdapterError::Io(_) => "io_error",
            StompAdapterError::Store(_) => "store_error",
        }
    }

    /// Whether the client caused it (logged as a warning) rather than the
    /// connection simply ending.
    pub fn is_client_fault(&self) -> bool {
        !matches!(
            self,
            StompAdapterError::PeerClosed
                | StompAdapterError::Io(_)
                | StompAdapterError::ShuttingDown
                | StompAdapterError::Kicked
                | StompAdapterError::ServerBusy
        )
    }
}

/// Encodes an ERROR frame for a client whose version may not be known yet.
pub(super) fn encode_error(frame: &Frame, version: Option<Version>, buf: &mut bytes::BytesMut) {
    // Before negotiation, 1.0 rules: no escaping, which every client reads.
    tern_stomp::encode(frame, version.unwrap_or(Version::V1_0), buf);
}

impl From<Ended> for StompAdapterError {
    fn from(ended: Ended) -> Self {
        match ended {
            Ended::PeerClosed => StompAdapterError::PeerClosed,
            Ended::Io(e) => StompAdapterError::Io(e),
            Ended::Kicked(Some(KickReason::ShuttingDown)) => StompAdapterError::ShuttingDown,
            Ended::Kicked(_) => StompAdapterError::Kicked,
            Ended::Silent(after) => StompAdapterError::HeartBeatTimeout(after.as_millis()),
            Ended::FrameTimeout(secs) => StompAdapterError::FrameTimeout(secs),
            Ended::OverBudget(over) => StompAdapterError::OverBudget(over),
            Ended::Write(WriteError::Core(e)) => StompAdapterError::Store(e),
            Ended::Write(WriteError::Io(e)) => StompAdapterError::Io(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_frame_carries_message_and_receipt_id() {
        let e = StompAdapterError::MissingHeader {
            command: Command::Send,
            header: "destination",
        };
        let frame = e.error_frame(Some("r-7")).unwrap();
        assert_eq!(frame.command, Command::Error);
        assert_eq!(
            frame.header("message"),
            Some("Missing header: destination (SEND frames require it)")
        );
        assert_eq!(frame.header("receipt-id"), Some("r-7"));
        assert!(StompAdapterError::PeerClosed.error_frame(None).is_none());
    }

    #[test]
    fn version_mismatch_lists_supported_versions() {
        let frame = StompAdapterError::UnsupportedVersion
            .error_frame(None)
            .unwrap();
        assert_eq!(frame.header("version"), Some("1.0,1.1,1.2"));
        assert_eq!(&frame.body[..], b"Supported versions are 1.0,1.1,1.2\n");
        assert!(frame
            .header("message")
            .is_some_and(|m| m.starts_with("no common protocol version")));
    }
}
