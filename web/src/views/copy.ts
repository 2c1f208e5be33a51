// A read-only link with a Copy button (landing page, participants panel, invitations).

import { h } from '../dom';

export function copyRow(label: string, url: string, id: string): HTMLElement {
  const input = h('input', { id, type: 'text', readOnly: true, value: url });
  const copy = h('button', { type: 'button', 'aria-label': `Copy the ${label.toLowerCase()}` }, 'Copy');
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(url);
      copy.textContent = 'Copied';
    } catch {
      input.select();
      copy.textContent = 'Press Ctrl+C';
    }
    setTimeout(() => (copy.textContent = 'Copy'), 2000);
  });
  return h('div', { class: 'copy-row' }, h('label', { for: id }, label), h('div', { class: 'row' }, input, copy));
}
