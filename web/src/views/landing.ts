// The landing page: create a meeting (as its host) and copy its links, or open a link.

import { h } from '../dom';
import { makeHostLink } from '../link-secrets';
import { withMeetingKey } from '../links';
import { copyRow } from './copy';

/** What the server answers: no host link (the page made it), a join link without `#k=`. */
interface Created {
  id: string;
  join_url: string;
}

export function renderLanding(root: HTMLElement): void {
  const status = h('p', { role: 'status', class: 'status' });
  const links = h('section', { class: 'card links', hidden: true, 'aria-label': 'Your new meeting' });
  const passcode = h('input', { id: 'passcode', type: 'text', autocomplete: 'off', maxLength: 64, placeholder: 'optional' });
  const create = h('button', { type: 'button', class: 'primary', id: 'create-meeting' }, 'Create a meeting');
  const joinInput = h('input', { id: 'join-link', type: 'url', placeholder: 'https://…/m/…', autocomplete: 'off' });

  create.addEventListener('click', async () => {
    create.disabled = true;
    status.textContent = 'Creating the meeting…';
    try {
      // The host link is made here: the server gets only the SHA-256 of the host secret
      // derived from it, and never the seed, which is what makes a host in the group.
      const made = await makeHostLink();
      const pwd = passcode.value.trim();
      const body = { host_secret_sha256: made.host_secret_sha256, ...(pwd ? { passcode: pwd } : {}) };
      const response = await fetch('/api/meetings', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      if (!response.ok) {
        const answer = (await response.json().catch(() => ({}))) as { reason?: unknown };
        throw new Error(typeof answer.reason === 'string' ? answer.reason : `the server answered ${response.status}`);
      }
      const meeting = (await response.json()) as Created;
      const page = `${location.origin}/m/${meeting.id}`;
      // The server's join link carries `#pwd=` for a passcode; the meeting key is ours to add.
      const joinUrl = withMeetingKey(meeting.join_url, made.meeting_key);
      const hostUrl = `${page}#host=${made.seed}`;
      showLinks(links, joinUrl, hostUrl);
      status.textContent = '';
    } catch (e) {
      status.textContent = `The meeting could not be created: ${e instanceof Error ? e.message : String(e)}. Try again in a moment.`;
    } finally {
      create.disabled = false;
    }
  });

  const joinForm = h(
    'form',
    { class: 'card', 'aria-label': 'Join a meeting' },
    h('h2', {}, 'Join a meeting'),
    h('label', { for: 'join-link' }, 'Meeting link'),
    joinInput,
    h('button', { type: 'submit' }, 'Join'),
  );
  joinForm.addEventListener('submit', (event) => {
    event.preventDefault();
    try {
      const url = new URL(joinInput.value.trim(), location.origin);
      if (url.origin !== location.origin || !url.pathname.startsWith('/m/')) throw new Error('not a meeting link');
      location.assign(url.toString());
    } catch {
      status.textContent = 'That is not a meeting link of this server. Paste the whole link you were given.';
    }
  });

  root.append(
    h(
      'main',
      { class: 'landing' },
      h('h1', {}, 'Conclave'),
      h('p', { class: 'lead' }, 'Private video meetings on your own server. Audio, video and chat are end-to-end encrypted: not even this server can see or hear them.'),
      h(
        'section',
        { class: 'card', 'aria-label': 'Create a meeting' },
        h('h2', {}, 'Start a new meeting'),
        h('label', { for: 'passcode' }, 'Passcode for guests'),
        passcode,
        create,
      ),
      links,
      joinForm,
      status,
    ),
  );
}

function showLinks(section: HTMLElement, joinUrl: string, hostUrl: string): void {
  section.replaceChildren(
    h('h2', {}, 'Your meeting is ready'),
    copyRow('Link for guests', joinUrl, 'guest-link'),
    h('p', { class: 'hint' }, 'Share this link with the people you invite. They wait in the lobby until you let them in.'),
    copyRow('Your host link', hostUrl, 'host-link'),
    h('p', { class: 'hint' }, 'Keep the host link to yourself: whoever opens it is a host.'),
    h('a', { href: hostUrl, class: 'button primary', id: 'open-host-link' }, 'Open the meeting as host'),
  );
  section.hidden = false;
}
