//! DISCONNECT and AUTH bodies (PINGREQ/PINGRESP have none).

use crate::codes::{check, reason};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{self, PropKind};
use crate::types::{Auth, Disconnect, ProtocolVersion};
use crate::wire::{Reader, Sink};

/// 5.0 reason code and properties, both omissible: an empty body means success without
/// properties, a single byte means a reason without properties.
fn decode_reason_and_props(
    r: &mut Reader,
    allowed: &[u8],
    kind: PropKind,
) -> Result<(u8, crate::Properties), DecodeError> {
    if r.is_empty() {
        return Ok((reason::SUCCESS, Default::default()));
    }
    let code = check(r.u8()?, allowed)?;
    let props = if r.is_empty() {
        Default::default()
    } else {
        properties::decode(r, kind)?
    };
    Ok((code, props))
}

/// 3.x DISCONNECT has no body (the header parser already enforced remaining length 0).
pub(crate) fn decode_disconnect(
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<Disconnect, DecodeError> {
    if !version.is_v5() {
        return Ok(Disconnect {
            reason: reason::NORMAL_DISCONNECTION,
            properties: Default::default(),
        });
    }
    let (reason, properties) =
        decode_reason_and_props(r, reason::DISCONNECT, PropKind::Disconnect)?;
    Ok(Disconnect { reason, properties })
}

/// Shortest form: `E0 00` for normal disconnection, `E0 01 rc` for a bare reason.
pub(crate) fn encode_disconnect<S: Sink>(
    d: &Disconnect,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    if !version.is_v5() {
        return Ok(());
    }
    let bare = d.properties.is_empty();
    if bare && d.reason == reason::NORMAL_DISCONNECTION {
        return Ok(());
    }
    s.put_u8(d.reason);
    if !bare {
        properties::encode(&d.properties, PropKind::Disconnect, s)?;
    }
    Ok(())
}

/// A bare reason byte is accepted as for DISCONNECT although the spec only names the empty form.
pub(crate) fn decode_auth(r: &mut Reader) -> Result<Auth, DecodeError> {
    let (reason, properties) = decode_reason_and_props(r, reason::AUTH, PropKind::Auth)?;
    Ok(Auth { reason, properties })
}

/// `F0 00` for success without properties; otherwise always with a property length, the
/// only non-empty form the spec spells out.
pub(crate) fn encode_auth<S: Sink>(a: &Auth, s: &mut S) -> Result<(), EncodeError> {
    if a.properties.is_empty() && a.reason == reason::SUCCESS {
        return Ok(());
    }
    s.put_u8(a.reason);
    properties::encode(&a.properties, PropKind::Auth, s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;
    use crate::{Packet, Properties};

    fn disconnect(reason: u8) -> Packet {
        Packet::Disconnect(Disconnect {
            reason,
            properties: Properties::default(),
        })
    }

    fn auth(reason: u8) -> Packet {
        Packet::Auth(Auth {
            reason,
            properties: Properties::default(),
        })
    }

    #[test]
    fn disconnect_v5_short_forms_decode() {
        assert_eq!(dec(&[0xE0, 0x00], V5), Ok(disconnect(0)));
        assert_eq!(dec(&[0xE0, 0x01, 0x04], V5), Ok(disconnect(0x04)));
        assert_eq!(dec(&[0xE0, 0x02, 0x8E, 0x00], V5), Ok(disconnect(0x8E)));
    }

    #[test]
    fn disconnect_v5_encoder_uses_short_forms() {
        assert_eq!(enc(&disconnect(0), V5), [0xE0, 0x00]);
        assert_eq!(enc(&disconnect(0x04), V5), [0xE0, 0x01, 0x04]);
        assert_eq!(enc(&disconnect(0x04), V311), [0xE0, 0x00]);
    }

    #[test]
    fn disconnect_v5_with_properties_round_trips() {
        let mut d = Disconnect {
            reason: 0,
            properties: Properties::default(),
        };
        d.properties.session_expiry_interval = Some(0);
        d.properties.server_reference = Some("other".into());
        round_trip(&Packet::Disconnect(d), V5);
    }

    #[test]
    fn disconnect_v5_invalid_reason_code_is_protocol_error() {
        assert!(is_protocol_error(dec(&[0xE0, 0x01, 0x10], V5)));
    }

    #[test]
    fn disconnect_v5_disallowed_property_is_protocol_error() {
        // Topic Alias Maximum (0x22) is CONNECT/CONNACK only.
        assert!(is_protocol_error(dec(
            &[0xE0, 0x05, 0x00, 0x03, 0x22, 0x00, 0x01],
            V5
        )));
    }

    #[test]
    fn auth_v5_short_form_decodes() {
        assert_eq!(dec(&[0xF0, 0x00], V5), Ok(auth(0)));
        assert_eq!(dec(&[0xF0, 0x02, 0x18, 0x00], V5), Ok(auth(0x18)));
    }

    #[test]
    fn auth_v5_encoder_uses_short_form_for_success() {
        assert_eq!(enc(&auth(0), V5), [0xF0, 0x00]);
        assert_eq!(enc(&auth(0x19), V5), [0xF0, 0x02, 0x19, 0x00]);
    }

    #[test]
    fn auth_in_v3_cannot_be_encoded() {
        let mut buf = bytes::BytesMut::new();
        assert!(crate::encode(&auth(0), V311, &mut buf).is_err());
    }

    #[test]
    fn auth_with_method_and_data_round_trips() {
        let mut a = Auth {
            reason: 0x18,
            properties: Properties::default(),
        };
        a.properties.authentication_method = Some("SCRAM-SHA-1".into());
        a.properties.authentication_data = Some(bytes::Bytes::from_static(b"\x00\x01"));
        round_trip(&Packet::Auth(a), V5);
    }

    #[test]
    fn auth_invalid_reason_code_is_protocol_error() {
        assert!(is_protocol_error(dec(&[0xF0, 0x02, 0x01, 0x00], V5)));
    }
}
