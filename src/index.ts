// jupyter-warden's JupyterLab extension: the notebook's access state, the
// share dialog (notebook toolbar and file browser menu), the audit view,
// and a guard that keeps editing and run commands off documents the user
// may not change or run. The server enforces all of it; this shows it.
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';

import { can } from './api';
import { createAuditWidget } from './audit';
import { panelPermissions, WardenNotebookExtension } from './notebook';
import { openShareDialog } from './share';
import { PermissionWatcher } from './watcher';

const COMMANDS = { share: 'warden:share', audit: 'warden:audit' };

// Notebook commands that change the document (cell editing is stopped in the editors).
const EDITING = [
  /^notebook:(cut|paste|delete|split|merge|insert|move|change-cell-to|undo|redo|replace|clear)/,
  /^docmanager:save$/,
  /^notebook:set-cell-/
];
// Commands that run code or handle the kernel.
const RUNNING = [/^notebook:(run|restart|interrupt|change-kernel|reconnect)/, /^runmenu:/, /^kernelmenu:/];

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-warden:plugin',
  description: 'Access levels, labels, sharing and the audit log of jupyter-warden.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [IDefaultFileBrowser, ICommandPalette, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    browser: IDefaultFileBrowser | null,
    palette: ICommandPalette | null
  ) => {
    const openAudit = (path: string) => {
      const widget = createAuditWidget(path);
      const open = Array.from(app.shell.widgets('main')).find(w => w.id === widget.id);
      if (open) {
        widget.dispose();
        app.shell.activateById(open.id);
        return;
      }
      app.shell.add(widget, 'main');
    };
    const share = (path: string, watcher?: PermissionWatcher) =>
      void openShareDialog(path, () => void watcher?.refresh());
    app.docRegistry.addWidgetExtension('Notebook', new WardenNotebookExtension({ share, audit: openAudit }));

    const targetPath = (args: any): string | null => {
      if (typeof args?.path === 'string') {
        return args.path;
      }
      if (args?.origin === 'filebrowser' && browser) {
        const item = browser.selectedItems().next();
        if (item && !item.done) {
          return item.value.path;
        }
      }
      return tracker.currentWidget?.context.path ?? null;
    };
    app.commands.addCommand(COMMANDS.share, {
      label: 'Share…',
      caption: 'Who has access, share links and labels',
      execute: args => {
        const path = targetPath(args);
        if (path !== null) {
          share(path);
        }
      }
    });
    app.commands.addCommand(COMMANDS.audit, {
      label: 'Audit Log of This Notebook',
      isEnabled: () => {
        const panel = tracker.currentWidget;
        return !!panel && can(panelPermissions.get(panel) ?? null, 'manage');
      },
      execute: args => {
        const path = targetPath(args);
        if (path !== null) {
          openAudit(path);
        }
      }
    });
    app.contextMenu.addItem({
      command: COMMANDS.share,
      args: { origin: 'filebrowser' },
      selector: '.jp-DirListing-item[data-isdir]',
      rank: 4
    });
    palette?.addItem({ command: COMMANDS.share, category: 'Sharing' });
    palette?.addItem({ command: COMMANDS.audit, category: 'Sharing' });

    guardCommands(app, tracker);
  }
};

/**
 * Keyboard shortcuts, menus and toolbar buttons all go through the command
 * registry; refuse there the commands the user's level doesn't allow on the
 * current notebook, and say why.
 */
function guardCommands(app: JupyterFrontEnd, tracker: INotebookTracker): void {
  const commands = app.commands;
  const execute = commands.execute.bind(commands);
  commands.execute = (id: string, args?: any) => {
    const panel: NotebookPanel | null = tracker.currentWidget;
    const perms = panel ? panelPermissions.get(panel) : undefined;
    if (panel && perms) {
      const appliesHere = id.startsWith('docmanager:') ? app.shell.currentWidget === panel : true;
      const refusedEdit = !can(perms, 'write') && EDITING.some(re => re.test(id));
      const refusedRun = !can(perms, 'run') && RUNNING.some(re => re.test(id));
      if (appliesHere && (refusedEdit || refusedRun)) {
        Notification.warning(
          `Your level on ${panel.context.path} is ${perms.level}: you may not ${refusedEdit ? 'change' : 'run'} it.`,
          { autoClose: 4000 }
        );
        return Promise.resolve(undefined);
      }
    }
    return execute(id, args);
  };
}

export default plugin;
