//! Differential tests against `mqttbytes` 0.6 (the codec behind rumqtt).
//!
//! Proptest generates valid 3.1.1 and 5.0 packets. Direction 1: we encode, mqttbytes
//! decodes, and the fields must match. Direction 2: mqttbytes encodes, we decode, and the
//! fields must match.
//!
//! Places where mqttbytes is wrong or limited, and how they are excluded here:
//! - It rejects MQTT 3.1 (`MQIsdp`, level 3): 3.1 is not tested here at all (see the
//!   round-trip and unit tests instead).
//! - It cannot decode 5.0 DISCONNECT short forms `E0 00` / `E0 01 rc` (requires properties):
//!   direction 1 skips DISCONNECTs without properties.
//! - It has no AUTH packet: AUTH is never generated here.
//! - It reads properties with a byte cursor rather than a bounded slice, so it reads past
//!   the property length, and it over-counts each Subscription Identifier by one byte, which
//!   can make it stop early with several identifiers: PUBLISH gets at most one identifier.
//! - It accepts duplicate properties, unknown reserved flags, and packet id 0 in acks:
//!   nothing to exclude for valid input, covered by our unit tests instead.
//! - It truncates strings longer than 65,535 bytes (`as u16`): generated strings are short.
//! - Its password is a `String` (must be UTF-8), and an empty username/password is written
//!   as absent and read back as absent: usernames and passwords are generated non-empty,
//!   passwords UTF-8.
//! - Its 5.0 CONNACK omits the property length when properties are `None`: direction 2
//!   always passes `Some` properties.
//! - Its "no properties" is `None` where ours is `Properties::default()`: normalised.
//! - It does not check reserved fixed-header flags: nothing to exclude for valid input.

mod common;

use bytes::{Bytes, BytesMut};
use common::packet;
use mqttbytes::{v4, v5, QoS as MbQoS};
use proptest::prelude::*;
use tern_mqtt::{
    decode, encode, Ack, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion,
    Publish, QoS, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck, Unsubscribe,
    Will,
};

const MAX: usize = 1 << 20;

fn mb_qos(q: QoS) -> MbQoS {
    match q {
        QoS::AtMostOnce => MbQoS::AtMostOnce,
        QoS::AtLeastOnce => MbQoS::AtLeastOnce,
        QoS::ExactlyOnce => MbQoS::ExactlyOnce,
    }
}

