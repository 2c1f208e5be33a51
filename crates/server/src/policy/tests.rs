use super::*;

fn knock(id: u64, role: Role, pre_admitted: Option<Entry>) -> Knock {
    Knock {
        id: ParticipantId(id),
        name: format!("p{id}"),
        role,
        pre_admitted,
        device_id: Some(format!("device-{id}")),
        invitation_id: None,
        invitation_label: None,
        user_id: None,
    }
}

impl MeetingPolicy {
    fn knock_at(&mut self, k: Knock) -> Outcome {
        self.knock(k, 0)
    }
}

fn p(id: u64) -> ParticipantId {
    ParticipantId(id)
}

/// A host (1) and two admitted guests (2, 3).
fn meeting() -> MeetingPolicy {
    let mut m = MeetingPolicy::new(false, Permissions::default());
    m.knock_at(knock(1, Role::Host, Some(Entry::HostLink)))
        .unwrap();
    for id in [2, 3] {
        m.knock_at(knock(id, Role::Guest, None)).unwrap();
        m.admit(p(1), p(id)).unwrap();
    }
    m
}

fn blocks(effects: &[Effect]) -> Vec<(u64, TrackSource, bool)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Block {
                id,
                source,
                blocked,
            } => Some((id.0, *source, *blocked)),
            _ => None,
        })
        .collect()
}

#[test]
fn early_arrivals_wait_in_the_lobby_until_a_host_admits_them() {
    let mut m = MeetingPolicy::new(false, Permissions::default());
    // No host yet: the guest waits, it does not get in.
    assert_eq!(
        m.knock_at(knock(2, Role::Guest, None)).unwrap(),
        vec![Effect::LobbyChanged]
    );
    assert!(m.is_waiting(p(2)) && !m.is_member(p(2)));
    // A guest cannot admit itself or anyone else.
    assert_eq!(m.admit(p(2), p(2)).unwrap_err().code, ErrorCode::Forbidden);
    let effects = m
        .knock_at(knock(1, Role::Host, Some(Entry::HostLink)))
        .unwrap();
    assert!(matches!(effects[0], Effect::Enter { id, .. } if id == p(1)));
    let effects = m.admit(p(1), p(2)).unwrap();
    assert!(effects.contains(&Effect::Enter {
        id: p(2),
        blocked: vec![TrackSource::Screen]
    }));
    assert_eq!(m.entry_of(p(2)).unwrap().2, Some(p(1)));
    assert_eq!(
        m.admit(p(1), p(2)).unwrap_err().code,
        ErrorCode::UnknownParticipant
    );
}

#[test]
fn forged_host_actions_are_forbidden_and_change_nothing() {
    let mut m = meeting();
    let before = (m.state(), m.others(p(0)));
    assert_eq!(m.remove(p(2), p(3)).unwrap_err().code, ErrorCode::Forbidden);
    assert_eq!(m.remove(p(2), p(1)).unwrap_err().code, ErrorCode::Forbidden);
    assert_eq!(
        m.mute(p(2), p(1), TrackSource::Microphone)
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
    assert_eq!(
        m.set_locked(p(2), true).unwrap_err().code,
        ErrorCode::Forbidden
    );
    assert_eq!(
        m.set_role(p(2), p(2), Role::Host).unwrap_err().code,
        ErrorCode::Forbidden
    );
    assert_eq!(m.suspend_all(p(2)).unwrap_err().code, ErrorCode::Forbidden);
    assert_eq!(m.end(p(2)).unwrap_err().code, ErrorCode::Forbidden);
    assert_eq!(
        m.set_permissions(p(2), Permissions::default())
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
    assert_eq!(
        m.send_to_lobby(p(2), p(3)).unwrap_err().code,
        ErrorCode::Forbidden
    );
    // Someone not in the meeting at all (a lobby session) has no powers either.
    m.knock_at(knock(9, Role::Guest, None)).unwrap();
    assert_eq!(m.admit(p(9), p(9)).unwrap_err().code, ErrorCode::Forbidden);
    assert_eq!((m.state(), m.others(p(0))), before);
}

#[test]
fn co_hosts_moderate_but_cannot_touch_hosts_or_grant_roles() {
    let mut m = meeting();
    m.set_role(p(1), p(2), Role::CoHost).unwrap();
    assert_eq!(m.remove(p(2), p(1)).unwrap_err().code, ErrorCode::Forbidden);
    assert_eq!(
        m.mute(p(2), p(1), TrackSource::Microphone)
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
    assert_eq!(
        m.set_role(p(2), p(3), Role::Host).unwrap_err().code,
        ErrorCode::Forbidden
    );
    assert_eq!(m.end(p(2)).unwrap_err().code, ErrorCode::Forbidden);
    assert!(m.mute(p(2), p(3), TrackSource::Microphone).is_ok());
    assert!(m.remove(p(2), p(3)).is_ok());
}

#[test]
fn removal_is_a_ban_for_device_invitation_and_account() {
    let mut m = meeting();
    let effects = m.remove(p(1), p(2)).unwrap();
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::Ban(b) if b.device_id.as_deref() == Some("device-2"))));
    assert!(effects.contains(&Effect::Exit {
        id: p(2),
        reason: LeaveReason::Removed
    }));
    // Same device, new connection and name: refused before the lobby.
    let mut again = knock(20, Role::Guest, None);
    again.device_id = Some("device-2".into());
    again.name = "someone else".into();
    assert_eq!(m.knock_at(again).unwrap_err().code, ErrorCode::Banned);
    // A fresh device is not banned (the persisted ban covers invitations and accounts too).
    assert!(m.knock_at(knock(21, Role::Guest, None)).is_ok());
}

