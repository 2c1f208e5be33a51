use super::*;
use proto::{ClientMessage, MeetingId, ParticipantId, ParticipantInfo, Role};

fn welcome(id: u64, others: &[u64], create_group: bool) -> String {
    proto::encode(&ServerMessage::Welcome {
        participant_id: ParticipantId(id),
        meeting: MeetingId::from_random_bytes([7; 16]),
        role: if create_group {
            Role::Host
        } else {
            Role::Guest
        },
        participants: others
            .iter()
            .map(|o| ParticipantInfo {
                id: ParticipantId(*o),
                name: format!("p{o}"),
                role: Role::Guest,
                muted: vec![],
                blocked: vec![],
            })
            .collect(),
        create_group: create_group.then(|| proto::b64_encode(b"group")),
        meeting_state: Default::default(),
        lobby: vec![],
        ice_servers: vec![],
    })
}

fn drain(core: &mut Core) -> Vec<ClientMessage> {
    std::iter::from_fn(|| core.poll_message())
        .map(|json| proto::parse_client_message(&json).expect("valid client message"))
        .collect()
}

fn server(msg: ServerMessage) -> String {
    proto::encode(&msg)
}

/// A host and a guest, driven only through JSON as the browser does: the guest is added,
/// both see the same security code, and a VP8 frame sealed by one opens at the other with
/// the sender's participant id from the MLS credential.
#[test]
fn two_browsers_join_and_exchange_a_frame_through_json() {
    let made: serde_json::Value =
        serde_json::from_str(&crate::links::new_host_link().unwrap()).unwrap();
    let seed = made["seed"].as_str().unwrap();
    let host_secrets = crate::links::secrets(seed, "", "").unwrap();
    let guest_secrets =
        crate::links::secrets("", "", made["meeting_key"].as_str().unwrap()).unwrap();
    let mut host = Core::from_welcome(&welcome(1, &[], true), "host", host_secrets, 0).unwrap();
    assert!(host.is_member());
    let mut guest =
        Core::from_welcome(&welcome(2, &[1], false), "guest", guest_secrets, 0).unwrap();
    assert!(!guest.is_member());
    assert!(
        guest.encrypt_frame("vp8", &[0x50; 40]).is_none(),
        "no keys, no frame"
    );

    let joined = ServerMessage::ParticipantJoined {
        participant: ParticipantInfo {
            id: ParticipantId(2),
            name: "guest".into(),
            role: Role::Guest,
            muted: vec![],
            blocked: vec![],
        },
        entry: proto::Entry::Lobby,
        admitted_by: Some(ParticipantId(1)),
    };
    host.admission_requested(2);
    host.on_server_message(&server(joined), 0).unwrap();
    let kp = match drain(&mut guest).pop() {
        Some(ClientMessage::MlsKeyPackage { key_package }) => key_package,
        other => panic!("expected a key package, got {other:?}"),
    };
    host.on_server_message(
        &server(ServerMessage::MlsKeyPackage {
            participant_id: ParticipantId(2),
            key_package: kp,
        }),
        0,
    )
    .unwrap();
    host.tick(10);
    let mut welcome_msg = None;
    for msg in drain(&mut host) {
        if let ClientMessage::MlsCommit { welcome, .. } = msg {
            welcome_msg = welcome;
        }
    }
    host.on_server_message(&server(ServerMessage::MlsCommitAccepted { epoch: 1 }), 20)
        .unwrap();
    guest
        .on_server_message(
            &server(ServerMessage::MlsWelcome {
                welcome: welcome_msg.expect("a Welcome for the guest"),
            }),
            20,
        )
        .unwrap();
    assert!(guest.is_member());
    let code = |c: &Core| {
        serde_json::from_str::<serde_json::Value>(&c.report()).unwrap()["security_code"].clone()
    };
    assert_eq!(code(&host), code(&guest));
    let keys_changed =
        std::iter::from_fn(|| guest.poll_event()).any(|e| e.contains("\"keys_changed\""));
    assert!(keys_changed);

    guest.send_chat("hello, host").unwrap();
    for msg in drain(&mut guest) {
        if let ClientMessage::MlsMessage { data, purpose } = msg {
            assert_eq!(purpose, proto::AppMessagePurpose::Chat);
            host.on_server_message(
                &server(ServerMessage::MlsMessage {
                    from: ParticipantId(2),
                    data,
                    purpose,
                }),
                25,
            )
            .unwrap();
        }
    }
    let chat: Vec<serde_json::Value> = std::iter::from_fn(|| host.poll_event())
        .map(|e| serde_json::from_str(&e).unwrap())
        .filter(|e: &serde_json::Value| e["type"] == "chat")
        .collect();
    assert_eq!(chat.len(), 1, "{chat:?}");
    assert_eq!(chat[0]["text"], "hello, host");
    assert_eq!(chat[0]["from_name"], "guest");
    assert_eq!(chat[0]["from_participant_id"], "2");

    let frame = [0x50u8; 40];
    let sealed = guest.encrypt_frame("vp8", &frame).unwrap();
    assert_ne!(&sealed[10..], &frame[10..]);
    assert_eq!(
        host.decrypt_frame("vp8", &sealed, 30),
        FrameOutcome::Opened {
            plaintext: frame.to_vec(),
            sender: "2".into()
        }
    );
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(
        host.decrypt_frame("vp8", &tampered, 30),
        FrameOutcome::Failed(_)
    ));
}

#[test]
fn a_message_that_is_not_a_welcome_is_refused() {
    let none = session::LinkSecrets::default;
    assert!(Core::from_welcome(&server(ServerMessage::Pong), "x", none(), 0).is_err());
    assert!(Core::from_welcome("not json", "x", none(), 0).is_err());
    // The server asks a participant without a host link to open the group: refused.
    assert!(Core::from_welcome(&welcome(1, &[], true), "x", none(), 0).is_err());
}
