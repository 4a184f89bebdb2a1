// Follows the current user's permissions on one open document, live: the
// server is asked every second, so a grant or revocation shows within ~1 s.
import { ISignal, Signal } from '@lumino/signaling';
import { IDisposable } from '@lumino/disposable';

import { api, IPermissions, WardenError } from './api';

export const POLL_MS = 1000;

export class PermissionWatcher implements IDisposable {
  constructor(private readonly pathOf: () => string) {
    void this._poll();
  }

  get changed(): ISignal<this, IPermissions> {
    return this._changed;
  }

  /** The latest answer, or null before the first one. */
  get current(): IPermissions | null {
    return this._current;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Ask now (after a change made from this page) instead of at the next tick. */
  refresh(): Promise<void> {
    return this._fetch();
  }

  dispose(): void {
    this._disposed = true;
    clearTimeout(this._timer);
    Signal.clearData(this);
  }

  private async _poll(): Promise<void> {
    await this._fetch();
    if (!this._disposed) {
      this._timer = setTimeout(() => void this._poll(), POLL_MS);
    }
  }

  private async _fetch(): Promise<void> {
    const path = this.pathOf();
    let perms: IPermissions;
    try {
      perms = await api.permissions(path);
    } catch (e) {
      if (!(e instanceof WardenError) || e.status >= 500) {
        return; // The server is away for a moment: keep what we know.
      }
      // Signed out, or the session ended (a revoked link): no access at all.
      perms = {
        path,
        user: this._current?.user ?? { name: '', admin: false, guest: false },
        capabilities: [],
        level: 'none',
        reason: e.message,
        grants: [],
        labels: []
      };
    }
    if (this._disposed) {
      return;
    }
    const key = JSON.stringify(perms);
    if (key !== this._key) {
      this._key = key;
      this._current = perms;
      this._changed.emit(perms);
    }
  }

  private _changed = new Signal<this, IPermissions>(this);
  private _current: IPermissions | null = null;
  private _key = '';
  private _disposed = false;
  private _timer: ReturnType<typeof setTimeout> | undefined;
}
