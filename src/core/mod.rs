//! The routing core: topics, subscriptions, sessions and messages. It knows no
//! protocol; adapters translate into and out of it.

pub(crate) mod arena;
pub mod cluster_queue;
pub mod cluster_state;
pub mod commit;
pub mod content;
pub mod exceptions;
#[cfg(test)]
mod exceptions_tests;
pub mod fabric;
pub mod message;
pub(crate) mod packet_ids;
pub mod peer_marks;
pub(crate) mod pending;
pub mod queue;
pub mod retain;
pub(crate) mod retained_backlog;
pub mod retained_set;
pub mod router;
pub mod schema;
pub mod selector;
pub mod session;
pub mod stream;
pub(crate) mod subscription_list;
pub mod topic;
pub mod topic_limits;
pub mod trie;

#[cfg(test)]
mod session_tests;

#[cfg(test)]
mod routing_tests;

#[cfg(test)]
mod selector_routing_tests;
