// The lobby: what a waiting participant sees, and the panel where hosts admit or deny.

import { h } from '../dom';
import type { MeetingController } from '../meeting/controller';

export function renderWaiting(message: string, onLeave: () => void): HTMLElement {
  return h(
    'main',
    { class: 'centered' },
    h(
      'section',
      { class: 'card waiting', 'aria-live': 'polite', id: 'lobby-waiting' },
      h('div', { class: 'spinner', 'aria-hidden': 'true' }),
      h('h1', {}, 'Waiting room'),
      h('p', { id: 'waiting-message' }, message),
      h('p', { class: 'hint' }, 'A host sees your name and decides whether to let you in. You will join as soon as they do.'),
      h('button', { type: 'button', onclick: onLeave }, 'Leave'),
    ),
  );
}

/** For hosts: everyone waiting, with admit and deny. Empty element when nobody waits. */
export function renderLobbyPanel(meeting: MeetingController): HTMLElement {
  const waiting = meeting.state.lobby;
  const panel = h('section', { class: 'lobby-panel', 'aria-label': 'Waiting room', id: 'lobby-panel', hidden: waiting.length === 0 });
  if (waiting.length === 0) return panel;
  panel.append(h('h2', {}, waiting.length === 1 ? '1 person is waiting' : `${waiting.length} people are waiting`));
  const list = h('ul', {});
  for (const entry of waiting) {
    list.append(
      h(
        'li',
        { dataset: { participantId: String(entry.id) } },
        h('span', { class: 'name' }, entry.name, entry.invitation ? ` (invited: ${entry.invitation})` : ''),
        h('button', { type: 'button', class: 'primary admit', 'aria-label': `Admit ${entry.name}`, onclick: () => meeting.admit(entry.id) }, 'Admit'),
        h('button', { type: 'button', class: 'deny', 'aria-label': `Deny ${entry.name}`, onclick: () => meeting.send({ type: 'deny', participant_id: entry.id }) }, 'Deny'),
      ),
    );
  }
  panel.append(list);
  return panel;
}
