// The meeting view: a responsive grid of participants, the control bar, the side panel (chat,
// people, security code), the host's waiting-room panel, and notices in plain words.

import { append, clear, h } from '../dom';
import type { MeetingController, Participant } from '../meeting/controller';
import { ChatPanel } from './chat';
import { InvitePanel } from './invite';
import { renderLobbyPanel } from './lobby';
import { renderParticipants } from './participants';
import { renderSecurity } from './security';

type Panel = 'chat' | 'people' | 'security' | null;

interface Tile {
  element: HTMLElement;
  video: HTMLVideoElement;
  label: HTMLElement;
  audio: HTMLAudioElement | null;
  shown: MediaStreamTrack | null;
  heard: MediaStreamTrack | null;
}

export class MeetingView {
  readonly element: HTMLElement;
  private readonly grid: HTMLElement;
  private readonly side: HTMLElement;
  private readonly lobbySlot: HTMLElement;
  private readonly notices: HTMLElement;
  private readonly header: HTMLElement;
  private readonly controls: HTMLElement;
  private readonly tiles = new Map<string, Tile>();
  private readonly chat: ChatPanel;
  /** For the holder of the host link: per-person invitation links. */
  private readonly invite: InvitePanel | null;
  /** The security alarm, on top of the meeting whatever panel is open. */
  private readonly alarm: HTMLElement;
  private alarmKey = '';
  private panel: Panel = null;
  private readonly controlButtons = new Map<string, HTMLButtonElement>();
  /** What the side panel and the lobby panel last showed, to rebuild them only on change. */
  private sideKey = '';
  private lobbyKey = '';
  private headerKey = '';
  private unreadChat = 0;
  private seenChat = 0;

