// The participant list, with the host's powers: mute, remove, lock, end.

import { h } from '../dom';
import type { MeetingController } from '../meeting/controller';
import type { Role } from '../protocol';

const ROLE_NAMES: Record<Role, string> = { host: 'Host', co_host: 'Co-host', participant: 'Invited', guest: 'Guest' };

export function renderParticipants(meeting: MeetingController): HTMLElement {
  const s = meeting.state;
  const host = meeting.isHost;
  const list = h('ul', { class: 'people', id: 'participant-list' });
  list.append(h('li', { dataset: { participantId: String(s.ownId ?? '') } }, h('span', { class: 'name' }, `${s.ownName} (you)`), h('span', { class: 'role' }, s.role ? ROLE_NAMES[s.role] : '')));
  for (const [id, p] of s.participants) {
    const micMuted = (p.info.muted ?? []).includes('microphone') || (p.info.blocked ?? []).includes('microphone');
    const item = h(
      'li',
      { dataset: { participantId: String(id) } },
      h('span', { class: 'name' }, p.info.name),
      h('span', { class: 'role' }, ROLE_NAMES[p.info.role] ?? ''),
      micMuted ? h('span', { class: 'muted-tag' }, 'muted') : null,
    );
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
              if (confirm(`Remove ${p.info.name} from the meeting? They will not be able to come back.`)) meeting.send({ type: 'remove', participant_id: id });
            },
          },
          'Remove',
        ),
      );
    }
    list.append(item);
  }
  const section = h('section', { class: 'panel', 'aria-label': 'Participants', id: 'people-panel' }, h('h2', {}, `People (${s.participants.size + 1})`), list);
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
  return section;
}