#[test]
fn lock_keeps_everyone_new_out_even_with_a_valid_invitation() {
    let mut m = meeting();
    m.knock_at(knock(4, Role::Guest, None)).unwrap();
    m.set_locked(p(1), true).unwrap();
    assert_eq!(
        m.knock_at(knock(5, Role::Participant, Some(Entry::Invitation)))
            .unwrap_err()
            .code,
        ErrorCode::Locked
    );
    assert_eq!(
        m.knock_at(knock(6, Role::Guest, None)).unwrap_err().code,
        ErrorCode::Locked
    );
    // Already waiting: stays waiting, but cannot be admitted while locked.
    assert_eq!(m.admit(p(1), p(4)).unwrap_err().code, ErrorCode::Locked);
    // Hosts still get in.
    assert!(m
        .knock_at(knock(7, Role::Host, Some(Entry::HostLink)))
        .is_ok());
    m.set_locked(p(1), false).unwrap();
    assert!(m.admit(p(1), p(4)).is_ok());
}

#[test]
fn host_mute_is_enforced_and_unmute_follows_the_permission() {
    let mut m = meeting();
    let effects = m.mute(p(1), p(2), TrackSource::Microphone).unwrap();
    assert_eq!(blocks(&effects), vec![(2, TrackSource::Microphone, true)]);
    // Allowed by default: the participant may unmute itself.
    let effects = m.set_muted(p(2), TrackSource::Microphone, false).unwrap();
    assert_eq!(blocks(&effects), vec![(2, TrackSource::Microphone, false)]);
    // Disallowed: muted stays muted.
    let permissions = Permissions {
        allow_unmute: false,
        ..Permissions::default()
    };
    m.set_permissions(p(1), permissions).unwrap();
    m.mute(p(1), p(2), TrackSource::Microphone).unwrap();
    assert_eq!(
        m.set_muted(p(2), TrackSource::Microphone, false)
            .unwrap_err()
            .code,
        ErrorCode::NotPermitted
    );
    // Muting oneself is always fine.
    assert!(m.set_muted(p(3), TrackSource::Camera, true).is_ok());
}

#[test]
fn screen_share_needs_the_permission_and_stops_when_it_is_withdrawn() {
    let mut m = meeting();
    // Guests may not share by default (participants and hosts may).
    assert_eq!(
        m.set_muted(p(2), TrackSource::Screen, false)
            .unwrap_err()
            .code,
        ErrorCode::NotPermitted
    );
    m.set_role(p(1), p(2), Role::Participant).unwrap();
    let effects = m.set_muted(p(2), TrackSource::Screen, false).unwrap();
    assert_eq!(blocks(&effects), vec![(2, TrackSource::Screen, false)]);
    let hosts_only = Permissions {
        screen_share: proto::Audience::Hosts,
        ..Permissions::default()
    };
    let effects = m.set_permissions(p(1), hosts_only).unwrap();
    // Only the one sharing is stopped; the others' screens were never running.
    assert_eq!(blocks(&effects), vec![(2, TrackSource::Screen, true)]);
}

