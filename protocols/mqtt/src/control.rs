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
