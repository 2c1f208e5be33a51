// Pre-join: a display name (no account), a camera preview, device choice, and joining muted.

import { clear, h } from '../dom';
import type { E2eeSupport } from '../e2ee/e2ee-client';
import { canPickSpeaker, listDevices, openLocalMedia, type LocalMedia } from '../media/devices';

export interface PrejoinChoice {
  name: string;
  media: LocalMedia;
  joinMuted: { mic: boolean; camera: boolean };
  speakerId: string;
}

const NAME_KEY = 'conclave.display_name';

export function renderPrejoin(root: HTMLElement, support: E2eeSupport, isHost: boolean): Promise<PrejoinChoice> {
  return new Promise((resolve) => {
    let media: LocalMedia | null = null;
    const preview = h('video', { class: 'preview', autoplay: true, muted: true, playsInline: true, 'aria-label': 'Your camera preview' });
    const problems = h('div', { class: 'problems', role: 'alert' });
    const name = h('input', { id: 'display-name', type: 'text', required: true, maxLength: 64, autocomplete: 'name', value: readName() });
    const camera = h('select', { id: 'camera-select' });
    const microphone = h('select', { id: 'microphone-select' });
    const speaker = h('select', { id: 'speaker-select', disabled: !canPickSpeaker() });
    const micOff = h('input', { id: 'join-mic-off', type: 'checkbox' });
    const cameraOff = h('input', { id: 'join-camera-off', type: 'checkbox' });
    const join = h('button', { type: 'submit', class: 'primary', id: 'join-button' }, isHost ? 'Start the meeting' : 'Ask to join');

    const unsupported =
      support === 'none'
        ? h(
            'div',
            { class: 'banner error', role: 'alert' },
            'This browser cannot encrypt audio and video end to end, so it cannot take part in this meeting: Conclave never sends or receives media unencrypted. Please open the link in a current version of Chrome, Edge, Safari or Firefox.',
          )
        : null;
    if (unsupported) join.disabled = true;

    const fill = (select: HTMLSelectElement, devices: MediaDeviceInfo[], current: string | undefined, noun: string) => {
      clear(select);
      if (devices.length === 0) select.append(h('option', { value: '' }, `No ${noun} found`));
      devices.forEach((d, i) => select.append(h('option', { value: d.deviceId, selected: d.deviceId === current }, d.label || `${noun} ${i + 1}`)));
    };

    const refresh = async (choice: { cameraId?: string; microphoneId?: string } = {}) => {
      media?.stream.getTracks().forEach((t) => t.stop());
      media = await openLocalMedia(choice);
      preview.srcObject = media.stream;
      problems.replaceChildren(...media.problems.map((p) => h('p', {}, p)));
      const devices = await listDevices();
      fill(camera, devices.cameras, media.camera?.getSettings().deviceId, 'camera');
      fill(microphone, devices.microphones, media.microphone?.getSettings().deviceId, 'microphone');
      fill(speaker, devices.speakers, speaker.value, 'speaker');
    };
    let ready: Promise<void> = Promise.resolve();
    const reopen = () => (ready = refresh({ cameraId: camera.value, microphoneId: microphone.value }));
    camera.addEventListener('change', reopen);
    microphone.addEventListener('change', reopen);

    const form = h(
      'form',
      { class: 'card prejoin', 'aria-label': 'Get ready to join' },
      h('h1', {}, isHost ? 'Start your meeting' : 'Join the meeting'),
      unsupported,
      preview,
      problems,
      h('label', { for: 'display-name' }, 'Your name (others see it)'),
      name,
      h('div', { class: 'devices' }, h('label', { for: 'camera-select' }, 'Camera'), camera, h('label', { for: 'microphone-select' }, 'Microphone'), microphone, h('label', { for: 'speaker-select' }, 'Speaker'), speaker),
      h('div', { class: 'checks' }, h('label', {}, micOff, ' Join with microphone off'), h('label', {}, cameraOff, ' Join with camera off')),
      join,
      h('p', { class: 'hint' }, 'No account needed. Everything you say and show is end-to-end encrypted.'),
    );
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const display = name.value.trim();
      if (!display) {
        name.focus();
        return;
      }
      if (support === 'none') return;
      join.disabled = true;
      await ready;
      if (!media) return;
      try {
        localStorage.setItem(NAME_KEY, display);
      } catch {
        // Private browsing: the name is not remembered.
      }
      resolve({ name: display, media, joinMuted: { mic: micOff.checked, camera: cameraOff.checked }, speakerId: speaker.value });
    });
    root.append(h('main', { class: 'centered' }, form));
    if (support !== 'none') ready = refresh();
    name.focus();
  });
}

function readName(): string {
  try {
    return localStorage.getItem(NAME_KEY) ?? '';
  } catch {
    return '';
  }
}
