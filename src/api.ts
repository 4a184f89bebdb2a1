// The warden's REST API (/api/warden/*) as the extension uses it; see docs/http-api.md.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export type Capability = 'read' | 'run' | 'write' | 'manage';

export interface IGrant {
  id: number;
  path: string;
  subject: string;
  level: string;
  not_before: string | null;
  not_after: string | null;
  inherited?: boolean;
}

export interface ILabel {
  name: string;
  banner: string | null;
  colour: string | null;
  no_links: boolean;
  only_groups: string[];
  path?: string | null;
}

export interface IPermissions {
  path: string;
  user: { name: string; admin: boolean; guest: boolean };
  capabilities: Capability[];
  level: string;
  reason: string;
  grants: IGrant[];
  labels: ILabel[];
}

export interface ILink {
  id: string;
  path: string;
  level: string;
  state: string;
  expires_at: string | null;
  revoked_at: string | null;
  created_by: string;
  created: string;
  token?: string;
  url?: string;
}

export interface IAuditRecord {
  seq: number;
  time: string;
  actor: string;
  action: string;
  path: string | null;
  outcome: string;
  reason: string | null;
  details: Record<string, unknown> | null;
}

/** A secret as the vault shows it: never its value (docs/secrets.md). */
export interface ISecret {
  name: string;
  owner: string;
  /** Who it is granted to; null when it is only granted to you. */
  grants: string[] | null;
  created_by: string | null;
  created: string;
  updated: string;
  /** You may replace, grant or delete it (its owner, a member of the owning group, an admin). */
  manageable: boolean;
}

export interface IPrincipals {
  users: { name: string; display_name: string }[];
  groups: { name: string }[];
}

/** A refused or failed request; `message` is the server's sentence. */
/** Why a kernel ended without its user asking (GET /api/warden/kernels/ID/exit). */
export interface IKernelExit {
  kernel: string;
  cause: string;
  message: string;
  exit_code: number | null;
  at: string;
}

export class WardenError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

const settings = ServerConnection.makeSettings();

export async function request<T>(
  endpoint: string,
  query: Record<string, string | number | undefined> = {},
  init: RequestInit = {}
): Promise<T> {
  const params = Object.entries(query)
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
    .join('&');
  const url =
    URLExt.join(settings.baseUrl, 'api/warden', endpoint) + (params ? `?${params}` : '');
  const response = await ServerConnection.makeRequest(url, init, settings);
  if (response.status === 204) {
    return undefined as T;
  }
  let body: any = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message =
      body?.message || body?.reason || `${response.status} ${response.statusText}`;
    throw new WardenError(response.status, message);
  }
  return body as T;
}

function send<T>(method: string, endpoint: string, body: unknown): Promise<T> {
  return request<T>(endpoint, {}, { method, body: JSON.stringify(body) });
}

export const api = {
  permissions: (path: string) => request<IPermissions>('permissions', { path }),
  grants: (path: string) =>
    request<{ grants: IGrant[] }>('grants', { path }).then(r => r.grants),
  grant: (body: {
    path: string;
    subject: string;
    level: string;
    not_before?: string;
    not_after?: string;
  }) => send<IGrant>('POST', 'grants', body),
  revoke: (path: string, subject: string) =>
    request<void>('grants', { path, subject }, { method: 'DELETE' }),
  principals: (path: string, q: string) => request<IPrincipals>('principals', { path, q }),
  links: (path: string) => request<{ links: ILink[] }>('links', { path }).then(r => r.links),
  createLink: (body: { path: string; level: string; expires?: string }) =>
    send<ILink>('POST', 'links', body),
  revokeLink: (id: string) =>
    request<void>(`links/${encodeURIComponent(id)}`, {}, { method: 'DELETE' }),
  labels: () => request<{ labels: ILabel[] }>('labels').then(r => r.labels),
  setLabel: (path: string, label: string) =>
    send<ILabel>('POST', 'path-labels', { path, label }),
  removeLabel: (path: string, label: string) =>
    request<void>('path-labels', { path, label }, { method: 'DELETE' }),
  secrets: () => request<{ secrets: ISecret[] }>('secrets').then(r => r.secrets),
  setSecret: (name: string, value: string, owner?: string) =>
    send<ISecret>('PUT', `secrets/${encodeURIComponent(name)}`, owner ? { value, owner } : { value }),
  removeSecret: (name: string) =>
    request<void>(`secrets/${encodeURIComponent(name)}`, {}, { method: 'DELETE' }),
  grantSecret: (name: string, subject: string) =>
    send<ISecret>('POST', `secrets/${encodeURIComponent(name)}/grants`, { subject }),
  revokeSecret: (name: string, subject: string) =>
    request<void>(`secrets/${encodeURIComponent(name)}/grants`, { subject }, { method: 'DELETE' }),
  /** Why a kernel ended; null when it ended as asked (shutdown, restart) or is not the user's. */
  kernelExit: (id: string) =>
    request<IKernelExit>(`kernels/${encodeURIComponent(id)}/exit`).catch(e => {
      if (e instanceof WardenError && e.status === 404) {
        return null;
      }
      throw e;
    }),
  audit: (path: string, limit = 200) =>
    request<{ records: IAuditRecord[] }>('audit', { path, limit }).then(r => r.records)
};

/** Whether a permissions answer grants a capability. */
export function can(perms: IPermissions | null, capability: Capability): boolean {
  return !!perms && perms.capabilities.includes(capability);
}
