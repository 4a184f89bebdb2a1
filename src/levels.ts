// How each access level reads in the UI. The levels themselves are the
// server's (jupyter_warden/policy/levels.py); only their wording is here.
export const LEVELS = ['read', 'read-run', 'read-write', 'read-write-run', 'manage'];
export const LINK_LEVELS = ['read', 'read-run'];

/** What kind of document a notice speaks of: a notebook runs, a file doesn't. */
export type DocumentKind = 'notebook' | 'file';

const BADGES: Record<string, string> = {
  none: 'No access',
  read: 'Read only',
  'read-run': 'Read + run',
  'read-write': 'Can edit',
  'read-write-run': 'Can edit + run',
  manage: 'Manage'
};

const NOTICES: Record<DocumentKind, Record<string, string>> = {
  notebook: {
    none: 'You no longer have access to this document.',
    read: 'Read only: you can read this notebook, but not edit or run it.',
    'read-run': 'Run only: you can run its cells, but not edit them. Your outputs are yours alone.',
    'read-write': 'You can edit this notebook, but not run code in it.'
  },
  file: {
    none: 'You no longer have access to this document.',
    read: 'Read only: you can read this file, but not change it.',
    'read-run': 'Read only: you can read this file, but not change it.'
  }
};

export function badgeText(level: string): string {
  return BADGES[level] ?? level;
}

/** A sentence for the notice above the document; '' when nothing is held back. */
export function noticeText(level: string, kind: DocumentKind = 'notebook'): string {
  return NOTICES[kind][level] ?? '';
}
