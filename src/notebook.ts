// A notebook's access state, always visible and always applied: the level
// badge in the toolbar, the labels' banners and a notice above the cells,
// cells that can't be edited without write, no kernel without run, and
// sealed cells shown as cards (sealed.ts).
import { ISessionContext, Notification, ToolbarButton } from '@jupyterlab/apputils';
import { Cell } from '@jupyterlab/cells';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, NotebookPanel } from '@jupyterlab/notebook';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';
import { Widget } from '@lumino/widgets';

import { api, can, IKernelExit, IPermissions } from './api';
import { SEALED, SealedCards } from './sealed';
import { createBadge, createHeader, showBadge, showHeader } from './status';
import { AccessFeed, PermissionWatcher } from './watcher';

/** The permissions in force on each open document (notebook or file), for the command guard. */
export const documentPermissions = new WeakMap<Widget, IPermissions>();

export interface INotebookActions {
  share(path: string, watcher?: PermissionWatcher): void;
  audit(path: string): void;
}

export class WardenNotebookExtension
  implements DocumentRegistry.IWidgetExtension<NotebookPanel, INotebookModel>
{
  constructor(
    private readonly actions: INotebookActions,
    private readonly feed: AccessFeed | null
  ) {}

  createNew(panel: NotebookPanel, context: DocumentRegistry.IContext<INotebookModel>): IDisposable {
    const watcher = new PermissionWatcher(() => context.path, this.feed);
    const kernel = new KernelGate(panel.sessionContext, () => context.path);

    const badge = createBadge();
    const share = new ToolbarButton({
      className: 'jp-warden-share-button',
      label: 'Share',
      tooltip: 'Who has access, share links and labels',
      onClick: () => this.actions.share(context.path, watcher)
    });
    const audit = new ToolbarButton({
      className: 'jp-warden-audit-button',
      label: 'Audit',
      tooltip: 'Who opened, edited, ran and shared this notebook',
      onClick: () => this.actions.audit(context.path)
    });
    audit.hide();
    panel.toolbar.insertItem(0, 'warden-access', badge);
    panel.toolbar.insertAfter('warden-access', 'warden-share', share);
    panel.toolbar.insertAfter('warden-share', 'warden-audit', audit);

    const header = createHeader();
    panel.contentHeader.addWidget(header);

    const locked = () => !can(documentPermissions.get(panel) ?? null, 'write');
    const sealed = new SealedCards(
      panel,
      () => {
        const perms = documentPermissions.get(panel);
        return can(perms ?? null, 'run')
          ? { allowed: true, reason: '' }
          : {
              allowed: false,
              reason: perms
                ? `Your level on ${context.path} is ${perms.level}: you may not run it.`
                : 'Checking your access…'
            };
      },
      cell => lockCell(cell, locked())
    );

    const apply = (perms: IPermissions) => {
      documentPermissions.set(panel, perms);
      showBadge(badge, perms);
      showHeader(header, perms, 'notebook');
      lockCells(panel, !can(perms, 'write'));
      panel.toggleClass('jp-warden-readonly', !can(perms, 'write'));
      panel.node.dataset.wardenLevel = perms.level;
      if (panel.content.model) {
        panel.content.model.readOnly = !can(perms, 'write');
      }
      audit.setHidden(!can(perms, 'manage'));
      kernel.allow(can(perms, 'run'));
      sealed.refreshRunButtons();
    };
    watcher.changed.connect((_, perms) => apply(perms));
    // Cells added later (by a collaborator, or an undo) are locked and sealed as well.
    const relock = () => {
      requestAnimationFrame(() => {
        sealed.update();
        if (documentPermissions.get(panel)) {
          lockCells(panel, locked());
        }
      });
    };
    panel.content.model?.cells.changed.connect(relock);
    panel.content.modelChanged.connect(() => {
      panel.content.model?.cells.changed.connect(relock);
      relock();
    });
    void context.ready.then(relock);

    return new DisposableDelegate(() => {
      watcher.dispose();
      badge.dispose();
      share.dispose();
      audit.dispose();
      header.dispose();
    });
  }
}

