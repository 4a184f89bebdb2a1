// A text file opened in JupyterLab's editor gets the same access state as a
// notebook: the level badge, the labels' banners, a notice, and an editor
// that is read-only without write. (The server refuses the save regardless.)
import { ToolbarButton } from '@jupyterlab/apputils';
import { CodeEditor } from '@jupyterlab/codeeditor';
import { DocumentRegistry, DocumentWidget } from '@jupyterlab/docregistry';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';
import { Widget } from '@lumino/widgets';

import { can, IPermissions } from './api';
import { documentPermissions } from './notebook';
import { createBadge, createHeader, showBadge, showHeader } from './status';
import { AccessFeed, PermissionWatcher } from './watcher';

/** What a file editor document holds: JupyterLab's FileEditor has its CodeEditor as `editor`. */
type EditorWidget = DocumentWidget<Widget & { editor: CodeEditor.IEditor }>;

export class WardenEditorExtension implements DocumentRegistry.WidgetExtension {
  constructor(
    private readonly share: (path: string, watcher: PermissionWatcher) => void,
    private readonly feed: AccessFeed | null
  ) {}

  createNew(widget: EditorWidget, context: DocumentRegistry.Context): IDisposable {
    const watcher = new PermissionWatcher(() => context.path, this.feed);
    const badge = createBadge();
    widget.toolbar.insertItem(0, 'warden-access', badge);
    const share = new ToolbarButton({
      className: 'jp-warden-share-button',
      label: 'Share',
      tooltip: 'Who has access, share links and labels',
      onClick: () => this.share(context.path, watcher)
    });
    widget.toolbar.insertAfter('warden-access', 'warden-share', share);
    const header = createHeader();
    widget.contentHeader.addWidget(header);
    // Read-only until the server has answered.
    widget.content.editor?.setOption('readOnly', true);

    watcher.changed.connect((_, perms: IPermissions) => {
      const writable = can(perms, 'write');
      documentPermissions.set(widget, perms);
      showBadge(badge, perms);
      showHeader(header, perms, 'file');
      widget.content.editor?.setOption('readOnly', !writable);
      widget.toggleClass('jp-warden-readonly', !writable);
      widget.node.dataset.wardenLevel = perms.level;
    });
    return new DisposableDelegate(() => {
      watcher.dispose();
      badge.dispose();
      share.dispose();
      header.dispose();
    });
  }
}
