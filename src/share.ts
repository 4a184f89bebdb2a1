// The share dialog: who has access and through which grant, adding and
// removing access, share links and labels. What the caller may not do is
// shown disabled, with the reason.
import { Clipboard, Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { api, can, IGrant, ILabel, ILink, IPermissions, WardenError } from './api';
import { h, refuse, select, when, zonedTime } from './dom';
import { LEVELS, LINK_LEVELS } from './levels';

export async function openShareDialog(path: string, onChange?: () => void): Promise<void> {
  const body = new ShareBody(path, onChange);
  await body.load();
  await showDialog({
    title: `Share ${path || '/'}`,
    body,
    buttons: [Dialog.okButton({ label: 'Close' })],
    hasClose: true
  });
}

class ShareBody extends Widget {
  constructor(
    private readonly path: string,
    private readonly onChange?: () => void
  ) {
    super();
    this.addClass('jp-warden-share');
  }

  async load(): Promise<void> {
    let perms: IPermissions;
    try {
      perms = await api.permissions(this.path);
    } catch (e) {
      this.node.replaceChildren(h('p', { className: 'jp-warden-error' }, String(e)));
      return;
    }
    const manage = can(perms, 'manage');
    const why = manage
      ? ''
      : `You have ${perms.level} on '${this.path || '/'}'; only someone with manage can share it.`;
    const [grants, links, defined] = manage
      ? await Promise.all([
          api.grants(this.path).catch(() => perms.grants),
          api.links(this.path).catch(() => [] as ILink[]),
          api.labels().catch(() => [] as ILabel[])
        ])
      : [perms.grants, [] as ILink[], [] as ILabel[]];
    this._status = h('p', { className: 'jp-warden-status', role: 'status' });
    this.node.replaceChildren(
      h('p', { className: 'jp-warden-share-me' }, `Your access: ${perms.level}. ${perms.reason}`),
      ...(why ? [h('p', { className: 'jp-warden-share-why' }, why)] : []),
      this.grantsSection(grants, why),
      this.addSection(why),
      this.linksSection(links, perms, why),
      this.labelsSection(perms.labels, defined, why),
      this._status
    );
  }

  private grantsSection(grants: IGrant[], why: string): HTMLElement {
    const rows = grants.map(g => {
      const remove = h('button', { className: 'jp-mod-styled jp-warden-remove' }, 'Remove');
      if (why) {
        refuse(remove, why);
      } else if (g.inherited) {
        refuse(remove, `Inherited from '${g.path || '/'}': remove it there.`);
      } else {
        remove.onclick = () =>
          this.act(() => api.revoke(this.path, g.subject), `Removed ${g.subject}.`);
      }
      const window = [g.not_before && `from ${when(g.not_before)}`, g.not_after && `until ${when(g.not_after)}`]
        .filter(Boolean)
        .join(' ');
      return h(
        'tr',
        { 'data-subject': g.subject, className: g.inherited ? 'jp-warden-inherited' : '' },
        h('td', {}, g.subject),
        h('td', {}, g.level),
        h('td', {}, g.inherited ? `inherited from '${g.path || '/'}'` : 'on this path'),
        h('td', {}, window),
        h('td', {}, remove)
      );
    });
    return h(
      'section',
      { className: 'jp-warden-grants' },
      h('h3', {}, 'Who has access'),
      rows.length
        ? h('table', {}, h('tbody', {}, ...rows))
        : h('p', {}, 'No grants here or on the folders above (the creator and admins have access).')
    );
  }

  private addSection(why: string): HTMLElement {
    const subject = h('input', {
      className: 'jp-mod-styled jp-warden-subject',
      name: 'subject',
      placeholder: 'user:NAME or group:NAME',
      list: 'jp-warden-principals',
      autocomplete: 'off'
    }) as HTMLInputElement;
    const options = h('datalist', { id: 'jp-warden-principals' });
    subject.oninput = () => void this.complete(subject.value, options);
    const level = select('level', LEVELS, 'read');
    const notBefore = h('input', { type: 'datetime-local', name: 'not_before', className: 'jp-mod-styled' });
    const notAfter = h('input', { type: 'datetime-local', name: 'not_after', className: 'jp-mod-styled' });
    const add = h('button', { className: 'jp-mod-styled jp-mod-accept jp-warden-add' }, 'Add');
    add.onclick = () => {
      const who = subject.value.trim();
      const full = who.includes(':') || who === 'authenticated' ? who : `user:${who}`;
      void this.act(
        () =>
          api.grant({
            path: this.path,
            subject: full,
            level: level.value,
            not_before: zonedTime(notBefore),
            not_after: zonedTime(notAfter)
          }),
        `Gave ${full} ${level.value}.`
      );
    };
    if (why) {
      for (const control of [subject, level, notBefore, notAfter, add]) {
        refuse(control, why);
      }
    }
    return h(
      'section',
      { className: 'jp-warden-add-section' },
      h('h3', {}, 'Add a user or group'),
      h('div', { className: 'jp-warden-row' }, subject, options, level, add),
      h('div', { className: 'jp-warden-row' }, h('label', {}, 'From ', notBefore), h('label', {}, ' until ', notAfter))
    );
  }

  private async complete(text: string, options: HTMLElement): Promise<void> {
    const q = text.replace(/^(user|group):/, '');
    try {
      const found = await api.principals(this.path, q);
      options.replaceChildren(
        ...found.users.map(u => h('option', { value: `user:${u.name}` }, u.display_name)),
        ...found.groups.map(g => h('option', { value: `group:${g.name}` }, 'group'))
      );
    } catch {
      options.replaceChildren();
    }
  }

  private linksSection(links: ILink[], perms: IPermissions, why: string): HTMLElement {
    const noLinks = perms.labels.find(l => l.no_links);
    const linkWhy = why || (noLinks ? `Label '${noLinks.name}' forbids share links here.` : '');
    const rows = links.map(link => {
      const revoke = h('button', { className: 'jp-mod-styled jp-warden-revoke-link' }, 'Revoke');
      if (link.state !== 'active') {
        refuse(revoke, `This link is ${link.state}.`);
      } else {
        revoke.onclick = () => this.act(() => api.revokeLink(link.id), 'Link revoked.');
      }
      return h(
        'tr',
        { 'data-link': link.id },
        h('td', {}, link.id),
        h('td', {}, link.level),
        h('td', {}, link.state),
        h('td', {}, link.expires_at ? `expires ${when(link.expires_at)}` : ''),
        h('td', {}, revoke)
      );
    });
    const level = select('link-level', LINK_LEVELS, 'read');
    const expires = h('input', { type: 'datetime-local', name: 'expires', className: 'jp-mod-styled' });
    const create = h('button', { className: 'jp-mod-styled jp-warden-create-link' }, 'Create link');
    const made = h('div', { className: 'jp-warden-new-link' });
    create.onclick = async () => {
      try {
        const link = await api.createLink({ path: this.path, level: level.value, expires: zonedTime(expires) });
        const url = h('input', { className: 'jp-mod-styled jp-warden-link-url', readonly: true, value: link.url ?? '' });
        const copy = h('button', { className: 'jp-mod-styled jp-warden-copy-link' }, 'Copy');
        copy.onclick = () => {
          Clipboard.copyToSystem(link.url ?? '');
          this.say('Link copied. It is shown only once.');
        };
        made.replaceChildren(url, copy, h('p', {}, 'Copy it now: the server keeps no copy of this link.'));
        this.say('Link created.');
        this.onChange?.();
      } catch (e) {
        this.say(String((e as Error).message), true);
      }
    };
    if (linkWhy) {
      for (const control of [level, expires, create]) {
        refuse(control, linkWhy);
      }
    }
    return h(
      'section',
      { className: 'jp-warden-links' },
      h('h3', {}, 'Share links'),
      rows.length ? h('table', {}, h('tbody', {}, ...rows)) : null,
      h('div', { className: 'jp-warden-row' }, level, h('label', {}, ' expires ', expires), create),
      linkWhy ? h('p', { className: 'jp-warden-share-why' }, linkWhy) : null,
      made
    );
  }

  private labelsSection(onPath: ILabel[], defined: ILabel[], why: string): HTMLElement {
    const rows = onPath.map(label => {
      const remove = h('button', { className: 'jp-mod-styled jp-warden-remove-label' }, 'Remove');
      if (why) {
        refuse(remove, why);
      } else if ((label.path ?? this.path) !== this.path) {
        refuse(remove, `Set on '${label.path || '/'}': remove it there.`);
      } else {
        remove.onclick = () => this.act(() => api.removeLabel(this.path, label.name), `Label ${label.name} removed.`);
      }
      return h(
        'tr',
        { 'data-label': label.name },
        h('td', {}, label.name),
        h('td', {}, label.banner ?? ''),
        h('td', {}, (label.path ?? this.path) === this.path ? 'on this path' : `from '${label.path || '/'}'`),
        h('td', {}, remove)
      );
    });
    const names = defined.map(l => l.name).filter(n => !onPath.some(l => l.name === n));
    const choice = select('label', names);
    const set = h('button', { className: 'jp-mod-styled jp-warden-set-label' }, 'Set label');
    set.onclick = () => this.act(() => api.setLabel(this.path, choice.value), `Label ${choice.value} set.`);
    if (why) {
      refuse(choice, why);
      refuse(set, why);
    } else if (!names.length) {
      refuse(set, 'No other label is defined (an admin defines labels).');
    }
    return h(
      'section',
      { className: 'jp-warden-labels' },
      h('h3', {}, 'Labels'),
      rows.length ? h('table', {}, h('tbody', {}, ...rows)) : h('p', {}, 'No labels.'),
      h('div', { className: 'jp-warden-row' }, choice, set)
    );
  }

  private async act(change: () => Promise<unknown>, done: string): Promise<void> {
    try {
      await change();
    } catch (e) {
      this.say(e instanceof WardenError ? e.message : String(e), true);
      return;
    }
    this.onChange?.();
    await this.load();
    this.say(done);
  }

  private say(text: string, error = false): void {
    this._status.textContent = text;
    this._status.classList.toggle('jp-warden-error', error);
  }

  private _status: HTMLElement = h('p');
}