const LOCKED = 'jp-warden-locked';

/** Make each cell's editor read-only, without writing `editable` into the shared document. */
export function lockCells(panel: NotebookPanel, locked: boolean): void {
  for (const cell of panel.content.widgets) {
    lockCell(cell, locked);
  }
}

function lockCell(cell: Cell, locked: boolean): void {
  // A sealed cell's placeholder must stay exactly as sealed: never editable.
  locked = locked || cell.hasClass(SEALED);
  if (locked && !cell.hasClass(LOCKED)) {
    cell.syncEditable = false;
    cell.readOnly = true;
    cell.addClass(LOCKED);
  } else if (!locked && cell.hasClass(LOCKED)) {
    cell.removeClass(LOCKED);
    cell.loadEditableState();
    cell.syncEditable = true;
  }
}

/**
 * Holds back the notebook's kernel until the server says the user may run:
 * a reader's page never asks for a kernel the server would refuse.
 *
 * The kernel is then started with a session at the notebook's own path.
 * JupyterLab's own start first asks for a session at a placeholder path
 * (FOLDER/UUID) and renames it after; the warden checks `run` on the path
 * asked for, which a user with a grant on the notebook alone lacks on the
 * placeholder, so that start would be refused.
 */
class KernelGate {
  constructor(
    private readonly session: ISessionContext,
    private readonly pathOf: () => string
  ) {
    const pref = session.kernelPreference;
    this._wanted = pref.shouldStart !== false && pref.canStart !== false;
    // A kernel that the server stopped (a limit, its age, idle, lost access):
    // the cell that ran saw why, but a user who was away, or whose cells were
    // idle, would see only a dead or missing kernel. Ask the server why.
    session.statusChanged.connect((_, status) => {
      if (status === 'dead' || status === 'restarting') {
        void this._explain(session.session?.kernel?.id);
      }
    });
    session.kernelChanged.connect((_, change) => void this._explain(change.oldValue?.id));
    // JupyterLab never starts a kernel itself here; `allow` does.
    session.kernelPreference = { ...pref, shouldStart: false, canStart: false };
  }

  allow(run: boolean): void {
    if (run === this._allowed) {
      return;
    }
    this._allowed = run;
    if (run && this._wanted) {
      void this.session.ready.then(() => this._start());
    }
  }

  private async _start(): Promise<void> {
    const context = this.session;
    if (context.isDisposed || context.session || !this._allowed || this._starting) {
      return;
    }
    this._starting = true;
    try {
      const path = this.pathOf();
      const name =
        context.kernelPreference.name || context.specsManager.specs?.default || 'python3';
      const connection = await context.sessionManager.startNew({
        path,
        type: 'notebook',
        name: path.split('/').pop() ?? path,
        kernel: { name }
      });
      if (context.isDisposed || context.session) {
        connection.dispose();
        return;
      }
      // SessionContext has no public way to adopt a session it did not start.
      (context as any)._handleNewSession(connection);
    } catch (e) {
      console.warn('jupyter-warden: the kernel could not start', e);
    } finally {
      this._starting = false;
    }
  }

  private async _explain(kernelId: string | undefined): Promise<void> {
    if (!kernelId) {
      return;
    }
    const asked = Date.now();
    let end: IKernelExit | null;
    try {
      end = await api.kernelExit(kernelId);
    } catch {
      return; // the server is away; its own notices still reach running cells
    }
    // Once per end; an end long before (then a restart asked for) is old news.
    const key = `${end?.kernel}@${end?.at}`;
    if (!end || KernelGate._told.has(key) || asked - Date.parse(end.at) > 120_000) {
      return;
    }
    KernelGate._told.add(key);
    Notification.warning(end.message.replace(/^\[jupyter-warden\] /, ''), { autoClose: false });
  }

  private static _told = new Set<string>();
  private _wanted: boolean;
  private _allowed = false;
  private _starting = false;
}
