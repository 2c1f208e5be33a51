use super::*;

fn meeting() -> MeetingId {
    MeetingId::from_random_bytes([7; 16])
}

#[test]
fn meeting_ids_are_26_base32_chars_and_round_trip() {
    let id = MeetingId::from_random_bytes([0xff; 16]);
    assert_eq!(id.as_str().len(), MEETING_ID_LEN);
    assert_eq!(MeetingId::parse(id.as_str()), Some(id.clone()));
    assert_ne!(
        MeetingId::from_random_bytes([1; 16]),
        MeetingId::from_random_bytes([2; 16])
    );
    assert_eq!(MeetingId::parse("short"), None);
    assert_eq!(MeetingId::parse(&"A".repeat(26)), None);
    assert_eq!(MeetingId::parse(&"1".repeat(26)), None);
}

#[test]
fn hello_round_trips_with_version() {
    let msg = ClientMessage::Hello {
        meeting: meeting(),
        name: "Ada".into(),
        host_secret: None,
        passcode: Some("1234".into()),
        invite: None,
        device_id: Some("dev".into()),
        client_version: "test".into(),
    };
    let text = encode(&msg);
    assert!(text.contains("\"v\":1"), "{text}");
    assert!(text.contains("\"type\":\"hello\""), "{text}");
    assert_eq!(parse_client_message(&text).unwrap(), msg);
}

#[test]
fn server_offer_round_trips() {
    let msg = ServerMessage::Offer {
        sdp: "v=0".into(),
        tracks: vec![TrackInfo {
            mid: "2".into(),
            participant_id: ParticipantId(9),
            kind: TrackKind::Video,
            source: TrackSource::Screen,
        }],
    };
    assert_eq!(parse_server_message(&encode(&msg)).unwrap(), msg);
}

