// The security code: the same for everyone in the meeting at the same moment. Comparing it
// aloud proves nobody (not even the server) sits in the middle.

import { h } from '../dom';
import { aboutThisApp } from '../integrity/client';
import type { MeetingController } from '../meeting/controller';

export function renderSecurity(meeting: MeetingController): HTMLElement {
  const s = meeting.state;
  const alarms = s.alarms.length
    ? h('div', { class: 'banner error', role: 'alert' }, h('strong', {}, 'Security alarm: '), s.alarms[s.alarms.length - 1] ?? '', ' Compare the security code aloud before saying anything confidential.')
    : null;
  return h(
    'section',
    { class: 'panel', 'aria-label': 'Security code', id: 'security-panel' },
    h('h2', {}, 'Security code'),
    alarms,
    s.securityCode
      ? h('p', { class: 'security-code', id: 'security-code' }, s.securityCode)
      : h('p', { class: 'security-code pending', id: 'security-code-pending' }, 'Setting up encryption…'),
    s.securityEmoji ? h('p', { class: 'security-emoji', 'aria-label': 'Security code as pictures' }, s.securityEmoji) : null,
    h(
      'p',
      { class: 'hint' },
      'Everyone in this meeting sees the same code right now. Read a part of it aloud and ask the others to check theirs: if the codes match, nobody else is listening in, not even the server. The code changes whenever someone joins or leaves.',
    ),
    aboutThisApp(),
  );
}
