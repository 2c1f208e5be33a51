// Entry point: the landing page at `/`, the meeting app at `/m/<id>`.

import './style.css';
import { h } from './dom';
import { detectE2eeSupport } from './e2ee/e2ee-client';
import { integrityBanner, startIntegrity } from './integrity/client';
import { linkKeys, type LinkKeys } from './link-secrets';
import { parseMeetingLink, testSwitches } from './links';
import { MeetingController } from './meeting/controller';
import { renderLanding } from './views/landing';
import { renderWaiting } from './views/lobby';
import { MeetingView } from './views/meeting';
import { renderPrejoin } from './views/prejoin';

declare global {
  interface Window {
    /** Diagnostics for tests and support: the live peer connection and E2EE counters. */
    conclave?: { meeting: MeetingController };
  }
}

const root = document.getElementById('app');
if (!root) throw new Error('no #app element');
// The service worker that pins this web app, and its warnings (src/integrity).
document.body.prepend(integrityBanner());
void startIntegrity();

async function startMeetingApp(app: HTMLElement): Promise<void> {
  const link = parseMeetingLink(location);
  if (!link) {
    app.append(h('main', { class: 'centered' }, h('p', { class: 'card', role: 'alert' }, 'This is not a meeting link. Check the address you were given.')));
    return;
  }
  const switches = testSwitches(location);
  const banner = switches.passthroughReceive
    ? h('div', { class: 'banner test-only', role: 'alert' }, 'TEST MODE: incoming media is NOT decrypted on this page (e2ee_test_passthrough_receive). Never use this link for a real meeting.')
    : switches.forceApi
      ? h('div', { class: 'banner test-only', role: 'alert' }, `TEST MODE: this page pretends the browser's encoded-frame API is "${switches.forceApi}" (e2ee_test_force_api).`)
      : null;
  const support = detectE2eeSupport(switches.forceApi);
  const shell = h('div', { class: 'shell' }, banner);
  app.append(shell);
  const content = h('div', { class: 'content' });
  shell.append(content);

  // The fragment's secrets, checked and derived one-way before anything reaches the server.
  let keys: LinkKeys;
  try {
    keys = await linkKeys(link);
  } catch (e) {
    content.append(
      h('main', { class: 'centered' }, h('p', { class: 'card', role: 'alert', id: 'damaged-link' }, `This meeting link is damaged (${e instanceof Error ? e.message : String(e)}). Ask for the link again and copy all of it.`)),
    );
    return;
  }
  if (!keys.meetingKey) {
    shell.insertBefore(
      h('div', { class: 'banner warn', role: 'alert', id: 'no-meeting-key' }, 'This link has no meeting key (#k=…): this page cannot check that the meeting is the one its host created. Ask the host for a current link.'),
      content,
    );
  }
  const choice = await renderPrejoin(content, support, !!link.hostSeed);
  content.replaceChildren();
  const meeting = new MeetingController(link, keys, support, choice.media, choice.name, choice.joinMuted, switches.passthroughReceive);
  window.conclave = { meeting };
  const view = new MeetingView(meeting, choice.speakerId);
  let shown: 'waiting' | 'meeting' | 'ended' | null = null;
  const render = () => {
    const s = meeting.state;
    if (s.phase === 'meeting' || (s.phase === 'reconnecting' && shown === 'meeting')) {
      if (shown !== 'meeting') content.replaceChildren(view.element);
      shown = 'meeting';
      view.update();
      view.element.classList.toggle('reconnecting', s.phase === 'reconnecting');
      const note = document.getElementById('reconnecting-note');
      if (s.phase === 'reconnecting' && !note) view.element.prepend(h('div', { class: 'banner warn', role: 'alert', id: 'reconnecting-note' }, s.message));
      if (s.phase !== 'reconnecting') note?.remove();
    } else if (s.phase === 'ended') {
      shown = 'ended';
      choice.media.stream.getTracks().forEach((t) => t.stop());
      content.replaceChildren(
        h(
          'main',
          { class: 'centered' },
          h('section', { class: 'card ended', role: 'alert', id: 'ended' }, h('h1', {}, 'You are not in the meeting'), h('p', { id: 'ended-message' }, s.message), h('a', { href: '/', class: 'button' }, 'Back to the start page')),
        ),
      );
    } else {
      shown = 'waiting';
      content.replaceChildren(renderWaiting(s.message, () => meeting.leave()));
    }
  };
  meeting.subscribe(render);
  render();
  meeting.join();
  document.title = `Meeting · Conclave`;
  if (meeting.guestLink) console.info('share this meeting with', meeting.guestLink);
}

if (location.pathname === '/' || location.pathname === '/index.html') renderLanding(root);
else void startMeetingApp(root);