  constructor(
    private readonly meeting: MeetingController,
    private speakerId: string,
  ) {
    this.chat = new ChatPanel(meeting);
    this.invite = meeting.holdsHostLink ? new InvitePanel(meeting) : null;
    this.alarm = h('div', { id: 'security-alarm-slot' });
    this.header = h('header', { class: 'meeting-header' });
    this.grid = h('section', { class: 'grid', 'aria-label': 'Participants’ video', id: 'video-grid' });
    this.side = h('aside', { class: 'side', hidden: true });
    this.lobbySlot = h('div', {});
    this.notices = h('div', { class: 'notices', 'aria-live': 'polite', role: 'status' });
    this.controls = h('nav', { class: 'controls', 'aria-label': 'Meeting controls' });
    this.element = h('div', { class: 'meeting' }, this.header, this.alarm, this.lobbySlot, h('div', { class: 'stage' }, this.grid, this.side), this.notices, this.controls);
    this.element.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && this.panel) this.toggle(this.panel);
    });
  }

  update(): void {
    const s = this.meeting.state;
    this.renderHeader();
    this.renderAlarm();
    const lobbyKey = this.meeting.isHost ? JSON.stringify(s.lobby) : '';
    if (lobbyKey !== this.lobbyKey) {
      this.lobbyKey = lobbyKey;
      this.lobbySlot.replaceChildren(this.meeting.isHost ? renderLobbyPanel(this.meeting) : h('span', {}));
    }
    this.syncTiles();
    if (s.chat.length > this.seenChat) {
      if (this.panel !== 'chat') this.unreadChat += s.chat.slice(this.seenChat).filter((m) => !m.own).length;
      this.seenChat = s.chat.length;
    }
    this.chat.update();
    this.renderSide();
    this.renderControls();
    this.notices.replaceChildren(...s.notices.map((n) => h('p', { class: `notice ${n.tone}` }, n.text)));
  }

  private renderHeader(): void {
    const s = this.meeting.state;
    const lock = s.encrypted
      ? h('button', { type: 'button', class: 'badge ok', id: 'e2ee-badge', onclick: () => this.toggle('security'), 'aria-label': 'End-to-end encrypted. Show the security code' }, 'End-to-end encrypted')
      : h('span', { class: 'badge pending', id: 'e2ee-badge' }, 'Setting up encryption…');
    const key = JSON.stringify([s.encrypted, s.meetingState?.locked, s.participants.size, s.mediaPath]);
    if (key === this.headerKey) return;
    this.headerKey = key;
    clear(this.header);
    append(
      this.header,
      h('span', { class: 'title' }, 'Conclave'),
      lock,
      s.meetingState?.locked ? h('span', { class: 'badge warn' }, 'Locked') : null,
      h('span', { class: 'count' }, `${s.participants.size + 1} in the meeting`),
      s.mediaPath ? h('span', { class: 'badge', id: 'media-path', title: 'How your audio and video reach the server' }, `Media: ${s.mediaPath}`) : null,
    );
  }

  /** The latest security alarm (say, the server tried to add someone no host admitted). */
  private renderAlarm(): void {
    const alarms = this.meeting.state.alarms;
    const key = `${alarms.length}`;
    if (key === this.alarmKey) return;
    this.alarmKey = key;
    const last = alarms[alarms.length - 1];
    this.alarm.replaceChildren(
      last
        ? h(
            'div',
            { class: 'banner error', role: 'alert', id: 'security-alarm' },
            h('strong', {}, 'Security alarm: '),
            h('span', { class: 'alarm-text' }, last),
            alarms.length > 1 ? ` (${alarms.length} alarms in all)` : '',
            ' Compare the security code aloud before saying anything confidential. ',
            h('button', { type: 'button', class: 'small', onclick: () => this.panel !== 'security' && this.toggle('security') }, 'Show the security code'),
          )
        : h('span', {}),
    );
  }

  private syncTiles(): void {
    const s = this.meeting.state;
    const wanted = new Map<string, { name: string; video: MediaStreamTrack | null; audio: MediaStreamTrack | null; local: boolean; id: number | null; p?: Participant; screen: boolean }>();
    wanted.set('self', { name: `${s.ownName} (you)`, video: s.cameraOn ? this.meeting.localCamera : null, audio: null, local: true, id: s.ownId, screen: false });
    const localScreen = this.meeting.localScreen;
    if (localScreen) wanted.set('self-screen', { name: 'Your screen', video: localScreen, audio: null, local: true, id: s.ownId, screen: true });
    for (const [id, p] of s.participants) {
      wanted.set(String(id), { name: p.info.name, video: p.camera ?? null, audio: p.audio ?? null, local: false, id, p, screen: false });
      const screenOff = (p.info.muted ?? []).includes('screen') || (p.info.blocked ?? []).includes('screen');
      if (p.screen && !p.screen.muted && !screenOff) wanted.set(`${id}-screen`, { name: `${p.info.name}’s screen`, video: p.screen, audio: null, local: false, id, screen: true });
    }
    for (const [key, tile] of this.tiles) {
      if (!wanted.has(key)) {
        this.meeting.tileHints.forget(tile.video);
        tile.video.srcObject = null;
        if (tile.audio) tile.audio.srcObject = null;
        tile.element.remove();
        this.tiles.delete(key);
      }
    }
    for (const [key, want] of wanted) {
      let tile = this.tiles.get(key);
      if (!tile) {
        const video = h('video', { autoplay: true, muted: true, playsInline: true });
        const label = h('span', { class: 'tile-name' });
        const element = h('figure', { class: 'tile', dataset: { tile: key, participantId: String(want.id ?? '') } }, video, h('figcaption', {}, label));
        tile = { element, video, label, audio: null, shown: null, heard: null };
        this.tiles.set(key, tile);
        this.grid.append(element);
      }
      if (tile.shown !== want.video) {
        tile.shown = want.video;
        tile.video.srcObject = want.video ? new MediaStream([want.video]) : null;
        // Only remote videos come from the SFU; their tiles tell it which layer fits.
        this.meeting.tileHints.show(tile.video, want.local ? null : want.video);
      }
      if (tile.heard !== want.audio) {
        tile.heard = want.audio;
        if (want.audio) {
          tile.audio ??= this.makeAudio(tile.element);
          tile.audio.srcObject = new MediaStream([want.audio]);
        } else if (tile.audio) {
          tile.audio.srcObject = null;
        }
      }
      const muted = want.local ? !s.micOn : (want.p?.info.muted ?? []).includes('microphone') || (want.p?.info.blocked ?? []).includes('microphone');
      tile.label.textContent = `${want.name}${muted && !want.screen ? ' · muted' : ''}`;
      tile.element.classList.toggle('speaking', !want.screen && want.id !== null && s.activeSpeaker === want.id);
      tile.element.classList.toggle('no-video', !want.video);
      tile.element.classList.toggle('screen', want.screen);
      tile.element.setAttribute('aria-label', `${want.name}${muted ? ', microphone off' : ''}${want.video ? '' : ', camera off'}`);
    }
    this.grid.dataset['count'] = String(Math.min(this.tiles.size, 9));
  }

  private makeAudio(parent: HTMLElement): HTMLAudioElement {
    const audio = h('audio', { autoplay: true });
    parent.append(audio);
    this.applySpeaker(audio);
    return audio;
  }

  private applySpeaker(audio: HTMLAudioElement): void {
    const withSink = audio as HTMLAudioElement & { setSinkId?: (id: string) => Promise<void> };
    if (this.speakerId && withSink.setSinkId) void withSink.setSinkId(this.speakerId).catch(() => undefined);
  }

  setSpeaker(id: string): void {
    this.speakerId = id;
    for (const tile of this.tiles.values()) if (tile.audio) this.applySpeaker(tile.audio);
  }

  private toggle(panel: Exclude<Panel, null>): void {
    this.panel = this.panel === panel ? null : panel;
    if (this.panel === 'chat') this.unreadChat = 0;
    this.update();
    if (this.panel === 'chat') document.getElementById('chat-input')?.focus();
  }

  private renderSide(): void {
    const s = this.meeting.state;
    this.side.hidden = this.panel === null;
    const key = JSON.stringify({
      panel: this.panel,
      role: s.role,
      locked: s.meetingState?.locked,
      people: this.panel === 'people' ? [...s.participants.values()].map((p) => p.info) : null,
      hosts: this.panel === 'people' ? [...s.verifiedHosts].sort() : null,
      code: this.panel === 'security' ? [s.securityCode, s.securityEmoji, s.alarms.length] : null,
    });
    if (key === this.sideKey) return;
    this.sideKey = key;
    const close = h('button', { type: 'button', class: 'close', 'aria-label': 'Close the panel', onclick: () => this.panel && this.toggle(this.panel) }, '×');
    if (this.panel === 'chat') this.side.replaceChildren(close, this.chat.element);
    else if (this.panel === 'people') this.side.replaceChildren(close, renderParticipants(this.meeting, this.invite?.element ?? null));
    else if (this.panel === 'security') this.side.replaceChildren(close, renderSecurity(this.meeting));
    else this.side.replaceChildren();
  }

  /** Buttons are made once and updated in place, so keyboard focus stays where it was. */
  private control(id: string): HTMLButtonElement {
    let el = this.controlButtons.get(id);
    if (!el) {
      el = h('button', { type: 'button', id, class: 'control' });
      this.controlButtons.set(id, el);
    }
    return el;
  }

  private setControl(id: string, label: string, text: string, pressed: boolean | null, onclick: () => void, extra = ''): HTMLButtonElement {
    const el = this.control(id);
    el.setAttribute('aria-label', label);
    if (pressed === null) el.removeAttribute('aria-pressed');
    else el.setAttribute('aria-pressed', String(pressed));
    if (el.textContent !== text) el.textContent = text;
    el.className = `control ${extra}`;
    el.onclick = onclick;
    return el;
  }

  private renderControls(): void {
    const s = this.meeting.state;
    const chatLabel = this.unreadChat ? `Chat (${this.unreadChat} new)` : 'Chat';
    const buttons = [
      this.setControl('mic-button', s.micOn ? 'Turn microphone off' : 'Turn microphone on', s.micOn ? 'Mute' : 'Unmute', !s.micOn, () => this.meeting.setMic(!s.micOn), s.micOn ? '' : 'off'),
      this.setControl('camera-button', s.cameraOn ? 'Turn camera off' : 'Turn camera on', s.cameraOn ? 'Stop video' : 'Start video', !s.cameraOn, () => this.meeting.setCamera(!s.cameraOn), s.cameraOn ? '' : 'off'),
      'getDisplayMedia' in (navigator.mediaDevices ?? {})
        ? this.setControl('screen-button', s.sharingScreen ? 'Stop sharing your screen' : 'Share your screen', s.sharingScreen ? 'Stop sharing' : 'Share screen', s.sharingScreen, () => void (s.sharingScreen ? this.meeting.stopScreenShare() : this.meeting.startScreenShare()))
        : null,
      this.setControl('chat-button', chatLabel, chatLabel, this.panel === 'chat', () => this.toggle('chat')),
      this.setControl('people-button', 'Participants', `People ${s.participants.size + 1}${this.meeting.isHost && s.lobby.length ? ` · ${s.lobby.length} waiting` : ''}`, this.panel === 'people', () => this.toggle('people')),
      this.setControl('security-button', 'Security code', 'Security code', this.panel === 'security', () => this.toggle('security')),
      this.setControl('leave-button', 'Leave the meeting', 'Leave', null, () => this.meeting.leave(), 'danger'),
    ].filter((b): b is HTMLButtonElement => b !== null);
    buttons.forEach((b, i) => {
      if (this.controls.children[i] !== b) this.controls.insertBefore(b, this.controls.children[i] ?? null);
    });

  }
}
