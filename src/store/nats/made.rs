//! Making a JetStream stream that another node may be making at the same
//! moment. Nodes started together against a fresh NATS each find a shared
//! stream (the queues, the shared groups, the journal, a bucket) missing and
//! each create it; nats-server answers all but the first with an error
//! (2.9: "subjects overlap with an existing stream"), and the losing node
//! exited at start. The loser now reads the stream the winner made.

use std::time::Duration;

use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
use async_nats::jetstream::stream::{Config, Stream};
use async_nats::jetstream::{self, ErrorCode};

/// Attempts at a create that another node's create of the same stream
/// refused, each after [`PAUSE`] (the stream is read first each time).
const ATTEMPTS: usize = 10;
const PAUSE: Duration = Duration::from_millis(100);

/// `get_or_create_stream`, safe against a node making the same stream at
/// the same moment (then the stream that node made; the caller compares its
/// configuration as it would an existing stream's).
pub(crate) async fn get_or_create_stream(
    jetstream: &jetstream::Context,
    config: Config,
) -> Result<Stream, CreateStreamError> {
    let mut attempt = 1;
    loop {
        match jetstream.get_or_create_stream(config.clone()).await {
            Err(e) if made_meanwhile(&e) && attempt < ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(PAUSE).await;
            }
            made => return made,
        }
    }
}

/// The answers to a create that lost the race to another: a stream of that
/// name exists now (or one with its subjects: if it is not this one, every
/// attempt fails alike and the error stands).
fn made_meanwhile(error: &CreateStreamError) -> bool {
    match error.kind() {
        CreateStreamErrorKind::JetStream(e) => matches!(
            e.error_code(),
            ErrorCode::STREAM_SUBJECT_OVERLAP | ErrorCode::STREAM_NAME_EXIST
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::nats::test_server::Nats;

    fn config() -> Config {
        Config {
            name: "RACE".into(),
            subjects: vec!["race.>".into()],
            ..Default::default()
        }
    }

    /// A stream of another name on `config`'s subjects: a create of
    /// `config` is refused while it exists.
    async fn take_the_subjects(js: &jetstream::Context) {
        js.create_stream(Config {
            name: "OTHER".into(),
            ..config()
        })
        .await
        .expect("made");
    }

    #[tokio::test]
    async fn a_refused_create_finds_the_stream_another_node_made() {
        use futures_util::StreamExt;
        let nats = Nats::start().await;
        let client = async_nats::connect(&nats.url).await.expect("connect");
        let js = jetstream::new(client.clone());
        take_the_subjects(&js).await;
        let mut creates = client
            .subscribe("$JS.API.STREAM.CREATE.RACE")
            .await
            .expect("subscribed");
        client.flush().await.expect("flushed");
        let maker = {
            let js = js.clone();
            tokio::spawn(async move { get_or_create_stream(&js, config()).await.map(|_| ()) })
        };
        creates.next().await.expect("a create was sent");
        // What another node's create leaves: the stream, made meanwhile.
        js.delete_stream("OTHER").await.expect("deleted");
        js.create_stream(config()).await.expect("made");
        let made = maker.await.expect("joined");
        assert!(made.is_ok(), "{made:?}");
    }

    #[tokio::test]
    async fn another_stream_on_the_subjects_is_still_an_error() {
        let nats = Nats::start().await;
        let js = jetstream::new(async_nats::connect(&nats.url).await.expect("connect"));
        take_the_subjects(&js).await;
        let Err(error) = get_or_create_stream(&js, config()).await else {
            panic!("a stream of another name on its subjects: refused");
        };
        assert!(made_meanwhile(&error), "{error}");
    }
}