fn our_qos(q: MbQoS) -> QoS {
    match q {
        MbQoS::AtMostOnce => QoS::AtMostOnce,
        MbQoS::AtLeastOnce => QoS::AtLeastOnce,
        MbQoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn pid(qos: QoS, pkid: u16) -> Option<u16> {
    (qos != QoS::AtMostOnce).then_some(pkid)
}

/// Bends a valid packet into the subset mqttbytes can represent (see the list at the top);
/// `None` for packets it has no type for.
fn oracle_friendly(p: Packet) -> Option<Packet> {
    Some(match p {
        Packet::Auth(_) => return None,
        Packet::Connect(mut c) => {
            if c.username.as_deref() == Some("") {
                c.username = Some("u".into());
            }
            if let Some(pw) = &c.password {
                if pw.is_empty() || std::str::from_utf8(pw).is_err() {
                    c.password = Some(Bytes::from_static(b"pw"));
                }
            }
            Packet::Connect(c)
        }
        Packet::Publish(mut p) => {
            p.properties.subscription_identifiers.truncate(1);
            Packet::Publish(p)
        }
        other => other,
    })
}

fn oracle_packet(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    packet(v).prop_filter_map("not representable in mqttbytes", oracle_friendly)
}

fn ours_to_bytes(p: &Packet, v: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(p, v, &mut buf).unwrap();
    buf
}

fn ours_from_bytes(mut buf: BytesMut, v: ProtocolVersion) -> Packet {
    let p = decode(&mut buf, v, MAX).unwrap().unwrap();
    assert!(buf.is_empty());
    p
}

// ---------------------------------------------------------------- MQTT 3.1.1 ---------------

fn login(username: &Option<String>, password: &Option<Bytes>) -> Option<(String, String)> {
    if username.is_none() && password.is_none() {
        return None;
    }
    let pw = password
        .as_ref()
        .map(|p| String::from_utf8(p.to_vec()).unwrap())
        .unwrap_or_default();
    Some((username.clone().unwrap_or_default(), pw))
}

fn unlogin(username: String, password: String) -> (Option<String>, Option<Bytes>) {
    (
        (!username.is_empty()).then_some(username),
        (!password.is_empty()).then(|| Bytes::from(password)),
    )
}

fn to_v4(p: &Packet) -> v4::Packet {
    match p {
        Packet::Connect(c) => v4::Packet::Connect(v4::Connect {
            protocol: mqttbytes::Protocol::V4,
            keep_alive: c.keep_alive,
            client_id: c.client_id.clone(),
            clean_session: c.clean_start,
            last_will: c.will.as_ref().map(|w| v4::LastWill {
                topic: w.topic.clone(),
                message: w.payload.clone(),
                qos: mb_qos(w.qos),
                retain: w.retain,
            }),
            login: login(&c.username, &c.password)
                .map(|(username, password)| v4::Login { username, password }),
        }),
        Packet::ConnAck(a) => v4::Packet::ConnAck(v4::ConnAck {
            session_present: a.session_present,
            code: match a.code {
                0 => v4::ConnectReturnCode::Success,
                1 => v4::ConnectReturnCode::RefusedProtocolVersion,
                2 => v4::ConnectReturnCode::BadClientId,
                3 => v4::ConnectReturnCode::ServiceUnavailable,
                4 => v4::ConnectReturnCode::BadUserNamePassword,
                _ => v4::ConnectReturnCode::NotAuthorized,
            },
        }),
        Packet::Publish(p) => v4::Packet::Publish(v4::Publish {
            dup: p.dup,
            qos: mb_qos(p.qos),
            retain: p.retain,
            topic: p.topic.clone(),
            pkid: p.packet_id.unwrap_or(0),
            payload: p.payload.clone(),
        }),
        Packet::PubAck(a) => v4::Packet::PubAck(v4::PubAck { pkid: a.packet_id }),
        Packet::PubRec(a) => v4::Packet::PubRec(v4::PubRec { pkid: a.packet_id }),
        Packet::PubRel(a) => v4::Packet::PubRel(v4::PubRel { pkid: a.packet_id }),
        Packet::PubComp(a) => v4::Packet::PubComp(v4::PubComp { pkid: a.packet_id }),
        Packet::Subscribe(s) => v4::Packet::Subscribe(v4::Subscribe {
            pkid: s.packet_id,
            filters: s
                .filters
                .iter()
                .map(|f| v4::SubscribeFilter::new(f.filter.clone(), mb_qos(f.options.qos)))
                .collect(),
        }),
        Packet::SubAck(a) => v4::Packet::SubAck(v4::SubAck {
            pkid: a.packet_id,
            return_codes: a
                .codes
                .iter()
                .map(|&c| v4::SubscribeReasonCode::try_from(c).unwrap())
                .collect(),
        }),
        Packet::Unsubscribe(u) => v4::Packet::Unsubscribe(v4::Unsubscribe {
            pkid: u.packet_id,
            topics: u.filters.clone(),
        }),
        Packet::UnsubAck(a) => v4::Packet::UnsubAck(v4::UnsubAck { pkid: a.packet_id }),
        Packet::PingReq => v4::Packet::PingReq,
        Packet::PingResp => v4::Packet::PingResp,
        Packet::Disconnect(_) => v4::Packet::Disconnect,
        Packet::Auth(_) => unreachable!("AUTH is not generated for the oracle"),
    }
}

fn v3_ack(packet_id: u16) -> Ack {
    Ack {
        packet_id,
        reason: 0,
        properties: Properties::default(),
    }
}

fn from_v4(p: v4::Packet) -> Packet {
    match p {
        v4::Packet::Connect(c) => {
            let (username, password) = c
                .login
                .map(|l| unlogin(l.username, l.password))
                .unwrap_or_default();
            Packet::Connect(Connect {
                protocol: ProtocolVersion::V311,
                clean_start: c.clean_session,
                keep_alive: c.keep_alive,
                client_id: c.client_id,
                will: c.last_will.map(|w| Will {
                    topic: w.topic,
                    payload: w.message,
                    qos: our_qos(w.qos),
                    retain: w.retain,
                    properties: Properties::default(),
                }),
                username,
                password,
                properties: Properties::default(),
                bridge: false,
            })
        }
        v4::Packet::ConnAck(a) => Packet::ConnAck(ConnAck {
            session_present: a.session_present,
            code: a.code as u8,
            properties: Properties::default(),
        }),
        v4::Packet::Publish(p) => Packet::Publish(Publish {
            dup: p.dup,
            qos: our_qos(p.qos),
            retain: p.retain,
            topic: p.topic,
            packet_id: pid(our_qos(p.qos), p.pkid),
            properties: Properties::default(),
            payload: p.payload,
        }),
        v4::Packet::PubAck(a) => Packet::PubAck(v3_ack(a.pkid)),
        v4::Packet::PubRec(a) => Packet::PubRec(v3_ack(a.pkid)),
        v4::Packet::PubRel(a) => Packet::PubRel(v3_ack(a.pkid)),
        v4::Packet::PubComp(a) => Packet::PubComp(v3_ack(a.pkid)),
        v4::Packet::Subscribe(s) => Packet::Subscribe(Subscribe {
            packet_id: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| SubscribeFilter {
                    filter: f.path,
                    options: SubscriptionOptions {
                        qos: our_qos(f.qos),
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: 0,
                    },
                })
                .collect(),
            properties: Properties::default(),
        }),
        v4::Packet::SubAck(a) => Packet::SubAck(SubAck {
            packet_id: a.pkid,
            codes: a
                .return_codes
                .into_iter()
                .map(|c| match c {
                    v4::SubscribeReasonCode::Success(q) => q as u8,
                    v4::SubscribeReasonCode::Failure => 0x80,
                })
                .collect(),
            properties: Properties::default(),
        }),
        v4::Packet::Unsubscribe(u) => Packet::Unsubscribe(Unsubscribe {
            packet_id: u.pkid,
            filters: u.topics,
            properties: Properties::default(),
        }),
        v4::Packet::UnsubAck(a) => Packet::UnsubAck(UnsubAck {
            packet_id: a.pkid,
            codes: Vec::new(),
            properties: Properties::default(),
        }),
        v4::Packet::PingReq => Packet::PingReq,
        v4::Packet::PingResp => Packet::PingResp,
        v4::Packet::Disconnect => Packet::Disconnect(Disconnect {
            reason: 0,
            properties: Properties::default(),
        }),
    }
}

fn write_v4(p: &v4::Packet) -> BytesMut {
    let mut buf = BytesMut::new();
    match p {
        v4::Packet::Connect(x) => x.write(&mut buf),
        v4::Packet::ConnAck(x) => x.write(&mut buf),
        v4::Packet::Publish(x) => x.write(&mut buf),
        v4::Packet::PubAck(x) => x.write(&mut buf),
        v4::Packet::PubRec(x) => x.write(&mut buf),
        v4::Packet::PubRel(x) => x.write(&mut buf),
        v4::Packet::PubComp(x) => x.write(&mut buf),
        v4::Packet::Subscribe(x) => x.write(&mut buf),
        v4::Packet::SubAck(x) => x.write(&mut buf),
        v4::Packet::Unsubscribe(x) => x.write(&mut buf),
        v4::Packet::UnsubAck(x) => x.write(&mut buf),
        v4::Packet::PingReq => v4::PingReq.write(&mut buf),
        v4::Packet::PingResp => v4::PingResp.write(&mut buf),
        v4::Packet::Disconnect => v4::Disconnect.write(&mut buf),
    }
    .unwrap();
    buf
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn v311_we_encode_mqttbytes_decodes(p in oracle_packet(ProtocolVersion::V311)) {
        let mut buf = ours_to_bytes(&p, ProtocolVersion::V311);
        let theirs = v4::read(&mut buf, MAX).unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(from_v4(theirs), p);
    }

    #[test]
    fn v311_mqttbytes_encodes_we_decode(p in oracle_packet(ProtocolVersion::V311)) {
        let buf = write_v4(&to_v4(&p));
        prop_assert_eq!(ours_from_bytes(buf, ProtocolVersion::V311), p);
    }
}

#[path = "oracle/v5.rs"]
mod v5_oracle;
