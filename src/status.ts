// A document's access state, always visible: the level badge in its toolbar,
// and above its content the labels' banners and a notice of what is held back.
import { Widget } from '@lumino/widgets';

import { IPermissions } from './api';
import { badgeText, DocumentKind, noticeText } from './levels';

export function createBadge(): Widget {
  const badge = new Widget({ node: document.createElement('span') });
  badge.addClass('jp-warden-badge');
  badge.node.textContent = '…';
  return badge;
}

export function showBadge(badge: Widget, perms: IPermissions): void {
  badge.node.textContent = badgeText(perms.level);
  badge.node.dataset.level = perms.level;
  badge.node.title = `Your level here: ${perms.level}. ${perms.reason}`;
}

export function createHeader(): Widget {
  const header = new Widget();
  header.addClass('jp-warden-header');
  return header;
}

export function showHeader(header: Widget, perms: IPermissions, kind: DocumentKind): void {
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
  const says = noticeText(perms.level, kind);
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
