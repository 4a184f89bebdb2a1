// The secrets panel (left sidebar): the user's own secrets and those granted
// to them, by name only; add, replace, grant and delete those they manage.
// A value goes in through a password field, is sent once (PUT
// /api/warden/secrets/NAME) and the field is emptied: the server never sends
// a value back, and the page keeps none (docs/secrets.md).
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { api, ISecret, WardenError } from './api';
import { h, refuse, when } from './dom';

const KEY_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24"><path class="jp-icon3" fill="#616161" ' +
  'd="M12.65 10A6 6 0 1 0 12.65 14H17v4h4v-4h2v-4H12.65zM7 14a2 2 0 1 1 0-4 2 2 0 0 1 0 4z"/></svg>';

export const secretIcon = new LabIcon({ name: 'jupyter-warden:secret', svgstr: KEY_SVG });

export class SecretsPanel extends Widget {
  constructor() {
    super();
    this.id = 'jp-warden-secrets';
    this.addClass('jp-warden-secrets');
    this.title.icon = secretIcon;
    this.title.caption = 'Secrets';
    this._list = h('div', { className: 'jp-warden-secrets-list' });
    this._status = h('p', { className: 'jp-warden-status', role: 'status' });
    this.node.append(
      h('h2', {}, 'Secrets'),
      h(
        'p',
        { className: 'jp-warden-secrets-help' },
        'Kept encrypted on the server and handed only to your kernels: ',
        h('code', {}, 'secrets.get("NAME")'),
        '. A value is never shown again once saved.'
      ),
      this._list,
      this._addForm(),
      this._status
    );
  }

  protected onAfterShow(): void {
    void this.refresh();
  }

  async refresh(): Promise<void> {
    let secrets: ISecret[];
    try {
      secrets = await api.secrets();
    } catch (e) {
      this.say((e as Error).message, true);
      return;
    }
    this._list.replaceChildren(
      secrets.length
        ? h('ul', {}, ...secrets.map(s => this._row(s)))
        : h('p', { className: 'jp-warden-secrets-none' }, 'No secrets yet.')
    );
  }

  private _row(secret: ISecret): HTMLElement {
    const replace = h('button', { className: 'jp-mod-styled jp-warden-secret-replace' }, 'Replace');
    const remove = h('button', { className: 'jp-mod-styled jp-mod-warn jp-warden-secret-remove' }, 'Delete');
    const extra = h('div', { className: 'jp-warden-secret-extra' });
    const row = h(
      'li',
      { className: 'jp-warden-secret', 'data-secret': secret.name },
      h('div', { className: 'jp-warden-secret-name' }, secret.name),
      h(
        'div',
        { className: 'jp-warden-secret-owner' },
        secret.manageable ? `owner ${secret.owner} · updated ${when(secret.updated)}` : `granted to you by ${secret.owner}`
      ),
      h('div', { className: 'jp-warden-row' }, replace, remove),
      extra
    );
    if (!secret.manageable) {
      const why = `Only its owner (${secret.owner}) can change it.`;
      refuse(replace, why);
      refuse(remove, why);
      return row;
    }
    replace.onclick = () => extra.replaceChildren(this._replaceForm(secret, extra));
    remove.onclick = () => void this._remove(secret.name);
    extra.replaceChildren(this._grants(secret));
    return row;
  }

  private _grants(secret: ISecret): HTMLElement {
    const chips = (secret.grants ?? []).map(subject => {
      const revoke = h('button', { className: 'jp-warden-chip-remove', title: `Take it back from ${subject}` }, '×');
      revoke.onclick = () =>
        void this._act(() => api.revokeSecret(secret.name, subject), `${secret.name}: taken back from ${subject}.`);
      return h('span', { className: 'jp-warden-chip', 'data-subject': subject }, subject, revoke);
    });
    const subject = h('input', {
      className: 'jp-mod-styled jp-warden-secret-subject',
      placeholder: 'user:NAME or group:NAME',
      'aria-label': `Grant ${secret.name} to`
    }) as HTMLInputElement;
    const grant = h('button', { className: 'jp-mod-styled jp-warden-secret-grant' }, 'Grant');
    grant.onclick = () => {
      const who = subject.value.trim();
      if (who) {
        const full = who.includes(':') || who === 'authenticated' ? who : `user:${who}`;
        void this._act(() => api.grantSecret(secret.name, full), `${secret.name}: granted to ${full}.`);
      }
    };
    return h(
      'div',
      { className: 'jp-warden-secret-grants' },
      h('span', {}, chips.length ? 'Granted to ' : 'Granted to no one else. '),
      ...chips,
      h('div', { className: 'jp-warden-row' }, subject, grant)
    );
  }

