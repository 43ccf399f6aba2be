//! Hand-made byte strings: real-world packets that must decode, and every strictness rule
//! (including each place where mqttbytes is lenient) that must be refused with the right
//! reason code.

use bytes::{Bytes, BytesMut};
use tern_mqtt::{
    decode, encode, reason, Connect, DecodeError, Disconnect, Packet, Properties, ProtocolVersion,
    QoS,
};

use ProtocolVersion::{V31, V311, V5};

fn dec(bytes: &[u8], v: ProtocolVersion) -> Result<Option<Packet>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    decode(&mut buf, v, 1 << 20)
}

/// Asserts `bytes` is refused in `v` with MQTT 5 reason code `code`.
#[track_caller]
fn refused(bytes: &[u8], v: ProtocolVersion, code: u8) {
    match dec(bytes, v) {
        Err(e) => assert_eq!(e.reason_code(), code, "{e:?} for {bytes:02x?}"),
        Ok(p) => panic!("accepted {p:?} from {bytes:02x?}"),
    }
}

#[track_caller]
fn accepted(bytes: &[u8], v: ProtocolVersion) -> Packet {
    dec(bytes, v).unwrap().unwrap()
}

const MALFORMED: u8 = reason::MALFORMED_PACKET;
const PROTOCOL: u8 = reason::PROTOCOL_ERROR;

#[test]
fn mosquitto_pub_v311_connect_decodes() {
    // mosquitto_pub -V mqttv311 -i c1 -u user -P pass -t t -m m (clean session, keep alive 60)
    let bytes = [
        0x10, 0x1A, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xC2, 0x00, 0x3C, 0x00, 0x02, b'c',
        b'1', 0x00, 0x04, b'u', b's', b'e', b'r', 0x00, 0x04, b'p', b'a', b's', b's',
    ];
    let expected = Connect {
        protocol: V311,
        clean_start: true,
        keep_alive: 60,
        client_id: "c1".into(),
        will: None,
        username: Some("user".into()),
        password: Some(Bytes::from_static(b"pass")),
        properties: Properties::default(),
        bridge: false,
    };
    assert_eq!(accepted(&bytes, V311), Packet::Connect(expected));
}

#[test]
fn mqtt31_connect_decodes_although_mqttbytes_rejects_it() {
    let bytes = [
        0x10, 0x0E, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x0A, 0x00,
        0x00,
    ];
    let Packet::Connect(c) = accepted(&bytes, V311) else {
        panic!()
    };
    assert_eq!(c.protocol, V31);
    assert_eq!(c.client_id, "");
}

#[test]
fn v5_connect_with_properties_decodes() {
    // Session Expiry 120, Receive Maximum 20, client id "a".
    let bytes = [
        0x10, 0x16, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x1E, 0x08, 0x11, 0x00,
        0x00, 0x00, 0x78, 0x21, 0x00, 0x14, 0x00, 0x01, b'a',
    ];
    let Packet::Connect(c) = accepted(&bytes, V311) else {
        panic!()
    };
    assert_eq!(c.protocol, V5);
    assert_eq!(c.properties.session_expiry_interval, Some(120));
    assert_eq!(c.properties.receive_maximum, Some(20));
}

#[test]
fn unsupported_protocol_versions_report_name_and_level() {
    let bytes = [
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x0A, 0x00, 0x00,
    ];
    assert_eq!(
        dec(&bytes, V311),
        Err(DecodeError::UnsupportedProtocolVersion {
            name: "MQTT".into(),
            level: 6
        })
    );
    // The bridge flag (high bit) belongs to 3.x levels: 0x85 is no version,
    // while 0x84 is a 3.1.1 bridge.
    let mut v5_bridge = bytes;
    v5_bridge[8] = 0x85;
    refused(&v5_bridge, V311, reason::UNSUPPORTED_PROTOCOL_VERSION);
    let mut bridge = bytes;
    bridge[8] = 0x84;
    let Packet::Connect(c) = accepted(&bridge, V311) else {
        panic!()
    };
    assert!(c.bridge && c.protocol == V311);
}

#[test]
fn empty_password_is_present_although_mqttbytes_drops_it() {
    let bytes = [
        0x10, 0x13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xC2, 0x00, 0x0A, 0x00, 0x00, 0x00,
        0x03, b'b', b'o', b'b', 0x00, 0x00,
    ];
    let Packet::Connect(c) = accepted(&bytes, V311) else {
        panic!()
    };
    assert_eq!(c.password, Some(Bytes::new()));
}

