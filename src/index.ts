// jupyter-warden's JupyterLab extension: the access state of notebooks and
// text files, sealed cells as cards, the share dialog (toolbars and file
// browser menu), the audit view, the secrets panel, and a guard that keeps
// editing and run commands off documents the user may not change or run.
// The server enforces all of it; this shows it.
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
import { WardenEditorExtension } from './editor';
import { documentPermissions, WardenNotebookExtension } from './notebook';
import { guardSealedDrops, sealedRefusal, settleSealedRuns } from './sealed';
import { SecretsPanel } from './secrets';
import { openShareDialog } from './share';
import { AccessFeed, PermissionWatcher } from './watcher';

const COMMANDS = { share: 'warden:share', audit: 'warden:audit', secrets: 'warden:secrets' };

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
  description: 'Access levels, labels, sealed cells, sharing, secrets and the audit log of jupyter-warden.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [IDefaultFileBrowser, ICommandPalette, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    browser: IDefaultFileBrowser | null,
    palette: ICommandPalette | null
  ) => {
    const feed = new AccessFeed(app.serviceManager.events ?? null);
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
    app.docRegistry.addWidgetExtension('Notebook', new WardenNotebookExtension({ share, audit: openAudit }, feed));
    app.docRegistry.addWidgetExtension('Editor', new WardenEditorExtension(share, feed));

    const secrets = new SecretsPanel();
    app.shell.add(secrets, 'left', { rank: 600 });

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
        return !!panel && can(documentPermissions.get(panel) ?? null, 'manage');
      },
      execute: args => {
        const path = targetPath(args);
        if (path !== null) {
          openAudit(path);
        }
      }
    });
    app.commands.addCommand(COMMANDS.secrets, {
      label: 'Secrets',
      caption: 'Your secrets and those granted to you',
      execute: () => app.shell.activateById(secrets.id)
    });
    app.contextMenu.addItem({
      command: COMMANDS.share,
      args: { origin: 'filebrowser' },
      selector: '.jp-DirListing-item[data-isdir]',
      rank: 4
    });
    palette?.addItem({ command: COMMANDS.share, category: 'Sharing' });
    palette?.addItem({ command: COMMANDS.audit, category: 'Sharing' });
    palette?.addItem({ command: COMMANDS.secrets, category: 'Sharing' });

    guardCommands(app, tracker);
    guardSealedDrops();
    settleSealedRuns();
  }
};

/**
 * Keyboard shortcuts, menus and toolbar buttons all go through the command
 * registry; refuse there the commands the user's level doesn't allow on the
 * current document, and those that would copy or change a sealed cell, and say why.
 */
function guardCommands(app: JupyterFrontEnd, tracker: INotebookTracker): void {
  const commands = app.commands;
  const execute = commands.execute.bind(commands);
  const refused = (why: string) => {
    Notification.warning(why, { autoClose: 4000 });
    return Promise.resolve(undefined);
  };
  commands.execute = (id: string, args?: any) => {
    const panel: NotebookPanel | null = tracker.currentWidget;
    const current = app.shell.currentWidget;
    if (id.startsWith('docmanager:') && current && current !== panel) {
      // A text file (or another document) in front: its own level decides.
      const perms = documentPermissions.get(current);
      if (perms && !can(perms, 'write') && EDITING.some(re => re.test(id))) {
        return refused(`Your level on ${perms.path} is ${perms.level}: you may not change it.`);
      }
      return execute(id, args);
    }
    const perms = panel ? documentPermissions.get(panel) : undefined;
    if (panel && perms) {
      const appliesHere = id.startsWith('docmanager:') ? current === panel : true;
      const refusedEdit = !can(perms, 'write') && EDITING.some(re => re.test(id));
      const refusedRun = !can(perms, 'run') && RUNNING.some(re => re.test(id));
      if (appliesHere && (refusedEdit || refusedRun)) {
        return refused(
          `Your level on ${panel.context.path} is ${perms.level}: you may not ${refusedEdit ? 'change' : 'run'} it.`
        );
      }
    }
    if (panel && id.startsWith('notebook:')) {
      const why = sealedRefusal(id, panel.content);
      if (why === null) {
        return Promise.resolve(undefined);
      }
      if (why) {
        return refused(why);
      }
    }
    return execute(id, args);
  };
}

export default plugin;
