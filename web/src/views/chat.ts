// The chat panel: messages are MLS application messages, encrypted in the E2EE worker.

import { h } from '../dom';
import type { MeetingController } from '../meeting/controller';

export class ChatPanel {
  readonly element: HTMLElement;
  private readonly list: HTMLOListElement;
  private shown = 0;

  constructor(private readonly meeting: MeetingController) {
    this.list = h('ol', { class: 'chat-log', 'aria-live': 'polite', id: 'chat-log' });
    const input = h('input', { id: 'chat-input', type: 'text', maxLength: 2000, autocomplete: 'off', placeholder: 'Message everyone' });
    const form = h('form', { class: 'chat-form' }, h('label', { for: 'chat-input', class: 'visually-hidden' }, 'Chat message'), input, h('button', { type: 'submit', id: 'chat-send' }, 'Send'));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      meeting.sendChat(input.value);
      input.value = '';
    });
    this.element = h('section', { class: 'panel chat', 'aria-label': 'Chat', id: 'chat-panel' }, h('h2', {}, 'Chat'), h('p', { class: 'hint' }, 'End-to-end encrypted: only people in the meeting can read it.'), this.list, form);
  }

  update(): void {
    const messages = this.meeting.state.chat;
    for (; this.shown < messages.length; this.shown++) {
      const m = messages[this.shown];
      if (!m) continue;
      this.list.append(
        h(
          'li',
          { class: m.own ? 'own' : '' },
          h('span', { class: 'from' }, m.own ? 'You' : m.from),
          h('time', { dateTime: m.at.toISOString() }, m.at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })),
          h('p', { class: 'text' }, m.text),
        ),
      );
    }
    this.list.lastElementChild?.scrollIntoView({ block: 'nearest' });
  }
}
