// A notebook's access state, always visible and always applied: the level
// badge in the toolbar, the labels' banners and a notice above the cells,
// cells that can't be edited without write, and no kernel without run.
import { ToolbarButton } from '@jupyterlab/apputils';
import { Cell } from '@jupyterlab/cells';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, NotebookPanel } from '@jupyterlab/notebook';
import { ISessionContext } from '@jupyterlab/apputils';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';
import { Widget } from '@lumino/widgets';

import { can, IPermissions } from './api';
import { badgeText, noticeText } from './levels';
import { PermissionWatcher } from './watcher';

/** The permissions in force on each open notebook, for the command guard. */
export const panelPermissions = new WeakMap<NotebookPanel, IPermissions>();

export interface INotebookActions {
  share(path: string, watcher?: PermissionWatcher): void;
  audit(path: string): void;
}

export class WardenNotebookExtension
  implements DocumentRegistry.IWidgetExtension<NotebookPanel, INotebookModel>
{
  constructor(private readonly actions: INotebookActions) {}

  createNew(panel: NotebookPanel, context: DocumentRegistry.IContext<INotebookModel>): IDisposable {
    const watcher = new PermissionWatcher(() => context.path);
    const kernel = new KernelGate(panel.sessionContext, () => context.path);

    const badge = new Widget({ node: document.createElement('span') });
    badge.addClass('jp-warden-badge');
    badge.node.textContent = '…';
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

    const header = new Widget();
    header.addClass('jp-warden-header');
    panel.contentHeader.addWidget(header);

    const apply = (perms: IPermissions) => {
      panelPermissions.set(panel, perms);
      showBadge(badge, perms);
      showHeader(header, perms);
      lockCells(panel, !can(perms, 'write'));
      panel.toggleClass('jp-warden-readonly', !can(perms, 'write'));
      panel.node.dataset.wardenLevel = perms.level;
      if (panel.content.model) {
        panel.content.model.readOnly = !can(perms, 'write');
      }
      audit.setHidden(!can(perms, 'manage'));
      kernel.allow(can(perms, 'run'));
    };
    watcher.changed.connect((_, perms) => apply(perms));
    // Cells added later (by a collaborator, or an undo) are locked as well.
    const relock = () => {
      const perms = panelPermissions.get(panel);
      if (perms) {
        requestAnimationFrame(() => lockCells(panel, !can(perms, 'write')));
      }
    };
    panel.content.model?.cells.changed.connect(relock);
    panel.content.modelChanged.connect(() => {
      panel.content.model?.cells.changed.connect(relock);
      relock();
    });

    return new DisposableDelegate(() => {
      watcher.dispose();
      badge.dispose();
      share.dispose();
      audit.dispose();
      header.dispose();
    });
  }
}

function showBadge(badge: Widget, perms: IPermissions): void {
  badge.node.textContent = badgeText(perms.level);
  badge.node.dataset.level = perms.level;
  badge.node.title = `Your level here: ${perms.level}. ${perms.reason}`;
}

function showHeader(header: Widget, perms: IPermissions): void {
  header.node.replaceChildren();
  for (const label of perms.labels) {
    if (!label.banner) {
      continue;
    }
    const banner = document.createElement('div');
    banner.className = 'jp-warden-banner';
    banner.dataset.label = label.name;
    banner.textContent = label.banner;
    if (label.colour) {
      // The server accepts only #rgb, #rrggbb or a colour name (docs/http-api.md).
      banner.style.backgroundColor = label.colour;
    }
    banner.title = `Label '${label.name}'${label.path ? ` on '${label.path || '/'}'` : ''}`;
    header.node.appendChild(banner);
  }
  const says = noticeText(perms.level);
  if (says) {
    const notice = document.createElement('div');
    notice.className = 'jp-warden-notice';
    notice.dataset.level = perms.level;
    notice.textContent = says;
    header.node.appendChild(notice);
  }
  // The content header is a BoxPanel: it gives a child the height of its
  // CSS min-height, so set that to the rows shown (each ROW_PX high).
  header.node.style.minHeight = `${header.node.childElementCount * ROW_PX}px`;
  header.setHidden(header.node.childElementCount === 0);
  header.parent?.fit();
}

const ROW_PX = 26;

const LOCKED = 'jp-warden-locked';

/** Make each cell's editor read-only, without writing `editable` into the shared document. */
export function lockCells(panel: NotebookPanel, locked: boolean): void {
  for (const cell of panel.content.widgets) {
    lockCell(cell, locked);
  }
}

function lockCell(cell: Cell, locked: boolean): void {
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

  private _wanted: boolean;
  private _allowed = false;
  private _starting = false;
}
