// "Invite someone": per-person invitation links, for a host holding the host link. The link's
// secret is made and signed in this page (wasm); the server registers only its token's digest
// (for its label, single use and revocation) and never holds what admits the invitee.

import { h } from '../dom';
import type { IssuedInvitation, MeetingController } from '../meeting/controller';
import { copyRow } from './copy';

const LIFETIMES: Array<[seconds: number, label: string]> = [
  [3600, '1 hour'],
  [86_400, '1 day'],
  [7 * 86_400, '7 days'],
  [30 * 86_400, '30 days'],
];

/** Made once per meeting view, so what was typed and the links made survive re-renders. */
export class InvitePanel {
  readonly element: HTMLElement;
  private readonly issued: HTMLElement;
  private readonly status: HTMLElement;

  constructor(meeting: MeetingController) {
    const label = h('input', { id: 'invite-label', type: 'text', maxLength: 100, autocomplete: 'off', placeholder: 'e.g. Dana (finance)' });
    const expires = h('select', { id: 'invite-expires' }, ...LIFETIMES.map(([secs, text]) => h('option', { value: String(secs), selected: secs === 86_400 }, text)));
    const singleUse = h('input', { id: 'invite-single-use', type: 'checkbox', checked: true });
    const skipLobby = h('input', { id: 'invite-skip-lobby', type: 'checkbox' });
    const create = h('button', { type: 'submit', class: 'primary', id: 'invite-create' }, 'Create invitation link');
    this.status = h('p', { class: 'status', role: 'status', id: 'invite-status' });
    this.issued = h('div', { class: 'invitations', id: 'invitations' });
    const form = h(
      'form',
      { class: 'invite-form', 'aria-label': 'Invite someone' },
      h('label', { for: 'invite-label' }, 'Who is it for (only hosts see this)'),
      label,
      h('label', { for: 'invite-expires' }, 'Valid for'),
      expires,
      h('div', { class: 'checks' }, h('label', {}, singleUse, ' Valid for one entry only'), h('label', {}, skipLobby, ' Let them in without waiting in the lobby')),
      create,
    );
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      create.disabled = true;
      this.status.textContent = 'Creating the invitation…';
      try {
        const invitation = await meeting.createInvitation({
          label: label.value.trim(),
          expiresInSecs: Number(expires.value),
          singleUse: singleUse.checked,
          skipLobby: skipLobby.checked,
        });
        this.show(invitation);
        this.status.textContent = '';
        label.value = '';
      } catch (e) {
        this.status.textContent = `The invitation could not be created: ${e instanceof Error ? e.message : String(e)}.`;
      } finally {
        create.disabled = false;
      }
    });
    this.element = h(
      'section',
      { class: 'invite', 'aria-label': 'Invite someone', id: 'invite-panel' },
      h('h3', {}, 'Invite someone'),
      h('p', { class: 'hint' }, 'A personal link for one person. Your browser signs it with this meeting’s host key: the server cannot make one, and can only count and revoke it.'),
      form,
      this.status,
      this.issued,
    );
  }

  private show(invitation: IssuedInvitation): void {
    const n = this.issued.childElementCount + 1;
    const what = [invitation.singleUse ? 'one entry' : 'any number of entries', invitation.skipLobby ? 'skips the lobby' : 'waits in the lobby', `until ${invitation.expiresAt.toLocaleString()}`].join(', ');
    const row = copyRow(`Invitation for ${invitation.label || 'a guest'}`, invitation.url, `invite-link-${n}`);
    row.dataset['invitationId'] = invitation.id;
    row.append(h('p', { class: 'hint' }, what));
    this.issued.prepend(row);
  }
}
