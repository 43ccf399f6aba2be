//! Tern: a multi-protocol IoT message broker.
