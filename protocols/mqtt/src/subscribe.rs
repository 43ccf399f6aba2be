//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK bodies.

use crate::codes::{check, reason};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{self, PropKind};
use crate::publish::{packet_id, put_packet_id};
use crate::types::{
    ProtocolVersion, QoS, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck,
    Unsubscribe,
};
use crate::wire::{Reader, Sink};

const NO_LOCAL: u8 = 0x04;
const RETAIN_AS_PUBLISHED: u8 = 0x08;

/// Subscription options byte: reserved bits are malformed, retain handling 3 a protocol error.
fn decode_options(b: u8, version: ProtocolVersion) -> Result<SubscriptionOptions, DecodeError> {
    let reserved = if version.is_v5() { 0xC0 } else { 0xFC };
    if b & reserved != 0 {
        return Err(DecodeError::MalformedPacket(
            "subscription options reserved bits are set",
        ));
    }
    let qos = QoS::from_u8(b & 0x03).ok_or(DecodeError::MalformedPacket("subscription QoS 3"))?;
    let retain_handling = (b >> 4) & 0x03;
    if retain_handling == 3 {
        return Err(DecodeError::ProtocolError("retain handling 3"));
    }
    Ok(SubscriptionOptions {
        qos,
        no_local: b & NO_LOCAL != 0,
        retain_as_published: b & RETAIN_AS_PUBLISHED != 0,
        retain_handling,
    })
}

fn encode_options(o: &SubscriptionOptions, version: ProtocolVersion) -> Result<u8, EncodeError> {
    let mut b = o.qos as u8;
    if version.is_v5() {
        if o.retain_handling > 2 {
            return Err(EncodeError::InvalidPacket("retain handling above 2"));
        }
        b |= o.retain_handling << 4;
        if o.no_local {
            b |= NO_LOCAL;
        }
        if o.retain_as_published {
            b |= RETAIN_AS_PUBLISHED;
        }
    }
    Ok(b)
}

fn decode_props(
    r: &mut Reader,
    version: ProtocolVersion,
    kind: PropKind,
) -> Result<crate::Properties, DecodeError> {
    if version.is_v5() {
        properties::decode(r, kind)
    } else {
        Ok(Default::default())
    }
}

fn encode_props<S: Sink>(
    p: &crate::Properties,
    version: ProtocolVersion,
    kind: PropKind,
    s: &mut S,
) -> Result<(), EncodeError> {
    if version.is_v5() {
        properties::encode(p, kind, s)?;
    }
    Ok(())
}