#[test]
fn v5_disconnect_short_forms_decode_although_mqttbytes_rejects_them() {
    let normal = Packet::Disconnect(Disconnect {
        reason: 0,
        properties: Properties::default(),
    });
    assert_eq!(accepted(&[0xE0, 0x00], V5), normal);
    let with_will = Packet::Disconnect(Disconnect {
        reason: reason::DISCONNECT_WITH_WILL,
        properties: Properties::default(),
    });
    assert_eq!(accepted(&[0xE0, 0x01, 0x04], V5), with_will);
    let mut buf = BytesMut::new();
    encode(&with_will, V5, &mut buf).unwrap();
    assert_eq!(&buf[..], &[0xE0, 0x01, 0x04]);
}

#[test]
fn v5_auth_decodes_and_v3_auth_is_malformed() {
    assert!(matches!(accepted(&[0xF0, 0x00], V5), Packet::Auth(_)));
    refused(&[0xF0, 0x00], V311, MALFORMED);
    refused(&[0xF0, 0x00], V31, MALFORMED);
}

#[test]
fn property_length_past_the_packet_is_malformed_although_mqttbytes_reads_on() {
    // PUBLISH "t", properties claim 5 bytes but the packet ends after 3.
    refused(
        &[0x30, 0x07, 0x00, 0x01, b't', 0x05, 0x23, 0x00, 0x01],
        V5,
        MALFORMED,
    );
    // SUBSCRIBE: user property string runs past the 4-byte property length into the filter.
    refused(
        &[
            0x82, 0x0D, 0x00, 0x01, 0x04, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', 0x00, 0x01,
            b'a', 0x00,
        ],
        V5,
        MALFORMED,
    );
}

#[test]
fn duplicate_properties_are_protocol_errors_although_mqttbytes_accepts_them() {
    // PUBLISH with Topic Alias twice.
    refused(
        &[
            0x30, 0x0A, 0x00, 0x01, b't', 0x06, 0x23, 0x00, 0x01, 0x23, 0x00, 0x02,
        ],
        V5,
        PROTOCOL,
    );
}

#[test]
fn reserved_fixed_header_flags_are_malformed_although_mqttbytes_ignores_them() {
    refused(&[0x42, 0x02, 0x00, 0x01], V311, MALFORMED); // PUBACK with flags 0010
    refused(&[0x60, 0x02, 0x00, 0x01], V311, MALFORMED); // PUBREL with flags 0000
    refused(
        &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
        V311,
        MALFORMED,
    );
    refused(&[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'], V311, MALFORMED);
    refused(&[0xC1, 0x00], V311, MALFORMED);
}

#[test]
fn packet_type_0_is_malformed() {
    refused(&[0x00, 0x00], V5, MALFORMED);
}

#[test]
fn publish_qos3_and_qos0_dup_are_malformed() {
    refused(&[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01], V311, MALFORMED);
    refused(&[0x38, 0x03, 0x00, 0x01, b't'], V311, MALFORMED);
}

#[test]
fn five_byte_remaining_length_is_malformed() {
    refused(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01], V311, MALFORMED);
}

#[test]
fn connect_flag_rules() {
    let connect = |flags: u8, tail: &[u8]| {
        let mut b = vec![0x10, 0];
        b.extend([0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, flags, 0x00, 0x0A]);
        b.extend([0x00, 0x01, b'c']);
        b.extend_from_slice(tail);
        b[1] = (b.len() - 2) as u8;
        b
    };
    refused(&connect(0x03, &[]), V311, MALFORMED); // reserved bit
    refused(&connect(0x0A, &[]), V311, MALFORMED); // will QoS without will
    refused(&connect(0x22, &[]), V311, MALFORMED); // will retain without will
    refused(&connect(0x42, &[0x00, 0x01, b'p']), V311, MALFORMED); // password, no username
}

#[test]
fn topic_name_rules() {
    refused(&[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+'], V311, 0x90);
    refused(&[0x30, 0x03, 0x00, 0x01, b'#'], V311, 0x90);
    refused(&[0x30, 0x02, 0x00, 0x00], V311, 0x90);
    refused(&[0x30, 0x03, 0x00, 0x00, 0x00], V5, 0x90);
    let Packet::Publish(p) = accepted(&[0x30, 0x06, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01], V5) else {
        panic!()
    };
    assert_eq!((p.topic.as_str(), p.properties.topic_alias), ("", Some(1)));
}

#[test]
fn strings_must_be_utf8_without_nul() {
    refused(&[0x30, 0x03, 0x00, 0x01, 0xFF], V311, MALFORMED);
    refused(&[0x30, 0x03, 0x00, 0x01, 0x00], V311, MALFORMED);
    refused(&[0x30, 0x05, 0x00, 0x03, 0xED, 0xA0, 0x80], V311, MALFORMED); // U+D800
}

#[test]
fn packet_id_zero_is_refused() {
    refused(&[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00], V311, PROTOCOL);
    refused(&[0x40, 0x02, 0x00, 0x00], V5, PROTOCOL);
    refused(
        &[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00],
        V311,
        PROTOCOL,
    );
    refused(&[0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, b'a'], V311, PROTOCOL);
}

#[test]
fn subscribe_rules() {
    refused(&[0x82, 0x02, 0x00, 0x01], V311, PROTOCOL); // no filters
    refused(&[0xA2, 0x02, 0x00, 0x01], V311, PROTOCOL); // no filters
    refused(
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x04],
        V311,
        MALFORMED,
    ); // bit 2 in 3.x
    refused(
        &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x40],
        V5,
        MALFORMED,
    );
    refused(
        &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x30],
        V5,
        PROTOCOL,
    );
    refused(
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03],
        V311,
        MALFORMED,
    );
    // Filter syntax is the broker's business, including the empty filter.
    let Packet::Subscribe(s) = accepted(&[0x82, 0x05, 0x00, 0x01, 0x00, 0x00, 0x01], V311) else {
        panic!()
    };
    assert_eq!(s.filters[0].filter, "");
    assert_eq!(s.filters[0].options.qos, QoS::AtLeastOnce);
}