#[test]
fn the_panic_button_mutes_stops_shares_locks_and_pauses_chat() {
    let mut m = meeting();
    assert!(m.may_chat(p(2)).is_ok());
    let effects = m.suspend_all(p(1)).unwrap();
    let stopped = blocks(&effects);
    assert!(stopped.contains(&(2, TrackSource::Microphone, true)));
    assert!(stopped.contains(&(3, TrackSource::Microphone, true)));
    assert!(
        !stopped.contains(&(1, TrackSource::Microphone, true)),
        "the host keeps its voice"
    );
    let state = m.state();
    assert!(state.locked && state.suspended);
    assert_eq!(m.may_chat(p(2)).unwrap_err().code, ErrorCode::NotPermitted);
    assert!(m.may_chat(p(1)).is_ok());
    assert_eq!(
        m.set_muted(p(2), TrackSource::Microphone, false)
            .unwrap_err()
            .code,
        ErrorCode::NotPermitted
    );
    assert_eq!(
        m.knock_at(knock(8, Role::Guest, None)).unwrap_err().code,
        ErrorCode::Locked
    );
    m.resume_all(p(1)).unwrap();
    assert!(m.may_chat(p(2)).is_ok());
    assert!(m.state().locked, "the lock stays until a host unlocks");
}

#[test]
fn ending_the_meeting_closes_everyone_and_keeps_it_ended() {
    let mut m = meeting();
    m.knock_at(knock(4, Role::Guest, None)).unwrap();
    let effects = m.end(p(1)).unwrap();
    let closed: Vec<u64> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Close { id, .. } => Some(id.0),
            _ => None,
        })
        .collect();
    assert_eq!(closed, vec![1, 2, 3, 4]);
    assert!(effects.contains(&Effect::PersistEnded));
    assert_eq!(
        m.knock_at(knock(1, Role::Host, Some(Entry::HostLink)))
            .unwrap_err()
            .code,
        ErrorCode::MeetingEnded
    );
}

#[test]
fn max_participants_is_enforced_at_admission() {
    let mut m = meeting();
    m.set_permissions(
        p(1),
        Permissions {
            max_participants: 3,
            ..Permissions::default()
        },
    )
    .unwrap();
    m.knock_at(knock(4, Role::Guest, None)).unwrap();
    assert_eq!(
        m.admit(p(1), p(4)).unwrap_err().code,
        ErrorCode::MeetingFull
    );
    assert_eq!(
        m.knock_at(knock(5, Role::Participant, Some(Entry::Invitation)))
            .unwrap_err()
            .code,
        ErrorCode::MeetingFull
    );
}

#[test]
fn sent_back_to_the_lobby_and_admitted_again() {
    let mut m = meeting();
    let effects = m.send_to_lobby(p(1), p(3)).unwrap();
    assert!(effects.contains(&Effect::Exit {
        id: p(3),
        reason: LeaveReason::SentToLobby
    }));
    assert!(m.is_waiting(p(3)));
    assert!(m.admit(p(1), p(3)).is_ok());
    assert!(m.is_member(p(3)));
}

