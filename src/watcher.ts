// Follows the current user's permissions on open documents, live. The server
// sends an access notice on jupyter_server's event bus whenever anything that
// decides access changed (jupyter_warden/enforce/events.py); every watcher
// then asks GET /api/warden/permissions again. Polling stays as a fallback:
// every SLOW_POLL_MS while the bus is live, every POLL_MS while it is not.
import { Event } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { api, IPermissions, WardenError } from './api';

export const ACCESS_SCHEMA_ID = 'urn:jupyter-warden:events:access:v1';
export const POLL_MS = 1000;
export const SLOW_POLL_MS = 30000;
/** The bus counts as live until this many heartbeats pass without a notice. */
const MISSED_HEARTBEATS = 3;

/**
 * The access notices of the event bus, for every watcher of the page. The
 * page's state shows on `document.body`: `data-warden-live` (yes/no) and
 * `data-warden-notices` (how many notices caused a re-check).
 */
export class AccessFeed implements IDisposable {
  constructor(events: Event.IManager | null) {
    this._events = events;
    events?.stream.connect(this._onEvent, this);
    this._show();
  }

  /** Whether a notice came within the last few heartbeats. */
  get live(): boolean {
    return this._heard > 0 && Date.now() - this._heard < this._heartbeatMs * MISSED_HEARTBEATS;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  add(watcher: PermissionWatcher): void {
    this._watchers.add(watcher);
  }

  delete(watcher: PermissionWatcher): void {
    this._watchers.delete(watcher);
  }

  dispose(): void {
    this._disposed = true;
    clearTimeout(this._lapse);
    this._events?.stream.disconnect(this._onEvent, this);
  }

  private _onEvent(_: Event.IManager, event: Event.Emission): void {
    if (event.schema_id !== ACCESS_SCHEMA_ID) {
      return;
    }
    const wasLive = this.live;
    this._heard = Date.now();
    if (typeof event.heartbeat === 'number' && event.heartbeat > 0) {
      this._heartbeatMs = event.heartbeat * 1000;
    }
    // When the notices stop, go back to polling every second.
    clearTimeout(this._lapse);
    this._lapse = setTimeout(() => this._lost(), this._heartbeatMs * MISSED_HEARTBEATS);
    // 'alive' only says the bus works; anything else may mean a change
    // (on 'subscribed', one missed while the socket was down).
    if (event.cause !== 'alive' || !wasLive) {
      this._notices += 1;
      for (const watcher of this._watchers) {
        void watcher.refresh();
      }
    }
    this._show();
  }

  private _lost(): void {
    this._show();
    for (const watcher of this._watchers) {
      void watcher.refresh();
    }
  }

  private _show(): void {
    document.body.dataset.wardenLive = this.live ? 'yes' : 'no';
    document.body.dataset.wardenNotices = String(this._notices);
  }

  private _events: Event.IManager | null;
  private _watchers = new Set<PermissionWatcher>();
  private _heard = 0;
  private _heartbeatMs = 5000;
  private _notices = 0;
  private _lapse: ReturnType<typeof setTimeout> | undefined;
  private _disposed = false;
}

/** One open document's permissions: asked at once, on every access notice, and by a fallback poll. */
export class PermissionWatcher implements IDisposable {
  constructor(
    private readonly pathOf: () => string,
    private readonly feed: AccessFeed | null
  ) {
    feed?.add(this);
    void this.refresh();
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

  /**
   * Ask now (after a notice, or a change made from this page); the next poll
   * is timed from here. One request at a time: notices that come while one
   * is out make one more request after it, not one each.
   */
  refresh(): Promise<void> {
    if (this._inFlight) {
      this._again = true;
      return this._inFlight;
    }
    clearTimeout(this._timer);
    this._inFlight = (async () => {
      try {
        do {
          this._again = false;
          await this._fetch();
        } while (this._again && !this._disposed);
      } finally {
        this._inFlight = null;
      }
      if (!this._disposed) {
        clearTimeout(this._timer);
        const wait = this.feed?.live ? SLOW_POLL_MS : POLL_MS;
        this._timer = setTimeout(() => void this.refresh(), wait);
      }
    })();
    return this._inFlight;
  }

  dispose(): void {
    this._disposed = true;
    clearTimeout(this._timer);
    this.feed?.delete(this);
    Signal.clearData(this);
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
  private _inFlight: Promise<void> | null = null;
  private _again = false;
  private _disposed = false;
  private _timer: ReturnType<typeof setTimeout> | undefined;
}
