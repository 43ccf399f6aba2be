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