#[test]
fn a_dropped_member_comes_back_from_the_same_device_without_the_lobby_for_a_while() {
    let mut m = meeting();
    m.leave(p(2), LeaveReason::Disconnected, 1_000);
    let back = m.knock(knock(2, Role::Guest, None), 5_000).unwrap();
    assert!(matches!(back[0], Effect::Enter { id, .. } if id == p(2)));
    assert_eq!(
        m.entry_of(p(2)).unwrap().2,
        Some(p(1)),
        "still admitted by the host"
    );
    // Too late, or after leaving on purpose: the lobby again.
    m.leave(p(2), LeaveReason::Disconnected, 10_000);
    let late = m
        .knock(knock(2, Role::Guest, None), 10_000 + REJOIN_GRACE_MS)
        .unwrap();
    assert_eq!(late, vec![Effect::LobbyChanged]);
    m.leave(p(3), LeaveReason::Left, 0);
    assert_eq!(
        m.knock(knock(3, Role::Guest, None), 1).unwrap(),
        vec![Effect::LobbyChanged]
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Action {
        Knock(u64, bool),
        Admit(u64, u64),
        Deny(u64, u64),
        Remove(u64, u64),
        SendToLobby(u64, u64),
        SetRole(u64, u64, Role),
        Lock(u64, bool),
        Mute(u64, u64),
        Unmute(u64),
        Suspend(u64),
        Resume(u64),
        Leave(u64),
    }

    fn action() -> impl Strategy<Value = Action> {
        let id = 1u64..7;
        let role = prop::sample::select(vec![
            Role::Host,
            Role::CoHost,
            Role::Participant,
            Role::Guest,
        ]);
        prop_oneof![
            (id.clone(), any::<bool>()).prop_map(|(a, h)| Action::Knock(a, h)),
            (id.clone(), id.clone()).prop_map(|(a, b)| Action::Admit(a, b)),
            (id.clone(), id.clone()).prop_map(|(a, b)| Action::Deny(a, b)),
            (id.clone(), id.clone()).prop_map(|(a, b)| Action::Remove(a, b)),
            (id.clone(), id.clone()).prop_map(|(a, b)| Action::SendToLobby(a, b)),
            (id.clone(), id.clone(), role).prop_map(|(a, b, r)| Action::SetRole(a, b, r)),
            (id.clone(), any::<bool>()).prop_map(|(a, l)| Action::Lock(a, l)),
            (id.clone(), id.clone()).prop_map(|(a, b)| Action::Mute(a, b)),
            id.clone().prop_map(Action::Unmute),
            id.clone().prop_map(Action::Suspend),
            id.clone().prop_map(Action::Resume),
            id.prop_map(Action::Leave),
        ]
    }

    proptest! {
        /// Whatever happens, a moderator-only action by someone the server does not know as a
        /// moderator changes nothing, a banned device never gets back in, and a locked
        /// meeting lets no non-host in.
        #[test]
        fn no_sequence_of_actions_breaks_the_rules(actions in prop::collection::vec(action(), 1..60)) {
            let mut m = MeetingPolicy::new(false, Permissions::default());
            let mut banned_devices: Vec<u64> = Vec::new();
            for a in actions {
                let actor = match &a {
                    Action::Admit(x, _) | Action::Deny(x, _) | Action::Remove(x, _)
                    | Action::SendToLobby(x, _) | Action::SetRole(x, _, _) | Action::Lock(x, _)
                    | Action::Mute(x, _) | Action::Suspend(x) | Action::Resume(x) => Some(p(*x)),
                    _ => None,
                };
                let moderator = actor.is_some_and(|x| m.entry_of(x).is_some_and(|(i, _, _)| i.role.moderates()));
                let before = (m.state(), m.others(p(0)).len(), m.lobby_entries().len());
                let result = match a {
                    Action::Knock(who, host) => {
                        // Ids are per connection: only someone not connected knocks.
                        if m.entry_of(p(who)).is_some() || m.is_waiting(p(who)) {
                            continue;
                        }
                        let role = if host { Role::Host } else { Role::Guest };
                        let locked = m.state().locked;
                        let r = m.knock(knock(who, role, host.then_some(Entry::HostLink)), 0);
                        if r.is_ok() {
                            prop_assert!(!banned_devices.contains(&who), "a banned device got back in");
                            prop_assert!(host || !locked, "a locked meeting let a guest knock");
                        }
                        r.map(|_| ())
                    }
                    Action::Admit(x, y) => m.admit(p(x), p(y)).map(|_| ()),
                    Action::Deny(x, y) => m.deny(p(x), p(y)).map(|_| ()),
                    Action::Remove(x, y) => {
                        let device = m.entry_of(p(y)).map(|_| ());
                        let r = m.remove(p(x), p(y));
                        if let (Ok(effects), Some(())) = (&r, device) {
                            for e in effects {
                                if let Effect::Ban(b) = e {
                                    if let Some(d) = b.device_id.as_ref().and_then(|d| d.strip_prefix("device-")) {
                                        banned_devices.push(d.parse().unwrap());
                                    }
                                }
                            }
                        }
                        r.map(|_| ())
                    }
                    Action::SendToLobby(x, y) => m.send_to_lobby(p(x), p(y)).map(|_| ()),
                    Action::SetRole(x, y, r) => m.set_role(p(x), p(y), r).map(|_| ()),
                    Action::Lock(x, l) => m.set_locked(p(x), l).map(|_| ()),
                    Action::Mute(x, y) => m.mute(p(x), p(y), TrackSource::Microphone).map(|_| ()),
                    Action::Unmute(x) => m.set_muted(p(x), TrackSource::Microphone, false).map(|_| ()),
                    Action::Suspend(x) => m.suspend_all(p(x)).map(|_| ()),
                    Action::Resume(x) => m.resume_all(p(x)).map(|_| ()),
                    Action::Leave(x) => {
                        m.leave(p(x), LeaveReason::Left, 0);
                        Ok(())
                    }
                };
                if actor.is_some() && !moderator {
                    prop_assert!(result.is_err(), "a non-moderator's host action went through");
                    prop_assert_eq!(before, (m.state(), m.others(p(0)).len(), m.lobby_entries().len()));
                }
            }
        }
    }
}
