// The per-notebook audit view: who opened, edited, ran and shared it, from
// GET /api/warden/audit (managers of the path and admins only).
import { MainAreaWidget, ToolbarButton } from '@jupyterlab/apputils';
import { refreshIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { api } from './api';
import { h, when } from './dom';

export class AuditView extends Widget {
  constructor(readonly path: string) {
    super();
    this.addClass('jp-warden-audit');
  }

  async refresh(): Promise<void> {
    let records;
    try {
      records = await api.audit(this.path);
    } catch (e) {
      this.node.replaceChildren(h('p', { className: 'jp-warden-error' }, (e as Error).message));
      return;
    }
    const rows = records
      .slice()
      .reverse()
      .map(r =>
        h(
          'tr',
          { className: `jp-warden-outcome-${r.outcome}`, 'data-action': r.action },
          h('td', {}, when(r.time)),
          h('td', {}, r.actor),
          h('td', {}, r.action),
          h('td', {}, r.outcome),
          h('td', {}, r.path ?? ''),
          h('td', {}, [r.reason, r.details ? JSON.stringify(r.details) : ''].filter(Boolean).join(' '))
        )
      );
    this.node.replaceChildren(
      h('h2', {}, `Audit log of ${this.path || '/'}`),
      h('p', {}, 'Newest first. Only records of paths you manage are shown.'),
      rows.length
        ? h(
            'table',
            {},
            h(
              'thead',
              {},
              h('tr', {}, ...['When', 'Who', 'Action', 'Outcome', 'Path', 'Details'].map(t => h('th', {}, t)))
            ),
            h('tbody', {}, ...rows)
          )
        : h('p', {}, 'No records yet.')
    );
  }
}

export function createAuditWidget(path: string): MainAreaWidget<AuditView> {
  const content = new AuditView(path);
  const widget = new MainAreaWidget({ content });
  widget.id = `jp-warden-audit-${path}`;
  widget.title.label = `Audit: ${path.split('/').pop() || '/'}`;
  widget.title.closable = true;
  widget.toolbar.addItem(
    'refresh',
    new ToolbarButton({ icon: refreshIcon, tooltip: 'Refresh', onClick: () => void content.refresh() })
  );
  void content.refresh();
  return widget;
}
