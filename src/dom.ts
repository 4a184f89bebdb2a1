// Small DOM builders for the dialogs, so that every text goes in as text.
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | boolean | undefined> = {},
  ...children: (Node | string | null | undefined)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) {
      continue;
    }
    if (name === 'className') {
      node.className = String(value);
    } else {
      node.setAttribute(name, value === true ? '' : value);
    }
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child);
    }
  }
  return node;
}

/** Disable a control and say why, next to it and in its tooltip. */
export function refuse(control: HTMLElement, reason: string): void {
  (control as HTMLButtonElement).disabled = true;
  control.title = reason;
  control.classList.add('jp-warden-refused');
  control.dataset.reason = reason;
}

export function select(name: string, options: string[], value?: string): HTMLSelectElement {
  const node = h('select', { name, className: 'jp-mod-styled' });
  for (const option of options) {
    node.append(h('option', { value: option, selected: option === value }, option));
  }
  return node;
}

/** A datetime-local input's value as ISO 8601 with a zone, or undefined. */
export function zonedTime(input: HTMLInputElement): string | undefined {
  return input.value ? new Date(input.value).toISOString() : undefined;
}

export function when(iso: string | null): string {
  return iso ? new Date(iso).toLocaleString() : '';
}