#[test]
fn video_layout_and_publish_layers_round_trip() {
    let text = r#"{"v":1,"type":"video_layout","tiles":[{"mid":"4","width":320,"height":180,"visible":true}]}"#;
    let msg = parse_client_message(text).unwrap();
    assert_eq!(
        msg,
        ClientMessage::VideoLayout {
            tiles: vec![VideoTile {
                mid: "4".into(),
                width: 320,
                height: 180,
                visible: true
            }],
            max_kbps: None
        }
    );
    assert_eq!(parse_client_message(&encode(&msg)).unwrap(), msg);
    let layers = ServerMessage::PublishLayers {
        mid: "1".into(),
        active: vec!["q".into(), "h".into()],
    };
    let wire = encode(&layers);
    assert!(wire.contains(r#""type":"publish_layers""#), "{wire}");
    assert_eq!(parse_server_message(&wire).unwrap(), layers);
}

#[test]
fn video_layouts_out_of_bounds_are_invalid() {
    let tile = r#"{"mid":"4","width":320,"height":180,"visible":true}"#;
    let too_many = format!(
        r#"{{"v":1,"type":"video_layout","tiles":[{}]}}"#,
        vec![tile; MAX_VIDEO_TILES + 1].join(",")
    );
    let huge = r#"{"v":1,"type":"video_layout","tiles":[{"mid":"4","width":320,"height":99999,"visible":true}]}"#;
    let no_mid =
        r#"{"v":1,"type":"video_layout","tiles":[{"mid":"","width":1,"height":1,"visible":true}]}"#;
    let negative = r#"{"v":1,"type":"video_layout","tiles":[{"mid":"4","width":-1,"height":1,"visible":true}]}"#;
    for text in [too_many.as_str(), huge, no_mid, negative] {
        let err = parse_client_message(text).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidMessage, "{err}");
    }
}

#[test]
fn each_kind_of_bad_message_has_its_own_code() {
    let cases = [
        ("{not json", ErrorCode::MalformedJson),
        ("[1,2]", ErrorCode::MalformedJson),
        (r#"{"v":1}"#, ErrorCode::UnknownType),
        (r#"{"v":1,"type":"teleport"}"#, ErrorCode::UnknownType),
        (r#"{"type":"ping"}"#, ErrorCode::UnsupportedVersion),
        (r#"{"v":99,"type":"ping"}"#, ErrorCode::UnsupportedVersion),
        (r#"{"v":1,"type":"offer"}"#, ErrorCode::InvalidMessage),
        (
            r#"{"v":1,"type":"hello","meeting":"x","name":"a","client_version":"1"}"#,
            ErrorCode::InvalidMessage,
        ),
        (
            r#"{"v":1,"type":"offer","sdp":42}"#,
            ErrorCode::InvalidMessage,
        ),
    ];
    for (text, code) in cases {
        let err = parse_client_message(text).unwrap_err();
        assert_eq!(err.code(), code, "{text}: {err}");
    }
}

#[test]
fn oversized_messages_are_refused() {
    let big_hello = format!(
        r#"{{"v":1,"type":"hello","meeting":"{}","name":"{}","client_version":"1"}}"#,
        meeting(),
        "a".repeat(MAX_MESSAGE_BYTES)
    );
    assert_eq!(
        parse_client_message(&big_hello).unwrap_err().code(),
        ErrorCode::TooLarge
    );
    let huge_offer = format!(
        r#"{{"v":1,"type":"offer","sdp":"{}"}}"#,
        "a".repeat(MAX_SDP_MESSAGE_BYTES)
    );
    assert_eq!(
        parse_client_message(&huge_offer).unwrap_err().code(),
        ErrorCode::TooLarge
    );
}

#[test]
fn sdp_of_a_large_meeting_fits() {
    let offer = format!(
        r#"{{"v":1,"type":"offer","sdp":"{}"}}"#,
        "a".repeat(400 * 1024)
    );
    assert!(matches!(
        parse_client_message(&offer),
        Ok(ClientMessage::Offer { .. })
    ));
}

#[test]
fn host_actions_round_trip_and_roles_know_their_powers() {
    let msgs = [
        ClientMessage::Admit {
            participant_id: ParticipantId(3),
        },
        ClientMessage::SetRole {
            participant_id: ParticipantId(3),
            role: Role::CoHost,
        },
        ClientMessage::Mute {
            participant_id: ParticipantId(3),
            source: TrackSource::Microphone,
        },
        ClientMessage::SetPermissions {
            permissions: Permissions {
                chat: Audience::Hosts,
                ..Permissions::default()
            },
        },
        ClientMessage::SuspendAll,
    ];
    for msg in msgs {
        assert_eq!(parse_client_message(&encode(&msg)).unwrap(), msg);
    }
    let chat =
        parse_client_message(r#"{"v":1,"type":"mls_message","data":"AA==","purpose":"chat"}"#);
    assert!(matches!(
        chat,
        Ok(ClientMessage::MlsMessage {
            purpose: AppMessagePurpose::Chat,
            ..
        })
    ));
    assert!(Role::CoHost.moderates() && !Role::Participant.moderates());
    assert!(!Role::Guest.may(Audience::Participants) && Role::Guest.may(Audience::Everyone));
}

#[test]
fn a_role_outside_the_four_is_refused() {
    let err =
        parse_client_message(r#"{"v":1,"type":"set_role","participant_id":3,"role":"owner"}"#)
            .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidMessage);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// JSON objects shaped like messages: a known or unknown type, any version, fields of
    /// every JSON kind under the names messages use.
    fn message_like() -> impl Strategy<Value = String> {
        let kinds = prop::sample::select(
            CLIENT_TYPES
                .iter()
                .copied()
                .chain(["welcome", "nope", ""])
                .collect::<Vec<_>>(),
        );
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            ".{0,12}".prop_map(serde_json::Value::from),
        ];
        let names = prop::sample::select(vec![
            "meeting",
            "name",
            "sdp",
            "participant_id",
            "role",
            "source",
            "muted",
            "locked",
            "permissions",
            "data",
            "purpose",
            "sources",
            "key_package",
            "commit",
            "welcome",
        ]);
        (
            kinds,
            prop::option::of(0u64..3),
            prop::collection::btree_map(names, leaf, 0..6),
        )
            .prop_map(|(kind, v, fields)| {
                let mut obj: serde_json::Map<String, serde_json::Value> =
                    fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                obj.insert("type".into(), kind.into());
                if let Some(v) = v {
                    obj.insert("v".into(), v.into());
                }
                serde_json::Value::Object(obj).to_string()
            })
    }

    proptest! {
        #[test]
        fn arbitrary_text_is_refused_with_a_code_never_a_panic(text in ".{0,256}") {
            if let Err(e) = parse_client_message(&text) {
                prop_assert!(!e.code().as_str().is_empty());
            }
        }

        #[test]
        fn message_shaped_input_parses_or_gets_a_reason_and_round_trips(text in message_like()) {
            match parse_client_message(&text) {
                Ok(msg) => prop_assert_eq!(parse_client_message(&encode(&msg)).unwrap(), msg),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}