  private _replaceForm(secret: ISecret, extra: HTMLElement): HTMLElement {
    const value = valueInput(`New value of ${secret.name}`);
    const save = h('button', { className: 'jp-mod-styled jp-mod-accept jp-warden-secret-save' }, 'Save');
    const cancel = h('button', { className: 'jp-mod-styled' }, 'Cancel');
    const form = h('form', { className: 'jp-warden-row jp-warden-secret-replace-form' }, value, save, cancel);
    form.onsubmit = event => {
      event.preventDefault();
      const text = value.value;
      value.value = '';
      if (text) {
        void this._act(() => api.setSecret(secret.name, text), `${secret.name}: value replaced.`);
      }
    };
    cancel.onclick = event => {
      event.preventDefault();
      value.value = '';
      extra.replaceChildren(this._grants(secret));
    };
    setTimeout(() => value.focus(), 0);
    return form;
  }

  private _addForm(): HTMLElement {
    const name = h('input', {
      className: 'jp-mod-styled jp-warden-secret-new-name',
      name: 'secret-name',
      placeholder: 'NAME',
      autocomplete: 'off',
      'aria-label': 'Name of the new secret'
    }) as HTMLInputElement;
    const value = valueInput('Value of the new secret');
    const owner = h('input', {
      className: 'jp-mod-styled jp-warden-secret-new-owner',
      name: 'secret-owner',
      placeholder: 'owner (optional): group:NAME',
      autocomplete: 'off',
      'aria-label': 'Owner of the new secret (optional)'
    }) as HTMLInputElement;
    const add = h('button', { className: 'jp-mod-styled jp-mod-accept jp-warden-secret-add' }, 'Add');
    const form = h(
      'form',
      { className: 'jp-warden-secret-new' },
      h('h3', {}, 'Add a secret'),
      name,
      value,
      owner,
      add
    );
    form.onsubmit = event => {
      event.preventDefault();
      const text = value.value;
      // The value leaves the page with this one request; the field is emptied now.
      value.value = '';
      const key = name.value.trim();
      // The server checks the name (its rule is in one place: secrets/vault.py).
      if (!key || !text) {
        this.say('Type a name and a value.', true);
        return;
      }
      void this._act(() => api.setSecret(key, text, owner.value.trim() || undefined), `${key} saved.`).then(ok => {
        if (ok) {
          name.value = '';
          owner.value = '';
        }
      });
    };
    return form;
  }

  private async _remove(name: string): Promise<void> {
    const answer = await showDialog({
      title: `Delete ${name}?`,
      body: 'Kernels can no longer read it; this can’t be undone.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
    });
    if (answer.button.accept) {
      await this._act(() => api.removeSecret(name), `${name} deleted.`);
    }
  }

  private async _act(change: () => Promise<unknown>, done: string): Promise<boolean> {
    try {
      await change();
    } catch (e) {
      this.say(e instanceof WardenError ? e.message : String(e), true);
      return false;
    }
    await this.refresh();
    this.say(done);
    return true;
  }

  private say(text: string, error = false): void {
    this._status.textContent = text;
    this._status.classList.toggle('jp-warden-error', error);
  }

  private _list: HTMLElement;
  private _status: HTMLElement;
}

/** A password field the browser doesn't offer to remember or fill. */
function valueInput(label: string): HTMLInputElement {
  return h('input', {
    type: 'password',
    className: 'jp-mod-styled jp-warden-secret-value',
    name: 'secret-value',
    placeholder: 'value',
    autocomplete: 'new-password',
    spellcheck: 'false',
    'aria-label': label
  }) as HTMLInputElement;
}
