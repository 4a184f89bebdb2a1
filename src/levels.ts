// How each access level reads in the UI. The levels themselves are the
// server's (jupyter_warden/policy/levels.py); only their wording is here.
export const LEVELS = ['read', 'read-run', 'read-write', 'read-write-run', 'manage'];
export const LINK_LEVELS = ['read', 'read-run'];

const WORDING: Record<string, { badge: string; says: string }> = {
  none: { badge: 'No access', says: 'You no longer have access to this document.' },
  read: {
    badge: 'Read only',
    says: 'Read only: you can read this notebook, but not edit or run it.'
  },
  'read-run': {
    badge: 'Read + run',
    says: 'Run only: you can run its cells, but not edit them. Your outputs are yours alone.'
  },
  'read-write': {
    badge: 'Can edit',
    says: 'You can edit this notebook, but not run code in it.'
  },
  'read-write-run': { badge: 'Can edit + run', says: '' },
  manage: { badge: 'Manage', says: '' }
};

export function badgeText(level: string): string {
  return WORDING[level]?.badge ?? level;
}

/** A sentence for the notice above the notebook; '' when nothing is held back. */
export function noticeText(level: string): string {
  return WORDING[level]?.says ?? '';
}