pub(crate) fn decode_subscribe(
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = decode_props(r, version, PropKind::Subscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        // Filter syntax is the broker's call (it answers per filter in SUBACK).
        let filter = r.string()?;
        let options = decode_options(r.u8()?, version)?;
        filters.push(SubscribeFilter { filter, options });
    }
    if filters.is_empty() {
        return Err(DecodeError::ProtocolError("SUBSCRIBE without filters"));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

pub(crate) fn encode_subscribe<S: Sink>(
    sub: &Subscribe,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    if sub.filters.is_empty() {
        return Err(EncodeError::InvalidPacket("SUBSCRIBE without filters"));
    }
    if version.is_v5() && sub.properties.subscription_identifiers.len() > 1 {
        return Err(EncodeError::InvalidPacket(
            "SUBSCRIBE carries at most one subscription identifier",
        ));
    }
    put_packet_id(s, sub.packet_id)?;
    encode_props(&sub.properties, version, PropKind::Subscribe, s)?;
    for f in &sub.filters {
        s.put_string(&f.filter, "topic filter")?;
        s.put_u8(encode_options(&f.options, version)?);
    }
    Ok(())
}

pub(crate) fn decode_suback(
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = decode_props(r, version, PropKind::SubAck)?;
    let allowed = if version.is_v5() {
        reason::SUBACK
    } else {
        reason::SUBACK_V3
    };
    let codes = r.rest().to_vec();
    for &c in &codes {
        check(c, allowed)?;
    }
    if codes.is_empty() {
        return Err(DecodeError::ProtocolError("SUBACK without return codes"));
    }
    Ok(SubAck {
        packet_id,
        codes,
        properties,
    })
}

pub(crate) fn encode_suback<S: Sink>(
    a: &SubAck,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    put_packet_id(s, a.packet_id)?;
    encode_props(&a.properties, version, PropKind::SubAck, s)?;
    s.put_slice(&a.codes);
    Ok(())
}

pub(crate) fn decode_unsubscribe(
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = decode_props(r, version, PropKind::Unsubscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        return Err(DecodeError::ProtocolError("UNSUBSCRIBE without filters"));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

pub(crate) fn encode_unsubscribe<S: Sink>(
    u: &Unsubscribe,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    if u.filters.is_empty() {
        return Err(EncodeError::InvalidPacket("UNSUBSCRIBE without filters"));
    }
    put_packet_id(s, u.packet_id)?;
    encode_props(&u.properties, version, PropKind::Unsubscribe, s)?;
    for f in &u.filters {
        s.put_string(f, "topic filter")?;
    }
    Ok(())
}

/// 3.x UNSUBACK is only a packet id; 5.0 adds properties and one reason code per filter.
pub(crate) fn decode_unsuback(
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut ack = UnsubAck {
        packet_id,
        codes: Vec::new(),
        properties: Default::default(),
    };
    if version.is_v5() {
        ack.properties = properties::decode(r, PropKind::UnsubAck)?;
        ack.codes = r.rest().to_vec();
        for &c in &ack.codes {
            check(c, reason::UNSUBACK)?;
        }
        if ack.codes.is_empty() {
            return Err(DecodeError::ProtocolError("UNSUBACK without reason codes"));
        }
    }
    Ok(ack)
}

pub(crate) fn encode_unsuback<S: Sink>(
    a: &UnsubAck,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    put_packet_id(s, a.packet_id)?;
    if version.is_v5() {
        properties::encode(&a.properties, PropKind::UnsubAck, s)?;
        s.put_slice(&a.codes);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;
    use crate::{Packet, Properties};

    /// SUBSCRIBE with packet id 1, (5.0: empty properties) and the given filter/options pairs.
    fn subscribe(v: ProtocolVersion, filters: &[(&str, u8)]) -> Vec<u8> {
        let mut body = vec![0x00, 0x01];
        if v == V5 {
            body.push(0x00);
        }
        for (f, o) in filters {
            body.extend(s(f));
            body.push(*o);
        }
        frame(0x82, &body)
    }

    fn opts(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        }
    }

    #[test]
    fn subscribe_without_filters_is_protocol_error() {
        for v in [V31, V311, V5] {
            assert!(is_protocol_error(dec(&subscribe(v, &[]), v)));
        }
    }

    #[test]
    fn unsubscribe_without_filters_is_protocol_error() {
        assert!(is_protocol_error(dec(&[0xA2, 0x02, 0x00, 0x01], V311)));
        assert!(is_protocol_error(dec(&[0xA2, 0x03, 0x00, 0x01, 0x00], V5)));
    }

    #[test]
    fn subscribe_with_packet_id_0_is_protocol_error() {
        let mut b = subscribe(V311, &[("a", 0)]);
        b[3] = 0;
        assert!(is_protocol_error(dec(&b, V311)));
        assert!(is_protocol_error(dec(
            &[0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, b'a'],
            V311
        )));
    }

    #[test]
    fn subscribe_options_reserved_bits_are_malformed() {
        for o in [0x40, 0x80] {
            assert!(is_malformed(dec(&subscribe(V5, &[("a", o)]), V5)));
        }
        for o in [0x04, 0x08, 0x10, 0x20, 0x40, 0x80] {
            assert!(is_malformed(dec(&subscribe(V311, &[("a", o)]), V311)));
            assert!(is_malformed(dec(&subscribe(V31, &[("a", o)]), V31)));
        }
    }

    #[test]
    fn subscribe_retain_handling_3_is_protocol_error() {
        assert!(is_protocol_error(dec(&subscribe(V5, &[("a", 0x30)]), V5)));
    }

    #[test]
    fn subscribe_qos_3_is_malformed() {
        assert!(is_malformed(dec(&subscribe(V5, &[("a", 0x03)]), V5)));
        assert!(is_malformed(dec(&subscribe(V311, &[("a", 0x03)]), V311)));
    }

    #[test]
    fn subscribe_filter_syntax_is_not_checked() {
        let b = subscribe(V311, &[("", 0), ("a/#/b", 1), ("x+", 2)]);
        let Packet::Subscribe(sub) = dec(&b, V311).unwrap() else {
            panic!()
        };
        let names: Vec<_> = sub.filters.iter().map(|f| f.filter.as_str()).collect();
        assert_eq!(names, ["", "a/#/b", "x+"]);
        assert_eq!(sub.filters[2].options, opts(QoS::ExactlyOnce));
    }

    #[test]
    fn subscribe_filter_missing_options_byte_is_malformed() {
        let mut body = vec![0x00, 0x01];
        body.extend(s("a"));
        assert!(is_malformed(dec(&frame(0x82, &body), V311)));
    }

    #[test]
    fn subscribe_v5_options_decode() {
        let Packet::Subscribe(sub) = dec(&subscribe(V5, &[("a", 0x2E)]), V5).unwrap() else {
            panic!()
        };
        assert_eq!(
            sub.filters[0].options,
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: 2,
            }
        );
    }

    #[test]
    fn subscribe_with_two_subscription_identifiers_is_protocol_error() {
        let mut body = vec![0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02];
        body.extend(s("a"));
        body.push(0);
        assert!(is_protocol_error(dec(&frame(0x82, &body), V5)));
    }

    #[test]
    fn subscribe_family_round_trips_in_every_version() {
        for v in [V31, V311, V5] {
            let mut sub = Subscribe {
                packet_id: 3,
                filters: vec![
                    SubscribeFilter {
                        filter: "a/+".into(),
                        options: opts(QoS::AtLeastOnce),
                    },
                    SubscribeFilter {
                        filter: "#".into(),
                        options: opts(QoS::AtMostOnce),
                    },
                ],
                properties: Properties::default(),
            };
            let mut unsub = Unsubscribe {
                packet_id: 4,
                filters: vec!["a/+".into(), "#".into()],
                properties: Properties::default(),
            };
            let mut suback = SubAck {
                packet_id: 3,
                codes: vec![1, 0x80],
                properties: Properties::default(),
            };
            let mut unsuback = UnsubAck {
                packet_id: 4,
                codes: vec![],
                properties: Properties::default(),
            };
            if v == V5 {
                sub.filters[0].options = SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: 1,
                };
                sub.properties.subscription_identifiers = vec![42];
                unsub.properties.user_properties = vec![("a".into(), "b".into())];
                suback.codes.push(0x8F);
                suback.properties.reason_string = Some("no".into());
                unsuback.codes = vec![0x00, 0x11];
            }
            round_trip(&Packet::Subscribe(sub), v);
            round_trip(&Packet::Unsubscribe(unsub), v);
            round_trip(&Packet::SubAck(suback), v);
            round_trip(&Packet::UnsubAck(unsuback), v);
        }
    }

    #[test]
    fn suback_without_codes_is_protocol_error() {
        assert!(is_protocol_error(dec(&[0x90, 0x02, 0x00, 0x01], V311)));
    }

    #[test]
    fn suback_with_invalid_code_is_rejected() {
        assert!(dec(&[0x90, 0x03, 0x00, 0x01, 0x03], V311).is_err());
        assert!(dec(&[0x90, 0x03, 0x00, 0x01, 0x8F], V311).is_err());
        assert!(dec(&[0x90, 0x04, 0x00, 0x01, 0x00, 0x10], V5).is_err());
    }

    #[test]
    fn unsuback_v311_has_no_payload() {
        assert!(is_malformed(dec(&[0xB0, 0x03, 0x00, 0x01, 0x00], V311)));
        let a = UnsubAck {
            packet_id: 1,
            codes: vec![0, 0],
            properties: Properties::default(),
        };
        assert_eq!(enc(&Packet::UnsubAck(a), V311), [0xB0, 0x02, 0x00, 0x01]);
    }

    #[test]
    fn unsuback_v5_without_codes_is_protocol_error() {
        assert!(is_protocol_error(dec(&[0xB0, 0x03, 0x00, 0x01, 0x00], V5)));
    }

    #[test]
    fn subscribe_v3_encoding_drops_v5_options() {
        let sub = Subscribe {
            packet_id: 1,
            filters: vec![SubscribeFilter {
                filter: "a".into(),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: 2,
                },
            }],
            properties: Properties::default(),
        };
        assert_eq!(
            enc(&Packet::Subscribe(sub), V311),
            [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x01]
        );
    }
}
