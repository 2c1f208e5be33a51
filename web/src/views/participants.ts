// The participant list, with the host's powers: mute, remove, lock, end; co-hosts and
// invitations for the holder of the host link; the link to share with guests.

import { h } from '../dom';
import type { MeetingController } from '../meeting/controller';
import type { Role } from '../protocol';
import { copyRow } from './copy';

/** Roles as the server reports them: they give powers at the server, not in the group. */
const ROLE_NAMES: Record<Role, string> = { host: 'Host', co_host: 'Co-host', participant: 'Invited', guest: 'Guest' };

/** The group's own check: a host-link holder, or a co-host one of them promoted (signed). */
function verifiedBadge(meeting: MeetingController, id: number | null): HTMLElement | null {
  return meeting.isVerifiedHost(id)
    ? h('span', { class: 'badge ok verified-host', title: 'Every member’s encryption checked this: they hold the host link, or a host promoted them. The server cannot fake it.' }, 'verified host')
    : null;
}

function roleTag(role: Role | null): HTMLElement | null {
  return role ? h('span', { class: 'role', title: 'The role the server reports' }, ROLE_NAMES[role] ?? '') : null;
}

export function renderParticipants(meeting: MeetingController, invite: HTMLElement | null): HTMLElement {
  const s = meeting.state;
  const host = meeting.isHost;
  const list = h('ul', { class: 'people', id: 'participant-list' });
  list.append(h('li', { dataset: { participantId: String(s.ownId ?? '') } }, h('span', { class: 'name' }, `${s.ownName} (you)`), roleTag(s.role), verifiedBadge(meeting, s.ownId)));
  for (const [id, p] of s.participants) {
    const micMuted = (p.info.muted ?? []).includes('microphone') || (p.info.blocked ?? []).includes('microphone');
    const item = h('li', { dataset: { participantId: String(id) } }, h('span', { class: 'name' }, p.info.name), roleTag(p.info.role), verifiedBadge(meeting, id), micMuted ? h('span', { class: 'muted-tag' }, 'muted') : null);
    if (meeting.holdsHostLink && p.info.role !== 'host') {
      // Only a host-link holder's client can sign a promotion the group accepts.
      const cohost = p.info.role === 'co_host' || meeting.isVerifiedHost(id);
      item.append(
        h(
          'button',
          {
            type: 'button',
            class: 'small cohost',
            'aria-label': cohost ? `Remove ${p.info.name} as co-host` : `Make ${p.info.name} co-host`,
            onclick: () => meeting.setCohost(id, !cohost),
          },
          cohost ? 'Remove co-host' : 'Make co-host',
        ),
      );
    }
    if (host && p.info.role !== 'host') {
      item.append(
        h('button', { type: 'button', class: 'small', 'aria-label': `Mute ${p.info.name}`, onclick: () => meeting.send({ type: 'mute', participant_id: id, source: 'microphone' }) }, 'Mute'),
        h(
          'button',
          {
            type: 'button',
            class: 'small danger remove',
            'aria-label': `Remove ${p.info.name}`,
            onclick: () => {
              if (confirm(`Remove ${p.info.name} from the meeting? They will not be able to come back.`)) meeting.remove(id);
            },
          },
          'Remove',
        ),
      );
    }
    list.append(item);
  }
  const section = h(
    'section',
    { class: 'panel', 'aria-label': 'Participants', id: 'people-panel' },
    h('h2', {}, `People (${s.participants.size + 1})`),
    list,
    h('p', { class: 'hint' }, 'Roles are what the server reports. “verified host” is checked by everyone’s encryption: the host link, or a promotion signed by a host who holds it.'),
  );
  const guestLink = meeting.guestLink;
  if (guestLink) {
    section.append(copyRow('Link for guests', guestLink, 'share-link'), h('p', { class: 'hint' }, 'Guests who open it wait in the lobby until a host lets them in.'));
  }
  if (host) {
    const locked = s.meetingState?.locked ?? false;
    section.append(
      h(
        'div',
        { class: 'host-actions' },
        h('button', { type: 'button', id: 'lock-button', 'aria-pressed': String(locked), onclick: () => meeting.send({ type: 'set_locked', locked: !locked }) }, locked ? 'Unlock the meeting' : 'Lock the meeting'),
        h(
          'button',
          {
            type: 'button',
            class: 'danger',
            id: 'end-meeting-button',
            onclick: () => {
              if (confirm('End the meeting for everyone?')) meeting.send({ type: 'end_meeting' });
            },
          },
          'End meeting for all',
        ),
      ),
    );
  }
  if (invite && meeting.holdsHostLink) section.append(invite);
  return section;
}