#[test]
fn property_value_rules() {
    // CONNECT 5.0 with the given properties.
    let connect = |props: &[u8]| {
        let mut b = vec![0x10, 0];
        b.extend([0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x0A]);
        b.push(props.len() as u8);
        b.extend_from_slice(props);
        b.extend([0x00, 0x01, b'c']);
        b[1] = (b.len() - 2) as u8;
        b
    };
    refused(&connect(&[0x21, 0x00, 0x00]), V5, PROTOCOL); // receive maximum 0
    refused(&connect(&[0x27, 0x00, 0x00, 0x00, 0x00]), V5, PROTOCOL); // max packet size 0
    refused(&connect(&[0x17, 0x02]), V5, PROTOCOL); // request problem information 2
    refused(&connect(&[0x19, 0x02]), V5, PROTOCOL); // request response information 2
    refused(&connect(&[0x23, 0x00, 0x01]), V5, PROTOCOL); // topic alias: not in CONNECT
    refused(&connect(&[0x7F, 0x00]), V5, MALFORMED); // unknown property
                                                     // PUBLISH: subscription identifier 0, payload format indicator 2.
    refused(
        &[0x30, 0x06, 0x00, 0x01, b't', 0x02, 0x0B, 0x00],
        V5,
        PROTOCOL,
    );
    refused(
        &[0x30, 0x06, 0x00, 0x01, b't', 0x02, 0x01, 0x02],
        V5,
        PROTOCOL,
    );
}

#[test]
fn v3_bodyless_packets_with_a_body_are_malformed() {
    refused(&[0xC0, 0x01, 0x00], V311, MALFORMED);
    refused(&[0xD0, 0x01, 0x00], V311, MALFORMED);
    refused(&[0xE0, 0x01, 0x00], V311, MALFORMED);
}

#[test]
fn trailing_bytes_inside_remaining_length_are_malformed() {
    refused(&[0x40, 0x03, 0x00, 0x01, 0x00], V311, MALFORMED);
    refused(&[0xB0, 0x03, 0x00, 0x01, 0x00], V311, MALFORMED);
    refused(&[0x20, 0x03, 0x00, 0x00, 0x00], V311, MALFORMED);
}

#[test]
fn v5_ack_short_forms() {
    let Packet::PubAck(a) = accepted(&[0x40, 0x02, 0x00, 0x01], V5) else {
        panic!()
    };
    assert_eq!(a.reason, 0);
    let Packet::PubAck(a) = accepted(&[0x40, 0x03, 0x00, 0x01, 0x10], V5) else {
        panic!()
    };
    assert_eq!(a.reason, reason::NO_MATCHING_SUBSCRIBERS);
}

#[test]
fn packet_too_large_without_waiting_for_the_body() {
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0x7F][..]);
    let err = decode(&mut buf, V5, 1024).unwrap_err();
    assert_eq!(
        err,
        DecodeError::PacketTooLarge {
            size: 2_097_155,
            max: 1024
        }
    );
    assert_eq!(err.reason_code(), reason::PACKET_TOO_LARGE);
}

/// A bridge's 3.1.1 CONNECT carries protocol level 0x84 (Mosquitto's
/// `try_private`); 5.0 has no such flag.
#[test]
fn bridge_connect_sets_the_high_bit_of_the_level() {
    let connect = Connect {
        protocol: V311,
        clean_start: false,
        keep_alive: 60,
        client_id: "b".into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
        bridge: true,
    };
    let mut buf = BytesMut::new();
    tern_mqtt::encode(&Packet::Connect(connect.clone()), V311, &mut buf).unwrap();
    assert_eq!(
        &buf[..],
        &[0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 0x84, 0x00, 0, 60, 0, 1, b'b']
    );
    let v5 = Connect {
        protocol: V5,
        ..connect
    };
    assert!(tern_mqtt::encode(&Packet::Connect(v5), V5, &mut BytesMut::new()).is_err());
}
